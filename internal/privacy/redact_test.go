package privacy_test

import (
	"encoding/json"
	"image"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/runops/runops/internal/ocr"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/sop/soptest"
)

const sampleID = "00000000-0000-4000-8000-000000000000"

// The sample SOP with secrets written into the fields a model fills.
func leakySOP(t *testing.T) *sop.Document {
	t.Helper()
	b, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sop.Load(b, sampleID)
	if err != nil {
		t.Fatal(err)
	}
	doc.Meta.Title = "Refunds for jane.doe@acme-corp.com"
	n := &doc.Public.Nodes[0]
	n.Label = "Sign in as Jane.Doe@acme-corp.com"
	n.Context = "Jane Doe pastes sk_live_51HxYzAbCdEfGhIjKlMn0123 and charges 4242 4242 4242 4242"
	doc.Public.Nodes[1].Intent = "Check card 4242424242424242 for Jane Doe (password=hunter2)"
	doc.Public.Variables["amount"] = "The amount, e.g. what jane.doe@acme-corp.com paid"
	doc.Public.ClarificationRequests = append(doc.Public.ClarificationRequests,
		sop.Clarification{ID: "q9", Question: "Is sk_live_51HxYzAbCdEfGhIjKlMn0123 the right key?", Importance: "high"})
	doc.Private.Artifacts = []any{map[string]any{"note": "IBAN DE89 3704 0044 0532 0130 00", "n": 3.0}}
	return doc
}

var leaked = []string{"jane.doe", "acme-corp", "sk_live", "51HxYz", "4242", "hunter2", "Jane Doe", "DE89", "0130"}

// Every value leaves every text of the SOP, each distinct one for a named
// variable described without any part of it; the same value is the same
// variable wherever it is, however it is spelled; the SOP still validates.
func TestDocumentKeepsNoValue(t *testing.T) {
	t.Parallel()
	doc := leakySOP(t)
	d, _ := privacy.NewDetector(nil)
	r := privacy.NewRedactor(d, []privacy.Mark{{Value: "Jane Doe", Kind: privacy.Name}, {Value: "Al", Kind: privacy.Name}})
	r.Document(doc)
	b, err := sop.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range leaked {
		if strings.Contains(strings.ToLower(string(b)), strings.ToLower(v)) {
			t.Errorf("%q is still in the SOP", v)
		}
	}
	soptest.Check(t, "the redacted SOP", b)
	wantVars := map[string]bool{"EMAIL_1": true, "API_KEY_1": true, "CARD_NUMBER_1": true, "NAME_1": true, "PASSWORD_1": true, "IBAN_1": true}
	for name := range wantVars {
		desc, ok := doc.Public.Variables[name]
		if !ok || desc == "" {
			t.Errorf("no variable %s in %v", name, doc.Public.Variables)
		}
	}
	if len(doc.Public.Variables) != len(wantVars)+2 { // and the sample's own two
		t.Errorf("variables %v", doc.Public.Variables)
	}
	if n := doc.Public.Nodes[0]; n.Label != "Sign in as {{EMAIL_1}}" ||
		n.Context != "{{NAME_1}} pastes {{API_KEY_1}} and charges {{CARD_NUMBER_1}}" {
		t.Errorf("node 0: %q / %q", n.Label, n.Context)
	}
	if got := doc.Public.Nodes[1].Intent; got != "Check card {{CARD_NUMBER_1}} for {{NAME_1}} (password={{PASSWORD_1}})" {
		t.Errorf("node 1: %q", got)
	}
	report, _ := json.Marshal(r.Report())
	if string(report) != `{"counts":{"api_key":1,"card_number":1,"email":1,"iban":1,"name":1,"password":1},"sources":{"model":1,"text":5}}` {
		t.Errorf("report %s", report)
	}
}

// Marked values go only as whole words, and none shorter than 3
// characters; a variable never takes a name the document already uses.
func TestTextRedaction(t *testing.T) {
	t.Parallel()
	d, _ := privacy.NewDetector(nil)
	for name, c := range map[string]struct {
		marks     []privacy.Mark
		reserved  string
		text, out string
	}{
		"whole words": {marks: []privacy.Mark{{Value: "Jan", Kind: privacy.Name}, {Value: "Bo", Kind: privacy.Name}},
			text: "In January, Jan asked Bo.", out: "In January, {{NAME_1}} asked Bo."},
		"names kept": {reserved: "EMAIL_1", text: "mail a@example.com", out: "mail {{EMAIL_2}}"},
	} {
		r := privacy.NewRedactor(d, c.marks)
		if c.reserved != "" {
			r.Reserve(c.reserved)
		}
		if got := r.Text(c.text); got != c.out {
			t.Errorf("%s: %q; want %q", name, got, c.out)
		}
	}
}

// A value read only on one screenshot is looked for on the next ones too,
// where OCR may misread it past the detectors (here "l" read as "I").
func TestAValueOnOneScreenshotIsFoundMisreadOnTheNext(t *testing.T) {
	t.Parallel()
	d, _ := privacy.NewDetector(nil)
	r := privacy.NewRedactor(d, nil)
	line := func(words ...string) []ocr.Line {
		l := ocr.Line{}
		for i, w := range words {
			if i > 0 {
				l.Text += " "
			}
			l.Starts = append(l.Starts, len(l.Text))
			l.Text += w
			l.Words = append(l.Words, ocr.Word{Text: w, Box: image.Rect(i*100, 0, i*100+90, 20)})
		}
		return []ocr.Line{l}
	}
	first, second := r.ReadScreen(line("key", "sk_live_51HxYzAbCdEfGhIjKlMn0123")), r.ReadScreen(line("key", "sk_Iive_51HxYzAbCdEfGhIjKlMn0123", "Settings"))
	if boxes := r.Cover(first); len(boxes) != 1 || boxes[0].Min.X != 100 {
		t.Fatalf("first screenshot: %v", boxes)
	}
	if boxes := r.Cover(second); len(boxes) != 1 || boxes[0].Min.X != 100 {
		t.Fatalf("second screenshot, misread: %v", boxes)
	}
	if report, _ := json.Marshal(r.Report()); string(report) != `{"counts":{"api_key":1},"sources":{"ocr":1}}` {
		t.Fatalf("counted %s", report)
	}
}

// A value the rules find in one text is replaced wherever it appears: in
// the same text, in a text before it, in one after it.
func TestAValueIsReplacedEverywhere(t *testing.T) {
	t.Parallel()
	r := privacy.NewRedactor(detector(t), nil)
	doc := &sop.Document{Meta: &sop.Meta{}, Public: &sop.Public{Nodes: []sop.Node{
		{ID: "a", Context: "If it fails, type Xy7kq2Lm9 again; the second line reads qR7vLm2XkP9wZt4N."},
		{ID: "b", Context: "Sign in with Password: Xy7kq2Lm9 — if it fails, type Xy7kq2Lm9 again."},
		{ID: "c", Context: "export STRIPE_SECRET_KEY=sk_live_HjgzWt6VY7cXRHfkDT\nqR7vLm2XkP9wZt4N"},
	}, Variables: map[string]string{}}}
	r.Document(doc)
	for _, n := range doc.Public.Nodes {
		if strings.Contains(n.Context, "Xy7kq2Lm9") || strings.Contains(n.Context, "qR7vLm2XkP9wZt4N") {
			t.Errorf("%s: %q", n.ID, n.Context)
		}
	}
	if got := doc.Public.Nodes[1].Context; got != "Sign in with Password: {{PASSWORD_1}} — if it fails, type {{PASSWORD_1}} again." {
		t.Errorf("%q", got)
	}
}

// Marks in text are matched as typed: an OCR confusion cannot happen
// there ("Sam" is not "5AM", "Ali" is not "all"); two characters make a
// name in scripts without spaces; a phone number is its digits in any
// format.
func TestMarksAsTyped(t *testing.T) {
	t.Parallel()
	marks := []privacy.Mark{{Value: "Sam", Kind: privacy.Name}, {Value: "Ali", Kind: privacy.Name}, {Value: "Bob", Kind: privacy.Name},
		{Value: "王伟", Kind: privacy.Name}, {Value: "+1 (415) 555-0132", Kind: privacy.Phone}}
	r := privacy.NewRedactor(detector(t), marks)
	textsAre(t, r, [][2]string{
		{"Sam schedules the backup to run at 5AM every day.", "{{NAME_1}} schedules the backup to run at 5AM every day."},
		{"Ali selects all rows, then clicks Delete all.", "{{NAME_2}} selects all rows, then clicks Delete all."},
		{"Bob sets the bitrate to 808 kbps.", "{{NAME_3}} sets the bitrate to 808 kbps."},
		{"请联系王伟，然后把报告发给他。", "请联系{{NAME_4}}，然后把报告发给他。"},
		{"Call 415-555-0132 or (415) 555 0132.", "Call {{PHONE_1}} or {{PHONE_1}}."},
	})
}

// A step's number (id_path) is the service's, not a text: a value marked
// that reads as one ("3.1") does not rewrite the numbering.
func TestNumbersAreNotTexts(t *testing.T) {
	t.Parallel()
	doc := leakySOP(t)
	i := slices.IndexFunc(doc.Public.Nodes, func(n sop.Node) bool { return len(n.IDPath) >= 3 })
	if i < 0 {
		t.Fatal("the sample has no step numbered deeper than one level (the test proves nothing)")
	}
	want := doc.Public.Nodes[i].IDPath
	d, _ := privacy.NewDetector(nil)
	privacy.NewRedactor(d, []privacy.Mark{{Value: want, Kind: privacy.Password}}).Document(doc)
	if got := doc.Public.Nodes[i].IDPath; got != want {
		t.Errorf("id_path %q after a mark of %q", got, want)
	}
}

// textsAre checks that r writes each case's text (first) as its second.
func textsAre(t *testing.T, r *privacy.Redactor, cases [][2]string) {
	t.Helper()
	for _, c := range cases {
		if got := r.Text(c[0]); got != c[1] {
			t.Errorf("%q:\n got %q\nwant %q", c[0], got, c[1])
		}
	}
}

// noneKept fails when any of parts survives the text pass of s.
func noneKept(t *testing.T, s string, parts ...string) {
	t.Helper()
	keptAre(t, s, false, parts)
}

// allKept fails when any of parts, ordinary text of s, is replaced.
func allKept(t *testing.T, s string, parts ...string) {
	t.Helper()
	keptAre(t, s, true, parts)
}

// keptAre fails when the text pass of s keeps any of parts, or (kept)
// replaces any.
func keptAre(t *testing.T, s string, kept bool, parts []string) {
	t.Helper()
	got := privacy.NewRedactor(detector(t), nil).Text(s)
	for _, p := range parts {
		if strings.Contains(got, p) != kept {
			t.Errorf("%q of %q: kept %v, want %v: %q", p, s, !kept, kept, got)
		}
	}
}

// Secrets in the shapes configs, consoles and command lines show them
// beyond a name and its operator (a fresh-eye attack's findings): an XML
// element, a JSON name/value pair, a table's row between bars, a Discord
// webhook's URL, the argument after a secret's name or option, a value
// piped to --password-stdin, a Docker Hub token alone, a one-time link.
func TestSecretsInMoreShapesAreReplaced(t *testing.T) {
	t.Parallel()
	noneKept(t, "<server>\n  <id>nexus</id>\n  <username>deploy</username>\n  <password>Xk9mP2vQ7wLz</password>\n</server>", "Xk9mP2vQ7wLz")
	noneKept(t, "<Password>Xk9mP2vQ7wLz</Password>", "Xk9mP2vQ7wLz")
	noneKept(t, `<clientSecret type="string">Xk9mP2vQ7wLzAbCd</clientSecret>`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, `{"name": "DB_PASSWORD", "value": "Tr0ub4dor&3x"}`, "Tr0ub4dor")
	noneKept(t, `{"name": "STRIPE_TOKEN", "slotSetting": false, "value": "Xk9mP2vQ7wLzAbCd"}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, "  {\n    \"name\": \"API_SECRET\",\n    \"value\": \"Xk9mP2vQ7wLzAbCd\"\n  },", "Xk9mP2vQ7wLzAbCd")
	noneKept(t, "| db_password | Xk9mP2vQ7wLz |", "Xk9mP2vQ7wLz")
	noneKept(t, "db_password | Xk9mP2vQ7wLz", "Xk9mP2vQ7wLz")
	noneKept(t, "│ api_secret │ Xk9mP2vQ7wLzAbCd12 │", "Xk9mP2vQ7wLzAbCd12")
	const discord = "Xk9mP2vQ7wLzAbCdEfGhIjKlXk9mP2vQ7wLzAbCdEfGhIjKlXk9mP2vQ7wLzAbCdEfGh"
	noneKept(t, "Paste https://discord.com/api/webhooks/1234567890123456789/"+discord+" into Alerting.", discord[:16])
	noneKept(t, "dckr_pat_Xk9mP2vQ7wLzAbCdEfGhIjKlM", "Xk9mP2vQ7wLzAbCd")
	noneKept(t, "gh secret set NPM_TOKEN --body Xk9mP2vQ7wLzAbCd12", "Xk9mP2vQ7wLzAbCd12")
	noneKept(t, "setx API_TOKEN Xk9mP2vQ7wLzAbCd12", "Xk9mP2vQ7wLzAbCd12")
	noneKept(t, "echo 'Xk9mP2vQ7wLz!' | docker login ghcr.io -u acme --password-stdin", "Xk9mP2vQ7wLz")
	noneKept(t, "Open https://app.acme.io/auth/magic?t=Xk9mP2vQ7wLzAbCdEfGh12 to sign in", "Xk9mP2vQ7wLzAbCdEfGh12")
	noneKept(t, "Send https://app.acme.io/invite/accept?code=Xk9mP2vQ7wLzAbCd3 to the new hire", "Xk9mP2vQ7wLzAbCd3")
	// The second attack: what the first fixes' exclusions let through again,
	// and more of the same shapes.
	noneKept(t, "ssh into the bastion, then send the logs to jane.doe@acme.com for review.", "jane.doe@acme.com")
	noneKept(t, "rsync -av ./report.pdf backup:/srv && mail -s done jane.doe@gmail.com < /dev/null", "jane.doe@gmail.com")
	noneKept(t, "scp backup.tgz ops@bastion.acme.io:/srv and tell jane.doe@acme.com", "jane.doe@acme.com")
	noneKept(t, "Leaked list: jane.doe@gmail.com:Tr0ub4dor3", "jane.doe@gmail.com")
	noneKept(t, "GITHUB_PAT=8f3a2c9e1b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7", "8f3a2c9e1b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7")
	noneKept(t, "NEW_RELIC_LICENSE=3c9f2a8e1d7b4a60f8e2c9b1d3f5a7c9e1b3d5f7", "3c9f2a8e1d7b4a60f8e2c9b1d3f5a7c9e1b3d5f7")
	noneKept(t, "DIGITALOCEAN_PAT=9b1e4c7a2f8d3e6b0a5c9d2e7f1b4a8c3d6e9f2a5b8c1d4e7f0a3b6c9d2e5f8a", "9b1e4c7a2f8d3e6b0a5c9d2e7f1b4a8c3d6e9f2a5b8c1d4e7f0a3b6c9d2e5f8a")
	noneKept(t, "SPLUNK_HEC=01f3c6a9-4b2e-4d7f-9a1c-8e5b2d7f0c3a", "01f3c6a9-4b2e-4d7f-9a1c-8e5b2d7f0c3a")
	noneKept(t, "DB_PASSWORD=Xk9mP2vQ&Zt=7wLz!", "7wLz")
	noneKept(t, `PGPASSWORD="Tr0ub4&x=dor3Qz"`, "dor3Qz")
	noneKept(t, "The password is -Tr0ub4dor&3x", "Tr0ub4dor")
	noneKept(t, "<ns:password>Xk9mP2vQ7wLz</ns:password>", "Xk9mP2vQ7wLz")
	noneKept(t, "<password><![CDATA[Xk9mP2vQ7wLz]]></password>", "Xk9mP2vQ7wLz")
	noneKept(t, `<property name="hibernate.connection.password">Xk9mP2vQ7wLz</property>`, "Xk9mP2vQ7wLz")
	noneKept(t, `<property name="db.password" value="Xk9mP2vQ7wLz"/>`, "Xk9mP2vQ7wLz")
	noneKept(t, `{"value": "Xk9mP2vQ7wLzAbCd", "name": "DB_PASSWORD"}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, `{'name': 'DB_PASSWORD', 'value': 'Xk9mP2vQ7wLzAbCd'}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, `{"Name": "/prod/db/password", "Type": "SecureString", "Value": "Xk9mP2vQ7wLzAbCd"}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, `{"OptionName": "DB_PASSWORD", "Value": "Xk9mP2vQ7wLzAbCd"}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, `{"ParameterKey": "DbPassword", "ParameterValue": "Xk9mP2vQ7wLzAbCd"}`, "Xk9mP2vQ7wLzAbCd")
	noneKept(t, "ParameterKey=DbPassword,ParameterValue=Xk9mP2vQ7wLzAbCd", "Xk9mP2vQ7wLzAbCd")
	noneKept(t, "setx /M API_TOKEN Xk9mP2vQ7wLzAbCd12", "Xk9mP2vQ7wLzAbCd12")
	noneKept(t, "printf '%s' 'Xk9mP2vQ7wLz!' | docker login ghcr.io -u acme --password-stdin", "Xk9mP2vQ7wLz")
	noneKept(t, "docker login ghcr.io -u acme --password-stdin <<< 'Xk9mP2vQ7wLz!'", "Xk9mP2vQ7wLz")
	noneKept(t, "gh secret set NPM_TOKEN -b'Xk9mP2vQ7wLzAbCd12'", "Xk9mP2vQ7wLzAbCd12")
	noneKept(t, "https://discord.com/api/v10/webhooks/1234567890123456789/"+discord, discord[:16])
	noneKept(t, "https://blog.acme.io/wp-login.php?action=rp&key=Xk9mP2vQ7wLzAbCdEf12&login=jane", "Xk9mP2vQ7wLzAbCdEf12")
	noneKept(t, "https://app.acme.io/join?invite_code=Xk9mP2vQ7wLzAbCdEf12", "Xk9mP2vQ7wLzAbCdEf12")
	noneKept(t, "https://app.acme.io/join?inviteCode=Xk9mP2vQ7wLzAbCdEf12", "Xk9mP2vQ7wLzAbCdEf12")
	noneKept(t, "https://app.acme.io/activate?activation=Xk9mP2vQ7wLzAbCdEf12", "Xk9mP2vQ7wLzAbCdEf12")
	noneKept(t, "postgres://app:Xk9#mP2vQ7wLz@db.internal/app", "mP2vQ7wLz")
}

// What those shapes must not take (a fresh-eye attack's findings): an SSH
// remote or target is no e-mail address; the option after a "password"
// word is the command's; a resource's id, a commit's hash, a setting that
// only names a secret; a URL's host after its credentials, a query's
// other parameters; public keys and fingerprints. And the lookalikes of
// the shapes above: an XML element or a table's row whose name only
// describes a secret, a JSON name/value pair of an ordinary setting, a
// piped variable, a query's ordinary code.
func TestOrdinaryTextBesideSecretShapesIsKept(t *testing.T) {
	t.Parallel()
	allKept(t, "git clone git@github.com:acme/app.git", "git@github.com:acme/app.git")
	allKept(t, "ssh deploy@bastion.acme.io", "deploy@bastion.acme.io")
	allKept(t, "ssh -i ~/.ssh/id_ed25519 ubuntu@ec2-3-120-45-67.eu-central-1.compute.amazonaws.com", "ubuntu@ec2-3-120-45-67")
	allKept(t, "az keyvault secret show --vault-name kv-prod --name DbPassword --query value -o tsv", "--query value")
	allKept(t, "mysql -u root --password --host=db.internal app", "--host=db.internal")
	allKept(t, "AZURE_TENANT=123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000")
	allKept(t, "SENTRY_RELEASE=3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7", "3f2a9c1e5b7d4f60a8e2c9b1d3f5a7c9e1b3d5f7")
	allKept(t, "SUBNET=subnet-0a1b2c3d4e5f67890", "subnet-0a1b2c3d4e5f67890")
	allKept(t, "TOKEN_TTL_SECONDS=86400", "86400")
	allKept(t, "PASSWORD_HASH_ALGORITHM=argon2id", "argon2id")
	allKept(t, "password_hash: argon2id", "argon2id")
	allKept(t, "CACHE_KEY=npm-linux-x64-v3", "npm-linux-x64-v3")
	allKept(t, "git clone https://x-access-token:Xk9mP2vQ7wLzAbCd@github.com/acme/app.git", "github.com/acme/app.git")
	allKept(t, "curl -d 'client_id=app&client_secret=Xk9mP2vQ7wLzAbCd12&grant_type=client_credentials'", "grant_type=client_credentials")
	allKept(t, "Public key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk7c3WUdA2uUfIkqJmL5t+BdQlkD3yV8fMZqTfKJgU2 jane@laptop", "AAAAC3NzaC1lZDI1NTE5AAAAIGk7c3WUdA2uUfIkqJmL5t+BdQlkD3yV8fMZqTfKJgU2")
	allKept(t, "The key fingerprint is SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s.", "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s")
	allKept(t, "Publishable key: pk_live_51HxYzAbCdEfGhIjKlMn0123", "pk_live_51HxYzAbCdEfGhIjKlMn0123")
	allKept(t, "<secretName>prod-db-credentials</secretName>", "prod-db-credentials")
	allKept(t, "<passwordPolicy>Strong</passwordPolicy>", "Strong")
	allKept(t, "| password_min_length | 12 |", "12")
	allKept(t, "| Token | Read-only |", "Read-only")
	allKept(t, `{"name": "LOG_LEVEL", "value": "debug"}`, "debug")
	allKept(t, `{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/db"}`, "/run/secrets/db")
	allKept(t, `echo "$CR_PAT" | docker login ghcr.io -u acme --password-stdin`, "$CR_PAT")
	allKept(t, "https://github.com/login/device?code=WDJB-MJHT", "WDJB-MJHT")
	// The second attack: what the first fixes' rules took.
	allKept(t, "| token_endpoint | https://login.acme.io/oauth2/v2.0/token |", "https://login.acme.io/oauth2/v2.0/token")
	allKept(t, "| secret_name | prod-db-credentials |", "prod-db-credentials")
	allKept(t, "| TOKEN_TTL_SECONDS | 86400s |", "86400s")
	allKept(t, "| CACHE_KEY | npm-linux-x64-v3 |", "npm-linux-x64-v3")
	allKept(t, "secret_name | vault-prod-01", "vault-prod-01")
	allKept(t, "| refresh_token_lifetime | 720h |", "720h")
	allKept(t, "| password_hashing | argon2id |", "argon2id")
	allKept(t, "| token_signing_alg | RS256 |", "RS256")
	allKept(t, "| DB_PASSWORD | prod/db-password |", "prod/db-password")
	allKept(t, "<AccessTokenLifetime>3600</AccessTokenLifetime>", "3600")
	allKept(t, "<tokenLifetime>PT1H</tokenLifetime>", "PT1H")
	allKept(t, `<secretName type="string">prod-db-credentials</secretName>`, "prod-db-credentials")
	allKept(t, `<tokenEndpoint xsi:type="string">https://login.acme.io/oauth2/v2.0/token</tokenEndpoint>`, "https://login.acme.io")
	allKept(t, `{"name": "TOKEN_LIFETIME", "value": "3600"}`, "3600")
	allKept(t, `{"name": "SECRETS_MANAGER_REGION", "value": "eu-west-1"}`, "eu-west-1")
	allKept(t, "https://shop.acme.io/cart?code=SUMMER2024FREESHIP", "SUMMER2024FREESHIP")
	allKept(t, "https://grafana.acme.io/d/abc?t=2024-01-15T10%3A30%3A00Z", "2024-01-15T10%3A30%3A00Z")
	allKept(t, "cat token.txt | base64 -d", "base64")
	allKept(t, "AZURE_SUBSCRIPTION=9f8e7d6c-5b4a-4c3d-9e2f-1a0b9c8d7e6f", "9f8e7d6c-5b4a-4c3d-9e2f-1a0b9c8d7e6f")
}
