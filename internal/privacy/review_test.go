package privacy_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

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

// More of the forms a secret takes in text: names that end in _PASS, a
// password in a sentence, a mysql client's -p, a session cookie, labels in
// other languages and full-width colons; a repository's gitleaks:allow
// comment does not hide a key from the recording.
func TestMoreFormsOfSecrets(t *testing.T) {
	t.Parallel()
	d := detector(t)
	for text, want := range map[string]string{
		"DB_PASS=Tr0ub4dor&3":                                "Tr0ub4dor&3",
		"SMTP_PASS=hunter2hunter2":                           "hunter2hunter2",
		"The password is Xy7kq2Lm9.":                         "Xy7kq2Lm9",
		"mysql -u root -pXy7kq2Lm9 app":                      "Xy7kq2Lm9",
		"Cookie: sessionid=8h3k2l1m0n9b8v7c6x5z4a3s2d1f0g9h": "8h3k2l1m0n9b8v7c6x5z4a3s2d1f0g9h",
		"Passwort: Geheim123!":                               "Geheim123!",
		"Mot de passe : Xy7!kqLm":                            "Xy7!kqLm",
		"パスワード: Xy7kq2Lm9":                                   "Xy7kq2Lm9",
		"PASSWORD：Xy7kq2Lm9":                                 "Xy7kq2Lm9",
		`client = Stripe::StripeClient.new("` + stripe + `") # gitleaks:allow`: stripe,
	} {
		if got := found(t, d, text); len(got) != 1 || !strings.HasSuffix(got[0], ":"+want) {
			t.Errorf("%q: found %q; want %q", text, got, want)
		}
	}
}

// Sentences of an SOP that name a secret without showing one, runs of
// years, share links: nothing is found.
func TestProseIsNotASecret(t *testing.T) {
	t.Parallel()
	d := detector(t)
	for _, text := range []string{
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
		"Revenue by year: 2015 2016 2017 2018",
		"Revenue by year: 2023 2024 2025 2026",
		"Compare the columns\n2023\n2024\n2025\n2026\nand export.",
		"Open https://docs.google.com/document/d/1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms/edit to read it.",
		"https://portal.azure.com/#@acme.onmicrosoft.com/resource/subscriptions/123e4567-e89b-12d3-a456-426614174000/resourceGroups/rg-prod/overview",
	} {
		if got := found(t, d, text); len(got) != 0 {
			t.Errorf("%q: found %q", text, got)
		}
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
	for _, c := range [][2]string{
		{"Sam schedules the backup to run at 5AM every day.", "{{NAME_1}} schedules the backup to run at 5AM every day."},
		{"Ali selects all rows, then clicks Delete all.", "{{NAME_2}} selects all rows, then clicks Delete all."},
		{"Bob sets the bitrate to 808 kbps.", "{{NAME_3}} sets the bitrate to 808 kbps."},
		{"请联系王伟，然后把报告发给他。", "请联系{{NAME_4}}，然后把报告发给他。"},
		{"Call 415-555-0132 or (415) 555 0132.", "Call {{PHONE_1}} or {{PHONE_1}}."},
	} {
		if got := r.Text(c[0]); got != c[1] {
			t.Errorf("%q:\n got %q\nwant %q", c[0], got, c[1])
		}
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
