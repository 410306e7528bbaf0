package privacytest

import (
	"fmt"
	"strings"

	"github.com/runops/runops/internal/mediatest"
)

// New generates the corpus of seed (the same seed, the same corpus): a
// 720p recording of six screens (a billing page, a sign-in form with the
// password shown, an API-keys page, an AWS credentials file in a dark
// editor, a PEM key in an editor, an API client showing a Bearer header
// and a customer's record) and a 1080p recording of five (a dark terminal
// with a wrapped Supabase service-role key, a Bearer header and a
// database URL; a dark terminal printing a .env file; a settings page; an
// OpenSSH key and an npm token in an editor; a customer's page in a CRM).
func New(seed uint64) Corpus {
	g := newGen(seed)
	people := g.r.Perm(len(names))
	person := func(i int) string { return names[people[i]] }
	small := Recording{Name: "720p", Width: 1280, Height: 720, Screens: pages{
		billing(g, person(0)),
		signin(g, person(0)),
		apiKeys(g),
		awsCredentials(g),
		pemKey(g),
		apiClient(g, person(1)),
	}.screens()}
	ref := g.supabaseRef()
	large := Recording{Name: "1080p", Width: 1920, Height: 1080, Screens: pages{
		terminal(g, ref),
		dotenv(g, ref),
		settings(g, person(2), person(3)),
		sshKey(g),
		customer(g, person(4)),
	}.screens()}
	return Corpus{Recordings: []Recording{small, large}}
}

type pages []*page

// screens are the pages' screens, each given its second.
func (ps pages) screens() []Screen {
	var out []Screen
	for i, p := range ps {
		p.s.Second = i*ScreenSeconds + 1
		out = append(out, p.s)
	}
	return out
}

// columns is how many characters of Mono at size a terminal width pixels
// wide holds in a row.
func columns(width, size int) int {
	return width / mediatest.TextWidth(mediatest.Mono, size, "M")
}

// terminal returns a function that draws its parts on the next rows of a
// terminal as wide as the page, in Mono at 22 pixels, 24 in from the edges.
func (p *page) terminal() func(parts ...any) {
	size, x, y := 22, 24, 24
	cols := columns(p.s.Width-2*x, size)
	return func(parts ...any) { y += p.term(x, y, size, cols, parts...) * lineHeight(size) }
}

// form returns a function that draws a form's row at y: its label at
// labelX and its value at valueX, in the page's font at size.
func (p *page) form(labelX, valueX, size int) func(y int, label string, value ...any) {
	return func(y int, label string, value ...any) {
		p.line(labelX, y, size, label)
		p.line(valueX, y, size, value...)
	}
}

// prompt is a shell's prompt on the terminal screens.
const prompt = "ops@build-01:~/runops$ "

func (g *gen) date() string {
	return fmt.Sprintf("%d %s %d", 1+g.r.IntN(28), g.pick("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Sep", "Oct", "Nov"), 2023+g.r.IntN(2))
}

func addressOf(lines []string) Value { return val("address", strings.Join(lines, "\n")) }

// billing: a SaaS billing page, light, 720p.
func billing(g *gen, name string) *page {
	p := newPage("billing", "Update the payment method", 1280, 720, mediatest.Light, mediatest.Sans)
	p.line(40, 22, 20, "Acme Console      Dashboard      Billing      Team      Settings      Help")
	p.rule(0, 60, 1280, 2)
	p.line(40, 84, 34, "Billing")
	p.line(40, 146, 22, "Payment method")
	p.line(60, 186, 22, "Card number    ", val("card", g.card('4')), "    Expires 08/28")
	p.line(60, 224, 22, "Cardholder    ", val("name", name))
	p.line(60, 262, 22, "Billing email    ", val("email", email(name, "billing", "acme-corp.com")))
	p.line(60, 300, 22, "Phone    ", val("phone", g.phone("FR")))
	p.line(40, 348, 22, "Billing address")
	p.block(60, 386, 22, addressOf(g.address("FR")), 0, 0, street)
	p.line(40, 500, 22, "SEPA Direct Debit")
	p.line(60, 540, 22, "IBAN    ", val("iban", g.iban("DE")), "    Mandate active since March 2024")
	p.rule(40, 596, 1200, 1)
	p.line(40, 620, 22, "Update payment method          Download invoices          Cancel subscription")
	return p
}

// signin: a sign-in form with the password shown, light, 720p.
func signin(g *gen, name string) *page {
	p := newPage("signin", "Sign in to the console", 1280, 720, mediatest.Light, mediatest.Sans)
	p.line(430, 60, 32, "Sign in to Acme Console")
	p.line(430, 120, 20, "Welcome back. Use your work account to continue.")
	p.line(430, 180, 20, "Email")
	p.frame(420, 214, 460, 52)
	p.line(436, 228, 22, val("email", email(name, "ops", "acme-corp.com")))
	p.line(430, 292, 20, "Password")
	p.frame(420, 326, 460, 52)
	p.line(436, 340, 22, val("password", g.password(16)))
	p.line(810, 342, 20, "Hide")
	p.line(430, 404, 20, "Keep me signed in on this device")
	p.rule(420, 452, 460, 52)
	p.line(608, 466, 22, "Sign in")
	p.line(430, 540, 20, "Forgot your password?")
	p.line(430, 580, 20, "New to Acme? Create an account")
	return p
}

// apiKeys: a developer settings page listing keys (Name | Key | Created),
// light, 720p.
func apiKeys(g *gen) *page {
	p := newPage("apikeys", "Copy the production keys", 1280, 720, mediatest.Light, mediatest.Sans)
	p.line(40, 22, 20, "Acme Console      Dashboard      Developers      Billing      Settings")
	p.rule(0, 60, 1280, 2)
	p.line(40, 84, 32, "API keys")
	p.line(40, 140, 20, "Keys give full access to your account. Keep them secret and rotate them often.")
	p.line(40, 200, 20, "Name")
	p.line(330, 200, 20, "Key")
	p.line(1060, 200, 20, "Created")
	p.rule(40, 234, 1200, 2)
	rows := []struct {
		name string
		key  Value
	}{
		{"Production", val("stripe", g.stripe(false))},
		{"Reporting", val("stripe", g.stripe(true))},
		{"Maps widget", val("google", g.google())},
		{"Package publishing", val("npm", g.npm())},
		{"Deploy bot", val("github", g.github())},
		{"Mirror sync", val("gitlab", g.gitlab())},
	}
	for i, r := range rows {
		y := 254 + i*56
		p.line(40, y, 20, r.name)
		p.line(330, y, 20, r.key)
		p.line(1060, y, 20, g.date())
	}
	return p
}

// awsCredentials: ~/.aws/credentials in nano, dark, 720p.
func awsCredentials(g *gen) *page {
	p := newPage("aws", "Set up the AWS credentials", 1280, 720, mediatest.Dark, mediatest.Mono)
	p.line(20, 16, 20, "  GNU nano 7.2                 /home/ops/.aws/credentials")
	lines := [][]any{
		{"[default]"},
		{"aws_access_key_id = ", val("aws_id", g.awsID())},
		{"aws_secret_access_key = ", val("aws_secret", g.awsSecret())},
		{"region = eu-west-1"},
		{},
		{"[staging]"},
		{"aws_access_key_id = ", val("aws_id", g.awsID())},
		{"aws_secret_access_key = ", val("aws_secret", g.awsSecret())},
		{"region = us-east-1"},
		{"output = json"},
	}
	for i, l := range lines {
		if len(l) > 0 {
			p.line(20, 70+i*36, 20, l...)
		}
	}
	p.line(20, 630, 20, "^G Help     ^O Write Out   ^W Where Is    ^K Cut        ^T Execute")
	p.line(20, 666, 20, "^X Exit     ^R Read File   ^\\ Replace     ^U Paste      ^J Justify")
	return p
}

// pemKey: a deploy key (PKCS #1 PEM) open in an editor, light, 720p.
func pemKey(g *gen) *page {
	p := newPage("pem", "Open the deploy key", 1280, 720, mediatest.Light, mediatest.Mono)
	p.sans(20, 12, 18, "File    Edit    Selection    View    Run    Terminal    Help")
	p.sans(20, 60, 18, "EXPLORER")
	p.sans(20, 100, 18, "INFRA")
	p.sans(36, 136, 18, "deploy")
	p.sans(36, 172, 18, "terraform")
	p.sans(36, 208, 18, "modules")
	p.sans(300, 60, 18, "deploy_key.pem        main.tf        variables.tf")
	p.rule(280, 92, 1000, 1)
	p.block(340, 104, 18, val("pem", g.rsaKey()), 290, 1, keyBody)
	p.sans(300, 690, 18, "Ln 1, Col 1      Spaces: 4      UTF-8      LF      Plain Text")
	return p
}

// apiClient: a request with an Authorization header and its response (a
// customer's record), light, 720p.
func apiClient(g *gen, name string) *page {
	p := newPage("apiclient", "Call the customers API", 1280, 720, mediatest.Light, mediatest.Sans)
	p.line(40, 20, 20, "Workspace      Collections      Environments      History")
	p.rule(0, 58, 1280, 2)
	p.line(40, 80, 20, "GET      https://api.northwind.io/v2/customers/cus_8842")
	p.line(40, 128, 20, "Params      Authorization      Headers (3)      Body      Scripts      Settings")
	p.rule(40, 164, 1200, 1)
	row := p.form(40, 330, 20)
	row(180, "Key", "Value")
	row(218, "Authorization", "Bearer ", val("bearer", g.bearer()))
	row(256, "Accept", "application/json")
	row(294, "Cache-Control", "no-cache")
	p.rule(40, 338, 1200, 1)
	p.line(40, 356, 20, "Response      200 OK      142 ms      1.2 KB")
	body := [][]any{
		{"{"},
		{`  "id": "cus_8842",`},
		{`  "name": "`, val("name", name), `",`},
		{`  "email": "`, val("email", email(name, "", "northwind.io")), `",`},
		{`  "phone": "`, val("phone", g.phone("US")), `",`},
		{`  "status": "active",`},
		{`  "plan": "business"`},
		{"}"},
	}
	for i, l := range body {
		p.mono(40, 400+i*36, 20, l...)
	}
	return p
}

// terminal: a dark terminal, 1080p: a service-role key exported (the
// terminal wraps it), a curl with a Bearer header, psql with a database
// URL and its password.
func terminal(g *gen, ref string) *page {
	p := newPage("terminal", "Connect to the production database", 1920, 1080, mediatest.Dark, mediatest.Mono)
	term := p.terminal()
	term(prompt, "export SUPABASE_SERVICE_ROLE_KEY=", val("supabase_jwt", g.supabaseServiceKey(ref, g.str(base64ch, 40))))
	term(prompt, `curl -s -H "Authorization: Bearer `, val("bearer", g.bearer()), `" https://api.acme-corp.com/v1/orders?limit=5`)
	term(`{"object":"list","data":[],"has_more":false,"url":"/v1/orders"}`)
	term(prompt, `psql "postgresql://postgres.`+ref+":", val("db_url", g.str(alnum, 20)), `@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"`)
	for _, l := range []string{
		"psql (16.4 (Debian 16.4-1.pgdg120+1), server 15.6)",
		"SSL connection (protocol: TLSv1.3, cipher: TLS_AES_256_GCM_SHA384, compression: off)",
		`Type "help" for help.`,
		"",
		"postgres=> select status, count(*) from jobs group by status;",
		"  status   | count",
		"-----------+-------",
		" completed |  1284",
		" queued    |    12",
		"(2 rows)",
		"",
		"postgres=> \\q",
		prompt + "echo done, closing the session",
		"done, closing the session",
	} {
		term(l)
	}
	return p
}

// dotenv: a dark terminal printing a .env file, 1080p; the OpenAI key is
// longer than the terminal is wide.
func dotenv(g *gen, ref string) *page {
	p := newPage("dotenv", "Check the environment file", 1920, 1080, mediatest.Dark, mediatest.Mono)
	term := p.terminal()
	term(prompt, "cat .env")
	term("# Production settings for the orders service. Do not commit this file.")
	term("NODE_ENV=production")
	term("LOG_LEVEL=info")
	term("SUPABASE_URL=https://" + ref + ".supabase.co")
	term("DATABASE_URL=postgresql://orders_rw:", val("db_url", g.str(alnum, 20)), "@db.acme-corp.internal:5432/orders")
	term("DB_PASSWORD=", val("password", g.str(alnum, 24)))
	term("STRIPE_SECRET_KEY=", val("stripe", g.stripe(false)))
	term("OPENAI_API_KEY=", val("openai", g.openai()))
	term("ANTHROPIC_API_KEY=", val("anthropic", g.anthropic()))
	term("SENDGRID_API_KEY=", val("sendgrid", g.sendgrid()))
	term("SLACK_BOT_TOKEN=", val("slack", g.slack()))
	term("TWILIO_ACCOUNT_SID=", val("twilio", g.twilio(true)))
	term("TWILIO_API_KEY=", val("twilio", g.twilio(false)))
	term("PYPI_TOKEN=", val("pypi", g.pypi()))
	term("GITHUB_TOKEN=", val("github", g.githubFine()))
	term("# Feature flags")
	term("ENABLE_NEW_CHECKOUT=true")
	term(prompt, "source .env && npm run start")
	term("> orders@2.4.1 start")
	term("> node server.js")
	term("Server listening on port 8080")
	return p
}

// settings: a profile and team settings page, light, 1080p.
func settings(g *gen, name, colleague string) *page {
	p := newPage("settings", "Review the profile settings", 1920, 1080, mediatest.Light, mediatest.Sans)
	p.line(60, 28, 24, "Northwind       Overview       Shipments       Customers       Reports       Settings")
	p.rule(0, 76, 1920, 2)
	p.line(60, 110, 40, "Settings")
	p.line(60, 184, 24, "Profile       Team       Notifications       Security       Integrations")
	p.rule(60, 226, 1800, 1)
	p.line(60, 256, 30, "Profile")
	row := p.form(60, 360, 26)
	row(320, "Full name", val("name", name))
	row(372, "Email", val("email", email(name, "", "northwind.io")))
	row(424, "Phone", val("phone", g.phone("ES")))
	p.line(60, 476, 26, "Office address")
	p.block(360, 476, 26, addressOf(g.address("ES")), 0, 0, street)
	row(620, "Language", "English (United Kingdom)")
	row(672, "Time zone", "Europe/Madrid (UTC+01:00)")
	p.line(1100, 256, 30, "Team members")
	p.line(1100, 320, 26, val("name", colleague))
	p.line(1100, 364, 26, val("email", email(colleague, "", "northwind.io")))
	p.line(1100, 408, 26, "Admin, joined January 2023")
	p.line(1100, 476, 26, "Invite people to collaborate on shipments.")
	p.rule(60, 760, 1800, 1)
	p.line(60, 800, 26, "Save changes              Cancel")
	p.line(60, 870, 26, "Changes apply to every workspace you belong to.")
	p.line(60, 940, 26, "Delete workspace")
	return p
}

// sshKey: an OpenSSH private key and an .npmrc with a token in an editor,
// light, 1080p.
func sshKey(g *gen) *page {
	p := newPage("sshkey", "Install the deploy key", 1920, 1080, mediatest.Light, mediatest.Mono)
	p.sans(24, 16, 22, "File    Edit    Selection    View    Run    Terminal    Help")
	p.sans(90, 64, 22, "id_ed25519        .npmrc        known_hosts")
	p.rule(0, 104, 1920, 1)
	y := p.block(90, 130, 24, val("openssh", g.opensshKey("ops@build-01")), 24, 1, keyBody)
	p.rule(0, y+20, 1920, 1)
	p.sans(90, y+44, 22, "Terminal output: the key is loaded into the agent")
	p.sans(90, y+100, 22, ".npmrc")
	p.line(90, y+150, 24, "//registry.npmjs.org/:_authToken=", val("npm", g.npm()))
	p.line(90, y+186, 24, "registry=https://registry.npmjs.org/")
	p.line(90, y+222, 24, "always-auth=true")
	p.sans(24, 1030, 22, "Ln 1, Col 1      Spaces: 2      UTF-8      LF      Plain Text")
	return p
}

// customer: a customer's page in a CRM (contact, payment methods,
// notes), light, 1080p.
func customer(g *gen, name string) *page {
	p := newPage("customer", "Check the customer's payment details", 1920, 1080, mediatest.Light, mediatest.Sans)
	p.line(60, 28, 24, "Northwind CRM       Customers       Deals       Invoices       Reports")
	p.rule(0, 76, 1920, 2)
	p.line(60, 104, 24, "Customers  /  Customer profile")
	p.line(60, 150, 40, val("name", name))
	p.line(60, 214, 24, "Customer since March 2021, Enterprise plan")
	p.line(60, 290, 30, "Contact")
	row := p.form(60, 300, 26)
	row(350, "Email", val("email", email(name, "", "harbourline.co.uk")))
	row(402, "Phone", val("phone", g.phone("GB")))
	p.line(60, 454, 26, "Address")
	p.block(300, 454, 26, addressOf(g.address("GB")), 0, 0, street)
	p.rule(60, 600, 1800, 1)
	p.line(60, 630, 30, "Payment methods")
	row(690, "Mastercard", val("card", g.card('5')), "      Expires 11/27")
	row(742, "Bank account", val("iban", g.iban("GB")))
	row(794, "Bank account", val("iban", g.iban("FR")))
	p.rule(60, 860, 1800, 1)
	p.line(60, 890, 30, "Notes")
	p.line(60, 950, 26, "Prefers email over phone calls. Invoices are sent on the first working day of the month.")
	p.line(60, 1000, 26, "Renewal due in October: check the discount before sending the quote.")
	return p
}
