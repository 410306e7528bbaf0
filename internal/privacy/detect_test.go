package privacy_test

import (
	"strings"
	"testing"

	"github.com/runops/runops/internal/privacy"
)

// found lists what the detector finds in text as "kind:value".
func found(t *testing.T, d *privacy.Detector, text string) []string {
	t.Helper()
	var out []string
	for _, m := range d.Find(text) {
		out = append(out, string(m.Kind)+":"+text[m.Start:m.End])
	}
	return out
}

func detector(t *testing.T) *privacy.Detector {
	t.Helper()
	d, err := privacy.NewDetector(nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Values of the shapes the providers issue (random bodies: the rule set
// ignores example keys such as AKIA…EXAMPLE on purpose).
const (
	ghp       = "ghp_PESr9smeeq0Ivqx10zlp6pF0eU6OKPfN1BXA"
	glpat     = "glpat-VdQCwa20PEqiN8vNPoT0"
	stripe    = "sk_live_HjgzWt6VY7cXRHfkDTjqIdl9"
	google    = "AIzaThFvA_lQRhYRoMGkM67KpcKB9pahVyLme20"
	awsID     = "AKIA5ALWAMOYMVYEWCLE"
	awsSecret = "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"
	anthropic = "sk-ant-api03-4g4gCJzm4UQAYyubSEzPW8RiFjgqg_l5nrN_QWRi-SU9M_yCECSnNLvZ_I1Hdxo7fh5EHmotFM3HJfwh6pkFRtocDdG-RAA"
	openai    = "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"
	sendgrid  = "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"
	npm       = "npm_DmZkieQUYJKTU9oaiMoXr3HONPHX7jmvfgeq"
	slack     = "xoxb-211228349051-2108230401054-9ZyyjEXxAzr6zOy9pzNUTd1a"
	twilio    = "SKe87453f52ba0e82e6e797e7747e543d7"
	jwt       = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6InF3ZXJ0eXVpb3Bhc2RmZ2hqa2x6Iiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImlhdCI6MTczMzQwMDAwMCwiZXhwIjoyMDQ4OTc2MDAwfQ.k9crquXAh18LTf2yi8tux5dx4aI3UmxBwlR1K0oFpTE"
	bearer    = "6BkxF0H53jaabJtekFyUms9Hmt5XtqhzuM5NTK2T"
	pemBody   = "Zcaet3AODCAvwmCieR9p97KEttf002AFAq/DjUAM2jA9kX2Op/3vWzBFOGFT+uhS\n" +
		"wR0o4hs5NL01akLSpDhVrLa688ieu0q6BiCefdC2FGbDp2boJDH4C/sFv9kS/aQa\n" +
		"EWBUHhvVqBNlDpinBrPbxCLM/vqomYO7aDkQUqsfb/EiimekpJNYwxXWvVh+3uHU\n" +
		"6yu4s5Ciw2/rIl6s6Lm5=="
)

// Each kind, as it appears in a sentence of an SOP or a line of a screen:
// the provider rules, what a name says is secret, the checksum kinds.
func TestDetectorsFindEachKind(t *testing.T) {
	t.Parallel()
	d := detector(t)
	pem := "-----BEGIN RSA PRIVATE KEY-----\n" + pemBody + "\n-----END RSA PRIVATE KEY-----"
	cases := map[string]string{
		// Provider rules (gitleaks), in sentences: the punctuation around
		// a value ends it.
		"Sign in as jane.doe+ops@acme-corp.co.uk and open Settings.": "email:jane.doe+ops@acme-corp.co.uk",
		`mail "jane doe"@example.org today`:                          `email:"jane doe"@example.org`,
		"Paste " + stripe + " into the API key field":                "api_key:" + stripe,
		"the token (" + ghp + ").":                                   "token:" + ghp,
		"GitLab: " + glpat + ", then push":                           "token:" + glpat,
		"key [" + google + "]":                                       "api_key:" + google,
		"aws " + awsID + " in the console":                           "access_key:" + awsID,
		"ANTHROPIC_API_KEY=" + anthropic:                             "api_key:" + anthropic,
		"the OpenAI key is " + openai + ".":                          "api_key:" + openai,
		"SENDGRID " + sendgrid:                                       "api_key:" + sendgrid,
		"//registry.npmjs.org/:_authToken=" + npm:                    "token:" + npm,
		"slack " + slack:                                             "token:" + slack,
		"export SUPABASE_SERVICE_ROLE_KEY=" + jwt:                    "token:" + jwt,
		pem: "private_key:" + pem,
		// What a name says is secret, with =, :, a tab, any case.
		"aws_secret_access_key = " + awsSecret: "token:" + awsSecret,
		"Password: hunter2Xy!":                 "password:hunter2Xy!",
		"DB_PASSWORD=Tr0ub4dor&3":              "password:Tr0ub4dor&3",
		"client_secret\tq8Xz2LmN4vB7":          "token:q8Xz2LmN4vB7",
		"TWILIO_AUTH_TOKEN=" + twilio:          "api_key:" + twilio,
		"Password\nA76mvWE6afv9Z&":             "password:A76mvWE6afv9Z&",
		"Password\nVq7#kP2m!xL9wR4z Hide":      "password:Vq7#kP2m!xL9wR4z", // the field's button on its line
		"API key\nq8Xz2LmN4vB7wE5r ©":          "token:q8Xz2LmN4vB7wE5r",    // its copy icon, read as a sign
		"Production key   " + bearer:           "token:" + bearer,
		`curl -H "Authorization: Bearer ` + bearer + `" https://api.example.com`: "token:" + bearer,
		"send it as Basic dXNlcjpwYXNzd29yZDEyMw==":                              "token:dXNlcjpwYXNzd29yZDEyMw==",
		"connect to postgres://admin:s3cr3t-Pass@db.internal:5432/app":           "password:s3cr3t-Pass",
		// Checksums.
		"Card on file 4242 4242 4242 4242 exp 12/34":      "card_number:4242 4242 4242 4242",
		"card 4000-0566-5566-5556":                        "card_number:4000-0566-5566-5556",
		"Amex 3782 822463 10005 on file":                  "card_number:3782 822463 10005",
		"digits only 5555555555554444.":                   "card_number:5555555555554444",
		"IBAN DE89 3704 0044 0532 0130 00 for the refund": "iban:DE89 3704 0044 0532 0130 00",
		"GB82WEST12345698765432":                          "iban:GB82WEST12345698765432",
		// More forms: names that end in _PASS, a password in a sentence, a
		// mysql client's -p, a session cookie, labels in other languages and
		// full-width colons; a repository's gitleaks:allow comment does not
		// hide a key from a recording.
		"DB_PASS=Tr0ub4dor&3":                                         "password:Tr0ub4dor&3",
		"SMTP_PASS=hunter2hunter2":                                    "password:hunter2hunter2",
		"The password is Xy7kq2Lm9.":                                  "password:Xy7kq2Lm9",
		"mysql -u root -pXy7kq2Lm9 app":                               "password:Xy7kq2Lm9",
		"Cookie: sessionid=8h3k2l1m0n9b8v7c6x5z4a3s2d1f0g9h":          "token:8h3k2l1m0n9b8v7c6x5z4a3s2d1f0g9h",
		"Passwort: Geheim123!":                                        "password:Geheim123!",
		"Mot de passe : Xy7!kqLm":                                     "password:Xy7!kqLm",
		"パスワード: Xy7kq2Lm9":                                            "password:Xy7kq2Lm9",
		"PASSWORD：Xy7kq2Lm9":                                          "password:Xy7kq2Lm9",
		`Stripe::StripeClient.new("` + stripe + `") # gitleaks:allow`: "api_key:" + stripe,
		// An address in a URL's path or query, after mailto: or a label's
		// colon; a password in Markdown's backticks; a key with an
		// invisible character inside; a card in full-width digits.
		"open https://admin.example.com/customers?email=jane.doe@acme-corp.com": "email:jane.doe@acme-corp.com",
		"https://app.example.com/users/jane.doe@acme-corp.com/edit":             "email:jane.doe@acme-corp.com",
		"write to mailto:jane.doe@acme-corp.com":                                "email:jane.doe@acme-corp.com",
		"Email:alice@example.com":                                               "email:alice@example.com",
		"Contact **jane.doe@acme-corp.com** today":                              "email:jane.doe@acme-corp.com",
		"Forward it to _billing@acme-corp.com_.":                                "email:billing@acme-corp.com",
		"| name | |jane.doe@acme-corp.com| |":                                   "email:jane.doe@acme-corp.com",
		"Password: `Zx9!mQ2@vL`":                                                "password:`Zx9!mQ2@vL`",
		"DB_PASSWORD=`Zx9!mQ2@vL`":                                              "password:`Zx9!mQ2@vL`",
		"the token " + ghp[:20] + "\u200b" + ghp[20:] + " expires":              "token:" + ghp[:20] + "\u200b" + ghp[20:],
		"Card ４２４２ ４２４２ ４２４２ ４２４２ on file":                                      "card_number:４２４２ ４２４２ ４２４２ ４２４２",
	}
	for text, want := range cases {
		if got := found(t, d, text); len(got) != 1 || got[0] != want {
			t.Errorf("%q:\n found %q\n want %q", text, got, want)
		}
	}
}

// What looks like a value but is not one stays as it is.
func TestDetectorsLeaveLookalikes(t *testing.T) {
	t.Parallel()
	d := detector(t)
	for _, text := range []string{
		"At 00:01:23 click Save; it was 2026-12-04 10:15:00 UTC.",
		"Order 1234567890123 and order #4242424242424241 (not Luhn) shipped.",
		"ticket 12345678901234567890123 (too long to be a card)",
		"Version 1.24.3, build 20261204.1, v2.0.0-rc.1, go1.26.8",
		"job 123e4567-e89b-12d3-a456-426614174000 and 12345678-1234-1234-1234-123456789012",
		"commit 3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7\nAuthor: dev\n    merge a1b2c3d into main",
		"Use the sk-learn library and the pk column; xox is a game.",
		"Type your password into the Password field, then the token field.",
		"Password: required",
		"Set the token: you will find it in Settings.",
		"API key: <your key>, or ${OPENAI_API_KEY}, or {{API_KEY_1}}",
		"password = ********",
		"the DE89 line of the report, GB82 WEST 1234",
		"email the team at support (no address shown)",
		"retina assets icon@2x.png and logo@3x.webp",
		"Invoice INV-2026-000123 for 4,242.42 EUR",
		"Bearer token authentication is described in the docs",
		"src/internal/privacy/DetectorConfigurationLoader.go",
		// Sentences that name a secret without showing one; runs of years;
		// share links.
		"Enter the password (twice).",
		"Save it in your password manager's vault.",
		"Open Settings → API Keys: Generate a new key.",
		"Password: Minimum eight characters, one digit.",
		"Token: Expiration is 30 days.",
		"refresh token: Rotate it monthly.",
		"Token: Kopieren Sie den Wert.",
		"PRIMARY_KEY=customer_id",
		"Password\nForgot?",
		"Password\n(optional)",
		"Password\nForgot password?",
		"Password\nChange password",
		// Not a field's button: a hint, a menu's items.
		"Password\n8-16 characters",
		"Passwords\nAuto-fill settings",
		"API keys\nRead-only access",
		"Tokens\nNon-expiring tokens",
		"Revenue by year: 2015 2016 2017 2018",
		"Revenue by year: 2023 2024 2025 2026",
		"Compare the columns\n2023\n2024\n2025\n2026\nand export.",
		"Open https://docs.google.com/document/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit to read it.",
		"https://portal.azure.com/#@acme.onmicrosoft.com/resource/subscriptions/123e4567-e89b-12d3-a456-426614174000/resourceGroups/rg-prod/overview",
		// The prose between two code spans is no value.
		"Fill `Password:` with the one from your manager, then click `Sign in`.",
		"Set `DB_PASSWORD=` and `DB_USER=` in `.env`.",
		// A URL's own user is no address.
		"clone ssh://git@github.com/acme/app.git",
		"https://deploy@ci.example.com/builds",
		// What only looks like the rules of a password beginning with "$",
		// a registry's -p, the Token scheme, a label of two words, a
		// configuration's attributes. Placeholders of shells and CI systems:
		"DB_PASSWORD=$DB_PASS and PASSWORD=%DB_PASS% and TOKEN=$(cat token.txt)",
		`password: "${{ secrets.DOCKERHUB_TOKEN }}"`,
		`$password = $env:DB_PASSWORD`,
		`Connect-Db -Password $env:DB_PASSWORD`,
		`"password": "$(DB_PASSWORD)"`,
		// ports, of ssh (after sshpass's own options too) and of a
		// container run after a registry login:
		"ssh -p 2222 deploy@10.0.0.5",
		"sshpass -e ssh -p 2222 deploy@10.0.0.5",
		"sshpass -f ~/.pw ssh -p 2222 deploy@10.0.0.5",
		"docker login --password-stdin ghcr.io then docker run -p 8080:80 ghcr.io/acme/app",
		"docker login ghcr.io && docker run -p 8080:8080 ghcr.io/acme/app",
		"podman login quay.io && podman run -p 3000:3000 quay.io/acme/web",
		// "token" in prose:
		"Token authentication expires after 30 days.",
		"The token sha256-encoded goes in the header.",
		// a heading of two words above a menu's item, a hint or a date:
		"Reset password\nSign in",
		"New password\n8-16 characters",
		"API token\nRead-only",
		"New password\nSign-out",
		"Change password\nRead-only",
		"Password\nRead-only",
		"Client secret\n2025-12-31",
		// settings that merely name a secret:
		`<add key="ThemeName" value="dark" />`,
		`<add key="ApiKeyHeader" value="X-Api-Key" />`,
		`<add key="MachineKeyValidation" value="HMACSHA256" />`,
		`<add key="PasswordPolicy" value="MinLength8Upper1" />`,
		`<add key="SigningKeyId" value="2024-rotation-01" />`,
		`<add key="SecretsPath" value="C:\secrets\app" />`,
		// names of secrets, not secrets: where one is, what it is called,
		// a key file's path, a token endpoint, a table's key attribute, a
		// token's permission, a password's rule, a commit as an image tag:
		"spec:\n  tls:\n  - hosts:\n    - app.acme.io\n    secretName: acme-tls",
		"export GOOGLE_APPLICATION_CREDENTIALS=/home/jane/keys/sa.json",
		"TLS_PRIVATE_KEY_FILE=/etc/ssl/private/acme.key",
		"Private key: ~/.ssh/id_ed25519",
		"token_endpoint: https://login.microsoftonline.com/common/oauth2/v2.0/token",
		`"token_endpoint": "https://acme.okta.com/oauth2/default/v1/token",`,
		"SecretId: prod/app/db-credentials",
		`secret_name = "prod/app/db-credentials"`,
		`hash_key  = "UserId"`,
		`range_key = "CreatedAt"`,
		"Token: Read-Write",
		"Credentials: service-account",
		"Password: 8-64 characters, one number",
		"IMAGE_TAG=3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7",
		"PASSWORD_RESET_TIMEOUT = 259200",
		// a container named mongo, and docker's -p its port mapping:
		"docker run -d --name mongodb -p 27017:27017 mongo:7",
		"Start it with docker run --name mongo-dev -p 27017:27017 -d mongo:latest and wait.",
	} {
		if got := found(t, d, text); len(got) != 0 {
			t.Errorf("%q: found %q", text, got)
		}
	}
}

// Neither a line nor a run of spaces is the unit of a value: a token
// wrapped by a line break, a card split over two lines, a key with its
// halves spaced apart, a private key's body without its BEGIN line are
// each one value.
func TestValuesAcrossLines(t *testing.T) {
	t.Parallel()
	d := detector(t)
	half := len(jwt) / 2
	for text, want := range map[string]string{
		"the service key\n" + jwt[:half] + "\n" + jwt[half:] + "\nthen save": jwt[:half] + "\n" + jwt[half:],
		"card 4242 4242\n4242 4242 on file":                                  "4242 4242\n4242 4242",
		"key " + stripe[:16] + "    " + stripe[16:] + " end":                 stripe[:16] + "    " + stripe[16:],
		"the body:\n" + pemBody + "\nthat is all":                            pemBody,
	} {
		var values []string
		for _, m := range d.Find(text) {
			values = append(values, text[m.Start:m.End])
		}
		if len(values) != 1 || values[0] != want {
			t.Errorf("%q:\n found %q\n want %q", text, values, want)
		}
	}
}

// An operator's patterns find their own kind; a bad one is refused at start.
func TestOperatorPatterns(t *testing.T) {
	t.Parallel()
	// ";" separates, ";;" is a semicolon, blanks around a pattern and empty
	// patterns are dropped.
	patterns, err := privacy.ParsePatterns(`CUST-\d{6}; [a-z0-9-]+\.corp\.internal ;ref;;\d{4};`)
	if err != nil || len(patterns) != 3 || patterns[2] != `ref;\d{4}` {
		t.Fatalf("%q %v", patterns, err)
	}
	d, err := privacy.NewDetector(patterns)
	if err != nil {
		t.Fatal(err)
	}
	got := found(t, d, "Open CUST-004211 on billing-7.corp.internal (ref;2231), mail ops@example.com")
	if strings.Join(got, " ") != "custom:CUST-004211 custom:billing-7.corp.internal custom:ref;2231 email:ops@example.com" {
		t.Fatalf("%q", got)
	}
	// What our rules take for published (a publishable key, a fingerprint)
	// is still found by an operator's pattern that asks for it.
	own, err := privacy.NewDetector([]string{`pk_live_\w+`, `SHA256:\S+`})
	if err != nil {
		t.Fatal(err)
	}
	if got := found(t, own, "Publishable key pk_live_51HxYzAbCdEfGhIjKlMn0123, fingerprint SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"); len(got) != 2 {
		t.Fatalf("an operator's patterns: %q", got)
	}
	for _, bad := range []string{`CUST-(\d`, `a*`} {
		if _, err := privacy.ParsePatterns(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Logs name the kind, not the value; with redaction off, nothing changes.
func TestScrub(t *testing.T) {
	t.Parallel()
	d := detector(t)
	if got := d.Scrub(`node "ask-jane@acme.io" names no node`); got != `node "[email]" names no node` {
		t.Fatalf("%q", got)
	}
	var off *privacy.Detector
	if got := off.Scrub("jane@acme.io"); got != "jane@acme.io" {
		t.Fatalf("off: %q", got)
	}
}
