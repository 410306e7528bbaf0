package privacy_test

import (
	"image"
	"slices"
	"strings"
	"testing"

	"github.com/runops/runops/internal/ocr"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

// Geometry of the pages these tests read: a monospace screen of cell×line
// pixels a character.
const (
	cell = 10
	line = 20
)

// page is what OCR reads on a screen whose rows are given: each row a line
// of words, at its column (leading spaces) and row, in cells.
func page(rows ...string) []ocr.Line {
	var out []ocr.Line
	for y, row := range rows {
		l := ocr.Line{}
		col := 0
		for _, f := range strings.SplitAfter(row, " ") {
			w := strings.TrimSpace(f)
			if w != "" {
				if l.Text != "" {
					l.Text += " "
				}
				l.Starts = append(l.Starts, len(l.Text))
				l.Text += w
				l.Words = append(l.Words, ocr.Word{Text: w, Box: image.Rect(col*cell, y*line, (col+len(w))*cell, y*line+line-4)})
			}
			col += len(f)
		}
		if len(l.Words) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// covered lists the words of lines whose boxes are among boxes.
func covered(lines []ocr.Line, boxes []image.Rectangle) []string {
	var out []string
	for _, l := range lines {
		for _, w := range l.Words {
			if slices.Contains(boxes, w.Box) {
				out = append(out, w.Text)
			}
		}
	}
	return out
}

// wrap cuts s into rows of width characters, as a terminal does.
func wrap(s string, width int) []string {
	var rows []string
	for len(s) > width {
		rows = append(rows, s[:width])
		s = s[width:]
	}
	return append(rows, s)
}

// A key a terminal wrapped at its right edge is one value: the rules find
// it joined, every part of it is covered, and a model that repeats only
// its second line leaks nothing of it.
func TestAWrappedKeyIsOneValue(t *testing.T) {
	t.Parallel()
	rows := append([]string{"$ cat .env.local", "NEXT_PUBLIC_URL=https://app.example.com"},
		wrap("export SUPABASE_SERVICE_ROLE_KEY="+jwt, 80)...)
	rows = append(rows, "$ npm run dev")
	lines := page(rows...)
	r := privacy.NewRedactor(detector(t), nil)
	s := r.ReadScreen(lines)
	got := covered(lines, r.Cover(s))
	want := strings.Fields(strings.Join(rows[2:len(rows)-1], " "))[1:] // not "export"
	if !slices.Equal(got, want) {
		t.Fatalf("covered %q\nwant %q", got, want)
	}
	second := rows[3]
	text := r.Text("It goes on with " + second + " on the next line.")
	if strings.Contains(text, second[:20]) || !strings.Contains(text, "{{TOKEN_1}}") {
		t.Fatalf("the second line of the key is in the text: %q", text)
	}
}

// A private key whose BEGIN line OCR misread, or which the screen cut off,
// is covered from its body: runs of long base64 lines.
func TestAPrivateKeyIsCoveredFromItsBody(t *testing.T) {
	t.Parallel()
	body := strings.Split(pemBody, "\n")
	for name, rows := range map[string][]string{
		"misread BEGIN": append(append([]string{"-----BEG1N RSA PRlVATE KEY-----"}, body...), "-----END RSA PRIVATE KEY-----"),
		"no BEGIN":      append([]string{"id_rsa (scrolled)"}, body...),
	} {
		lines := page(rows...)
		r := privacy.NewRedactor(detector(t), nil)
		got := covered(lines, r.Cover(r.ReadScreen(lines)))
		for _, b := range body {
			if !slices.Contains(got, b) {
				t.Errorf("%s: the body line %q is not covered (covered %q)", name, b, got)
			}
		}
		if slices.Contains(got, "(scrolled)") {
			t.Errorf("%s: covered %q", name, got)
		}
		// The model repeats one line of the body.
		if text := r.Text("the key starts " + body[1]); strings.Contains(text, body[1][:16]) {
			t.Errorf("%s: %q", name, text)
		}
	}
}

// A credentials file shows each secret under its name; a model that
// repeats the secret's value without its name leaks nothing.
func TestTheScreenVouchesForTheText(t *testing.T) {
	t.Parallel()
	lines := page("[default]", "aws_access_key_id = "+awsID, "aws_secret_access_key = "+awsSecret, "region = eu-west-1")
	r := privacy.NewRedactor(detector(t), nil)
	got := covered(lines, r.Cover(r.ReadScreen(lines)))
	if !slices.Equal(got, []string{awsID, awsSecret}) {
		t.Fatalf("covered %q", got)
	}
	// As the model wrote it: the OCR'd spelling differs by a confusable
	// character (l for I) and the value is split by a space.
	text := r.Text("Paste kLDr79nDVJd/uN7B3MAtQhDp8kF3 0NfqnZlVAvcx as the second value, region eu-west-1.")
	if text != "Paste {{TOKEN_1}} as the second value, region eu-west-1." {
		t.Fatalf("%q", text)
	}
}

// OCR puts spaces inside tokens and misreads characters: the rules find
// the token anyway, and a value the text had is covered where OCR read it
// a character off.
func TestOCRSpellingsAreRead(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	if text := r.Text("Use the key " + google + " for Maps."); text != "Use the key {{API_KEY_1}} for Maps." {
		t.Fatalf("%q", text)
	}
	misread := strings.Replace(google, "e20", "eZ0", 1)
	lines := page(
		"GitLab token glpat -"+glpat[len("glpat-"):],
		"Maps key "+misread,
		"Claude key sk- ant -api03-"+anthropic[len("sk-ant-api03-"):],
		"Settings Billing Members",
	)
	got := covered(lines, r.Cover(r.ReadScreen(lines)))
	want := []string{"glpat", "-" + glpat[len("glpat-"):], misread, "sk-", "ant", "-api03-" + anthropic[len("sk-ant-api03-"):]}
	if !slices.Equal(got, want) {
		t.Fatalf("covered %q\nwant %q", got, want)
	}
}

// Marks use boundaries of every script, any spacing and any case in the
// text; on a screenshot their words match with accents folded and a
// character off (OCR's "Nufiez"), never on an everyday word alone.
func TestMarksInAnyScript(t *testing.T) {
	t.Parallel()
	marks := []privacy.Mark{{Value: "Chloé Dupré", Kind: privacy.Name}, {Value: "Zoë", Kind: privacy.Name},
		{Value: "山田太郎", Kind: privacy.Name}, {Value: "José Núñez", Kind: privacy.Name}, {Value: "Jane Doe", Kind: privacy.Name},
		{Value: "The Code Shop", Kind: privacy.Name}, {Value: "Jan", Kind: privacy.Name}}
	r := privacy.NewRedactor(detector(t), marks)
	textsAre(t, r, [][2]string{
		{"Chloé Dupré signs, then Zoë.", "{{NAME_1}} signs, then {{NAME_2}}."},
		{"Send it to 山田太郎さん today", "Send it to {{NAME_3}}さん today"},
		{"Ask JOSÉ  NÚÑEZ, or Jose Nunez.", "Ask {{NAME_4}}, or {{NAME_4}}."},
		{"Jane\nDoe and jane doe", "{{NAME_5}} and {{NAME_5}}"},
		{"In January, Jan asked the code shop team.", "In January, {{NAME_6}} asked {{NAME_7}} team."},
		{"Zoëlle and Dupréz are someone else.", "Zoëlle and Dupréz are someone else."},
	})
	lines := page("Contact Jose Nufiez", "Owner: Chloe Dupre", "Open the code editor", "The Code Shop Ltd")
	got := covered(lines, r.Cover(r.ReadScreen(lines)))
	if !slices.Equal(got, []string{"Jose", "Nufiez", "Chloe", "Dupre", "The", "Code", "Shop"}) {
		t.Fatalf("covered %q", got)
	}
}

// On a screenshot, a mark's words never cover an everyday word one edit
// or one OCR confusion away (Dave/Save, Ali/all); a phone number is
// covered in any format; a surname written with a comma in the mark is
// found without it.
func TestMarksOnScreenLeaveEverydayWords(t *testing.T) {
	t.Parallel()
	marks := []privacy.Mark{{Value: "Dave Miller", Kind: privacy.Name}, {Value: "Kate Dana", Kind: privacy.Name},
		{Value: "Ali", Kind: privacy.Name}, {Value: "Wu, Jie", Kind: privacy.Name}, {Value: "+1 (415) 555-0132", Kind: privacy.Phone}}
	r := privacy.NewRedactor(detector(t), marks)
	lines := page("Owner: Dave Miller", "Cancel Save", "Start date Export data", "Customer: Ali", "Select all rows",
		"Assignee: Jie Wu", "Mobile: (415) 555-0132", "Call 415-555-0132 today")
	got := covered(lines, r.Cover(r.ReadScreen(lines)))
	want := []string{"Dave", "Miller", "Ali", "Jie", "Wu", "(415)", "555-0132", "415-555-0132"}
	if !slices.Equal(got, want) {
		t.Fatalf("covered %q\nwant %q", got, want)
	}
}

// A short value OCR read with a digraph for a letter ("rn" for m) is
// removed from the text as typed.
func TestAShortValueReadWithADigraph(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	r.ReadScreen(page("Password: Xy7kq2Lrn9"))
	if got := r.Text("Type Xy7kq2Lm9 in the field."); got != "Type {{PASSWORD_1}} in the field." {
		t.Fatalf("%q", got)
	}
}

// Each value below is a secret on a screen people record; a model that
// copies the line into the SOP's text must not keep it.
func TestSecretsOnScreensPeopleRecordLeaveNoText(t *testing.T) {
	t.Parallel()
	d := detector(t)
	for _, c := range []struct{ text, secret string }{
		// JSON as devtools, Postman, a config.json show it: the key quoted.
		{`Send {"email": "ops@acme-corp.com", "password": "Vq7#kP2m!xL9wR4z"} to /login`, "Vq7#kP2m!xL9wR4z"},
		{`{"username":"jane","password":"Summer2024!"}`, "Summer2024!"},
		{`{"api_key":"9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"}`, "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
		// JSON with escaped slashes (what JSON.stringify / PHP / a log shows).
		{`{"url":"postgres:\/\/admin:Hunter2Sup3r@db.internal:5432\/app"}`, "Hunter2Sup3r"},
		{`{"webhook":"https:\/\/hooks.slack.com\/services\/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"}`, "a1B2c3D4e5F6g7H8i9J0k1L2"},
		// aws configure's prompt, and the credentials CSV the console gives.
		{`AWS Secret Access Key [None]: kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx`, "kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx"},
		{"Access key ID,Secret access key\nAKIA5ALWAMOYMVYEWCLE,kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx", "kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx"},
		// A password that begins with "$", "%" or "<" is taken for a placeholder.
		{`DB_PASSWORD="$uperS3cret!2024"`, "$uperS3cret!2024"},
		{`Password: %Tr0ub4dor3`, "%Tr0ub4dor3"},
		// A password on a command line.
		{`docker login -u jane -p Hunter2Sup3r registry.example.com`, "Hunter2Sup3r"},
		{`sshpass -p Hunter2Sup3r ssh root@10.0.0.5`, "Hunter2Sup3r"},
		// A URL's credentials with no user (Redis).
		{`redis-cli -u redis://:Zx9pQr7Lm2Wq@redis.internal:6379/0`, "Zx9pQr7Lm2Wq"},
		// A 40-hex token after "Token" (Django REST framework, GitHub OAuth).
		{`Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b`, "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"},
		// Web.config / XML.
		{`<add key="StripeKey" value="Zk3mP9qL2vR8tY5wX1nB4cF7" />`, "Zk3mP9qL2vR8tY5wX1nB4cF7"},
		// The console's "Retrieve access keys" row, read as one line: the
		// key id and the secret with spaces between; sshpass with a quoted
		// password that holds a space.
		{"AKIA5ALWAMOYMVYEWCLE kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx Hide", "kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx"},
		{"sshpass -p 'Hunt3r 2pw' ssh deploy@host", "Hunt3r"},
		{"sshpass -p 'Hunt3r 2pw' ssh deploy@host", "2pw"},
		// What only looks like what a secret's name may describe: Azure's
		// "primary key" is the secret itself, not a table's key; a
		// passphrase of words joined is no "Read-Write"; a webhook's URL
		// under a secret's name is the secret.
		{"APIM_PRIMARY_KEY=3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9", "3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9"},
		{"SUBSCRIPTION_PRIMARY_KEY: 3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9", "3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9"},
		{"Secret: correct-horse-battery-staple", "correct-horse-battery-staple"},
		{"Credentials: correct-horse-battery-staple", "correct-horse-battery-staple"},
		{"SLACK_TOKEN=https://hooks.acme.io/services/Zx9pQr7Lm2WqKdF3hJ8sT1vB6nC4", "Zx9pQr7Lm2WqKdF3hJ8sT1vB6nC4"},
	} {
		r := privacy.NewRedactor(d, nil)
		if got := r.Text(c.text); strings.Contains(got, c.secret) {
			t.Errorf("kept %q:\n  %s", c.secret, got)
		}
	}
}

// A form's label of two words ("New password", "Client secret", "Secret
// access key") above its value, shown: the rule for a label on its own line
// knows one-word names only.
func TestATwoWordLabelAboveItsValueIsCovered(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ label, value, button string }{
		{"New password", "Vq7#kP2m!xL9wR4z", "Show"},
		{"Current password", "Vq7#kP2m!xL9wR4z", "Hide"},
		{"Secret access key", "kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx", "Hide"},
		{"Client secret", "Zk3mP9qL2vR8tY5wX1nB4cF7", "Copy"},
		{"Auth Token", "8f4a2c1e9b7d6f3a0e5c2b8d4f1a7e3c", "Hide"},
	} {
		lines := page(c.label, c.value+" "+c.button)
		r := privacy.NewRedactor(detector(t), nil)
		got := covered(lines, r.Cover(r.ReadScreen(lines)))
		if !slices.Equal(got, []string{c.value}) {
			t.Errorf("%s: covered %q, not the value %q", c.label, got, c.value)
		}
		if text := r.Text("Type " + c.value + " in the field."); strings.Contains(text, c.value) {
			t.Errorf("%s: the text keeps it: %q", c.label, text)
		}
	}
}

// A variable's name is printed by the viewer and the Markdown export
// ("- `name`: description"), and is not redacted.
func TestAVariablesNameKeepsNoValue(t *testing.T) {
	t.Parallel()
	doc := leakySOP(t)
	doc.Public.Variables["refund for jane.doe@acme-corp.com"] = "The customer whose order is refunded"
	r := privacy.NewRedactor(detector(t), nil)
	r.Document(doc)
	md := string(sop.Markdown(doc, nil))
	if strings.Contains(md, "jane.doe@acme-corp.com") {
		t.Errorf("the Markdown export keeps the address:\n%s", md)
	}
	if !strings.Contains(md, "The customer whose order is refunded") || !strings.Contains(md, "refund for {{EMAIL_") {
		t.Errorf("the variable, renamed, is not in the Markdown export:\n%s", md)
	}
	// Two names the rename makes one keep both descriptions.
	doc = leakySOP(t)
	doc.Public.Variables["refund for jane.doe@acme-corp.com"] = "The first refund"
	doc.Public.Variables["refund for JANE.DOE@acme-corp.com"] = "The second refund"
	r = privacy.NewRedactor(detector(t), nil)
	r.Document(doc)
	md = string(sop.Markdown(doc, nil))
	if !strings.Contains(md, "The first refund") || !strings.Contains(md, "The second refund") {
		t.Errorf("a variable the rename merged with another lost its description:\n%s", md)
	}
}

// coversOn reads rows as a screen and tells whether every word of rows
// that holds secret (or is a part of it of 4 characters and more) is
// covered.
func coversOn(t *testing.T, secret string, rows ...string) (bool, []string) {
	t.Helper()
	lines := page(rows...)
	r := privacy.NewRedactor(detector(t), nil)
	got := covered(lines, r.Cover(r.ReadScreen(lines)))
	for _, row := range rows {
		for _, w := range strings.Fields(row) {
			if (strings.Contains(w, secret) || len(w) >= 4 && strings.Contains(secret, w)) && !slices.Contains(got, w) {
				return false, got
			}
		}
	}
	return true, got
}

// A Microsoft Teams incoming webhook URL: gitleaks' rule has no
// secretGroup, so (as in gitleaks) its first non-empty group — "a165-", a
// piece of a GUID — is "the secret". The screen's word is covered (the URL
// is one word), but in the SOP's text only "a165-" is replaced: the
// webhook key and the rest of the URL stay, and anyone can post to the
// channel with it.
func TestATeamsWebhookURLKeepsNoKeyInText(t *testing.T) {
	t.Parallel()
	const key = "3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9"
	url := "https://acme.webhook.office.com/webhookb2/0f8fad5b-d9cb-469f-a165-70867728950e@72f988bf-86f1-41af-91ab-2d7cd011db47/IncomingWebhook/" + key + "/0f8fad5b-d9cb-469f-a165-70867728950e"
	r := privacy.NewRedactor(detector(t), nil)
	if got := r.Text("Paste " + url + " into the alert's Webhook URL field."); strings.Contains(got, key) {
		t.Errorf("the webhook's key is kept:\n%s", got)
	}
}

// Command-line passwords other than mysql -p, docker login -p, sshpass -p:
// each as a terminal shows it. Neither the text nor the screen loses it.
func TestMoreCommandLinePasswordsAreFound(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ line, secret string }{
		{"$ redis-cli -h cache.internal -a Hunter2Sup3r ping", "Hunter2Sup3r"},
		{`PS C:\> sqlcmd -S db.internal -U sa -P Hunter2Sup3r -Q "SELECT 1"`, "Hunter2Sup3r"},
		{"$ mongosh mongodb://db.internal -u admin -p Hunter2Sup3r", "Hunter2Sup3r"},
		{"$ ldapsearch -x -D cn=admin,dc=acme,dc=io -w Hunter2Sup3r", "Hunter2Sup3r"},
		{"$ keytool -importcert -keystore app.jks -storepass Hunter2Sup3r -file ca.crt", "Hunter2Sup3r"},
		{"$ smbclient //fs/share -U jane%Hunter2Sup3r", "Hunter2Sup3r"},
		{"$ az login -u jane@acme.io -p Hunter2Sup3r", "Hunter2Sup3r"},
		{"$ cat ~/.pgpass\ndb.internal:5432:app:app_user:Hunter2Sup3r", "Hunter2Sup3r"},
	} {
		r := privacy.NewRedactor(detector(t), nil)
		if got := r.Text("Run " + c.line); strings.Contains(got, c.secret) {
			t.Errorf("text keeps it: %q", got)
		}
		if ok, got := coversOn(t, c.secret, strings.Split(c.line, "\n")...); !ok {
			t.Errorf("screen %q: %q not covered (covered %q)", c.line, c.secret, got)
		}
	}
}

// The browser devtools' Application → Cookies table: Name, Value, Domain
// columns. csrftoken is covered (its name holds "token"); the session
// cookie — the one that signs anyone in as the recorded user — is not:
// the session rule wants "sessionid=".
func TestASessionCookieInItsTableIsCovered(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, value string }{
		{"sessionid", "q8xz2lmn4vb7k3j9h5g1f6d0sa7c2e1b"},
		{"PHPSESSID", "q8xz2lmn4vb7k3j9h5g1f6d0sa"},
		{"JSESSIONID", "4F3A9C2E1B4D8F6A0C5E2B9D7F1A3C6E"},
	} {
		ok, got := coversOn(t, c.value,
			"Name          Value                             Domain     Path  Expires      Size",
			"csrftoken     Xk2mP9qL2vR8tY5wX1nB4cF7aZ0eU5iO  .acme.io   /     2025-06-01   41",
			c.name+"     "+c.value+"  .acme.io   /     Session      41")
		if !ok {
			t.Errorf("%s: its value is not covered (covered %q)", c.name, got)
		}
	}
}

// An Azure Storage SAS URL ("Generate SAS" → Blob SAS URL, Storage
// Explorer, a backup script): the signature in sig= grants the access; the
// long-token rule skips what is in a URL, and no rule names sig.
func TestAnAzureSASSignatureIsCovered(t *testing.T) {
	t.Parallel()
	const sig = "q8XZ2lmN4vB7k3J9h5G1f6D0sAq8XZ2lmN4vB7k3J9h"
	url := "https://acmestore.blob.core.windows.net/backups/db.bak?sp=r&st=2024-01-01T00:00:00Z&se=2024-12-31T00:00:00Z&spr=https&sv=2022-11-02&sr=b&sig=" + sig + "%3D"
	if ok, got := coversOn(t, sig, "Blob SAS URL", url); !ok {
		t.Errorf("not covered (covered %q)", got)
	}
	r := privacy.NewRedactor(detector(t), nil)
	if got := r.Text("Download " + url); strings.Contains(got, sig) {
		t.Errorf("text keeps it: %q", got)
	}
}

// stripe listen prints the webhook signing secret (whsec_ + 32): 38
// characters, under the 40 of a nameless token, and no rule knows whsec_.
func TestAStripeWebhookSigningSecretIsCovered(t *testing.T) {
	t.Parallel()
	const secret = "whsec_Zx9pQr7Lm2WqKdF3hJ8sT1vB6nC4xY0e"
	if ok, got := coversOn(t, secret, "$ stripe listen --forward-to localhost:4242/webhook",
		"> Ready! Your webhook signing secret is "+secret+" (^C to quit)"); !ok {
		t.Errorf("not covered (covered %q)", got)
	}
	r := privacy.NewRedactor(detector(t), nil)
	if got := r.Text("Copy " + secret + " into STRIPE_WEBHOOK_SECRET."); strings.Contains(got, secret) {
		t.Errorf("text keeps it: %q", got)
	}
}

// An ordinary Azure CLI command with an object id: despaced drops the
// spaces OCR "put beside" every "-" of its options, the command becomes
// one 80-character token of high entropy, the screenshot loses eight of
// its words, and — learned from the screen, matched with spaces ignored —
// the command is replaced in the SOP's text by {{TOKEN_1}}.
func TestAnOrdinaryCommandWithAGUIDIsNoSecret(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{
		"az role assignment create --assignee 0f8fad5b-d9cb-469f-a165-70867728950e --role Contributor --scope /subscriptions/72f988bf-86f1-41af-91ab-2d7cd011db47",
		"az keyvault set-policy --name Acme-KV-Prod --object-id 0f8fad5b-d9cb-469f-a165-70867728950e --secret-permissions get list",
	} {
		lines := page("$ " + cmd)
		r := privacy.NewRedactor(detector(t), nil)
		if got := covered(lines, r.Cover(r.ReadScreen(lines))); len(got) > 0 {
			t.Errorf("covered %q of %q", got, cmd)
		}
		if text := r.Text("Run " + cmd + " and wait."); strings.Contains(text, "{{") {
			t.Errorf("the step's text lost the command: %q", text)
		}
	}
}

// A base64 secret may begin with "/" (1 in 64 of them; AWS secret keys
// are base64): under its own name it is no file's path (filePath). The
// nameless rule does not cover it: without the "/" it is 39 characters,
// under 40.
func TestASecretThatBeginsWithASlashIsNoPath(t *testing.T) {
	t.Parallel()
	d := detector(t)
	for _, c := range []struct{ text, secret string }{
		{"AWS_SECRET_ACCESS_KEY=/uN7B3MAtQhDp8kF3ONfqnZlVAvcxkLDr79nDVJd", "uN7B3MAtQhDp8kF3ONfqnZlVAvcxkLDr79nDVJd"},
		{"aws_secret_access_key = /uN7B3MAtQhDp8kF3ONfqnZlVAvcxkLDr79nDVJd", "uN7B3MAtQhDp8kF3ONfqnZlVAvcxkLDr79nDVJd"},
		{"DB_PASSWORD=/Hunter2Sup3r", "Hunter2Sup3r"},
		{"Password: /Hunter2Sup3r!", "Hunter2Sup3r"},
	} {
		if got := privacy.NewRedactor(d, nil).Text(c.text); strings.Contains(got, c.secret) {
			t.Errorf("text keeps it: %q", got)
		}
		if ok, got := coversOn(t, c.secret, c.text); !ok {
			t.Errorf("screen %q: not covered (covered %q)", c.text, got)
		}
	}
}

// OCR reads "glpat -VdQ…" (the split despaced was made for): a rest of
// letters up to the next space is no command-line option (optionAhead),
// and the GitLab token under its label is covered.
func TestAnOCRSplitTokenWhoseRestIsLettersIsCovered(t *testing.T) {
	t.Parallel()
	for _, rows := range [][]string{
		{"Personal access token: glpat -VdQCwaPEqiNvNPoTabXy"},
		{"Token", "glpat -VdQCwaPEqiNvNPoTabXy"},
	} {
		if ok, got := coversOn(t, "VdQCwaPEqiNvNPoTabXy", rows...); !ok {
			t.Errorf("%q: not covered (covered %q)", rows, got)
		}
	}
}

// A TOTP setup key shown in groups of four ("Can't scan? Enter this key")
// and two-factor recovery codes: each lets whoever reads the screenshot
// past the second factor. Nothing covered them (a privacy attack's
// finding); the buttons under the codes stay.
func TestSecondFactorSecretsAreCovered(t *testing.T) {
	t.Parallel()
	if ok, got := coversOn(t, "jbsw y3dp ehpk 3pxp kq7m 2xzn 4tav 6wqc",
		"Can't scan the QR code?", "Enter this key in your authenticator app:", "jbsw y3dp ehpk 3pxp kq7m 2xzn 4tav 6wqc"); !ok {
		t.Errorf("the setup key is not covered (covered %q)", got)
	}
	ok, got := coversOn(t, "bd7c6-2f3a9 8e4f1-7c2d0 a9b3e-5d1f6 c2e8f-4a7b1",
		"Save your recovery codes", "bd7c6-2f3a9   8e4f1-7c2d0", "a9b3e-5d1f6   c2e8f-4a7b1", "Download  Print  Copy")
	if !ok || slices.Contains(got, "Download") {
		t.Errorf("the recovery codes, alone, are not covered (covered %q)", got)
	}
	if text := privacy.NewRedactor(detector(t), nil).Text("Type jbsw y3dp ehpk 3pxp kq7m 2xzn 4tav 6wqc in the app."); strings.Contains(text, "kq7m") {
		t.Errorf("the text keeps the setup key: %q", text)
	}
}

// What a fresh-eye attack found after the recovery codes' and the column's
// rules: a count under "Backup codes" is no code (it was covered, and every
// "10" in the SOP's text became a variable); a meeting's passcode is a
// password.
func TestACountUnderBackupCodesIsNoCodeAndAPasscodeIsAPassword(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	lines := page("Backup codes", "10", "Get new codes")
	if got := covered(lines, r.Cover(r.ReadScreen(lines))); len(got) > 0 {
		t.Errorf("covered %q", got)
	}
	if s := "Click Get new codes; you get 10 codes. Wait 10 minutes."; r.Text(s) != s {
		t.Errorf("%q -> %q", s, r.Text(s))
	}
	if ok, got := coversOn(t, "8Hk2Qz", "Meeting ID: 845 2231 9087", "Passcode: 8Hk2Qz"); !ok {
		t.Errorf("the passcode is not covered (covered %q)", got)
	}
	for name, rows := range map[string][]string{
		"gitlab access tokens":     {"Token name          Scopes           Created", "ci-deploy           api, read_repo   2024-01-12"},
		"aws secrets manager":      {"Secret name                     Description", "prod/db-credentials             Postgres master login"},
		"a password heading above": {"Password", "Last changed Mar 14", "2-Step Verification      On since Jan 2, 2023"},
	} {
		lines := page(rows...)
		if got := covered(lines, r.Cover(r.ReadScreen(lines))); len(got) > 0 {
			t.Errorf("%s: covered %q", name, got)
		}
	}
}

// A terminal on a screenshot: docker run with a token in -e, then the image
// to run. The screen's value spans both words (despaced joins them, the
// assigned value runs on); learnLines now learns each word "made as keys
// are" on its own, so the image reference, in any text of the SOP, becomes
// {{TOKEN_1}} (a reviewer's finding: the words of a screen's value were all learned).
func TestAnImageBesideATokenOnScreenIsKeptInText(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	lines := page("$ docker run -e API_TOKEN=Xy7kq2Lm9Qw8Er5TyU3 registry.acme.io/billing:2024.10.07-a1b2c3d")
	r.Cover(r.ReadScreen(lines))
	s := "Deploy registry.acme.io/billing:2024.10.07-a1b2c3d to staging, then check the health page."
	if got := r.Text(s); got != s {
		t.Errorf("%q\n-> %q", s, got)
	}
}

// A quoted secret with a note after it in the same quotes: the build id in
// it, a word made as keys are, is replaced wherever the SOP names the build.
func TestABuildIDInAQuotedSecretIsNotTheSecret(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	r.Text(`SECRET_KEY="Xy7kq2Lm9Qw8Er5TyU3 build-20241007a"`)
	s := "Roll back to build-20241007a if the smoke test fails."
	if got := r.Text(s); got != s {
		t.Errorf("%q\n-> %q", s, got)
	}
}

// A sentence that mentions the backup codes, then a label, then a ticket's
// number (and a date below it): no code (codesBelow), so nothing in any
// text of the SOP that names the ticket is replaced.
func TestATicketTwoLinesBelowBackupCodesIsNoCode(t *testing.T) {
	t.Parallel()
	d := detector(t)
	s := "Regenerate the backup codes for the service account.\nChange ticket:\nCHG0031337"
	if got := found(t, d, s); len(got) > 0 {
		t.Errorf("%q: found %q", s, got)
	}
	if got := privacy.NewRedactor(d, nil).Text(s + "\n20241007\n"); strings.Contains(got, "{{") {
		t.Errorf("%q", got)
	}
}

// OCR (Tesseract) separates a page's blocks with an empty line: heading,
// empty line, "Keep these somewhere safe.", empty line, the codes — three
// lines between (a reviewer's finding: two were allowed, and no code was
// found, none covered).
func TestRecoveryCodesAfterOCRsEmptyLinesAreFound(t *testing.T) {
	t.Parallel()
	d := detector(t)
	s := "Recovery codes\n\nKeep these somewhere safe.\n\nbd7c6-2f3a9   8e4f1-7c2d0\na9b3e-5d1f6   c2e8f-4a7b1"
	if got := found(t, d, s); len(got) != 4 {
		t.Errorf("found %q", got)
	}
	r := privacy.NewRedactor(d, nil)
	lines := page("Recovery codes", "Keep these somewhere safe.", "Each code can be used once.", "We will not show them again.",
		"bd7c6-2f3a9   8e4f1-7c2d0", "a9b3e-5d1f6   c2e8f-4a7b1", "Download  Print  Copy")
	if got := covered(lines, r.Cover(r.ReadScreen(lines))); !slices.Contains(got, "bd7c6-2f3a9") {
		t.Errorf("three sentences under the heading: covered %q", got)
	}
}

// A secret access key OCR split by a space anywhere, 3 from its end too (a
// reviewer's finding: each part had to be 8 characters or more).
func TestAnAWSSecretSplitNearItsEndIsFound(t *testing.T) {
	t.Parallel()
	s := "AKIA5ALWAMOYMVYEWCLE kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVA vcx"
	if got := privacy.NewRedactor(detector(t), nil).Text(s); strings.Contains(got, "kLDr79n") {
		t.Errorf("%q", got)
	}
}
