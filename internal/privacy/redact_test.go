package privacy_test

import (
	"encoding/json"
	"image"
	"os"
	"path/filepath"
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

// shapes are the texts of testdata/shapes.json: secrets in the shapes
// configs, consoles and command lines show them, each to be replaced, and
// ordinary texts beside those shapes, a part of each to be kept.
func shapes(t *testing.T) (secrets, ordinary []struct{ Text, Secret, Kept string }) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "shapes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Secrets, Ordinary []struct{ Text, Secret, Kept string }
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Secrets) == 0 || len(f.Ordinary) == 0 {
		t.Fatal("testdata/shapes.json holds no texts")
	}
	return f.Secrets, f.Ordinary
}

// Secrets in the shapes configs, consoles and command lines show them
// beyond a name and its operator (two fresh-eye attacks' findings): an XML
// element, a JSON name/value pair, a table's row between bars, a Discord
// webhook's URL, the argument after a secret's name or option, a value
// piped to --password-stdin, a Docker Hub token alone, a one-time link;
// and what the exclusions below must not let through (an e-mail on a line
// that begins with ssh, a hex token under a plain name).
func TestSecretsInMoreShapesAreReplaced(t *testing.T) {
	t.Parallel()
	secrets, _ := shapes(t)
	r := privacy.NewRedactor(detector(t), nil)
	for _, c := range secrets {
		if got := r.Text(c.Text); c.Secret == "" || strings.Contains(got, c.Secret) {
			t.Errorf("%q is kept in %q", c.Secret, got)
		}
	}
}

// What those shapes must not take (two fresh-eye attacks' findings): an
// SSH remote or target is no e-mail address; the option after a
// "password" word is the command's; a resource's id, a commit's hash, a
// setting that only names a secret; a URL's host after its credentials, a
// query's other parameters; public keys and fingerprints; a table's or an
// element's name that only describes a secret, a secret store's path, a
// promo code.
func TestOrdinaryTextBesideSecretShapesIsKept(t *testing.T) {
	t.Parallel()
	_, ordinary := shapes(t)
	r := privacy.NewRedactor(detector(t), nil)
	for _, c := range ordinary {
		if got := r.Text(c.Text); c.Kept == "" || !strings.Contains(got, c.Kept) {
			t.Errorf("%q of %q is replaced: %q", c.Kept, c.Text, got)
		}
	}
}
