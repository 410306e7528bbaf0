package pipeline_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

// An answer that repeats what the recording showed: an e-mail address, a
// live-looking key, a card number, and a name the model marks.
var leakyAnswer = withNodes(`[
  {"id": "login", "type": "task", "label": "Sign in as jane.doe@acme-corp.com", "intent": "i", "context": "00:00:01 Jane Doe signs in", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown",
   "sensitive": [{"value": "Jane Doe", "kind": "name"}, {"value": "jane.doe@acme-corp.com", "kind": "email"}]},
  {"id": "key", "type": "task", "label": "Paste the key", "intent": "Use sk_live_51HxYzAbCdEfGhIjKlMn0123", "context": "card 4242 4242 4242 4242 on file for Jane Doe", "parent_id": "", "timestamp": "", "evidence": "narrated"},
  {"id": "done", "type": "end", "label": "Done", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred"}
]`, `[
  {"source": "login", "target": "key", "condition": "start"},
  {"source": "key", "target": "done", "condition": ""}
]`)

var leakedValues = []string{"jane.doe", "acme-corp", "Jane Doe", "sk_live", "51HxYz", "4242"}

// Nothing of the four values is stored: not in the SOP, not in its
// Markdown, not in metadata; each is a described variable, and the SOP
// still validates (the stand-in's OnStore checks every stored SOP).
func TestNoValueIsStored(t *testing.T) {
	t.Parallel()
	det, err := privacy.NewDetector(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, func(c *pipeline.Config) { c.Privacy = det })
	r.ai.Answer(geminitest.JSON(leakyAnswer))
	id := r.submit(r.video(), nil)
	j := r.finished(id)
	if outcome(j) != done {
		t.Fatalf("%s", deref(j.Error))
	}
	obj, ok := r.fake.Object("videos/" + id.SOPPath())
	if !ok {
		t.Fatal("no SOP")
	}
	stored, _ := os.ReadFile(obj.File)
	doc, err := sop.Load(stored, string(id))
	if err != nil {
		t.Fatal(err)
	}
	md := sop.Markdown(doc, func(sop.Node) string { return "" })
	meta, _ := json.Marshal(j.Metadata)
	for _, v := range leakedValues {
		for what, text := range map[string]string{"SOP": string(stored), "Markdown": string(md), "metadata": string(meta)} {
			if strings.Contains(strings.ToLower(text), strings.ToLower(v)) {
				t.Errorf("%q is in the %s", v, what)
			}
		}
	}
	for _, name := range []string{"EMAIL_1", "NAME_1", "API_KEY_1", "CARD_NUMBER_1"} {
		if doc.Public.Variables[name] == "" {
			t.Errorf("no variable %s: %v", name, doc.Public.Variables)
		}
	}
	if got := doc.Public.Nodes[0].Label; got != "Sign in as {{EMAIL_1}}" {
		t.Errorf("label %q", got)
	}
	privacyMD, _ := json.Marshal(j.Metadata["privacy"])
	if string(privacyMD) != `{"counts":{"api_key":1,"card_number":1,"email":1,"name":1},"sources":{"model":2,"text":2}}` {
		t.Errorf("metadata.privacy %s", privacyMD)
	}
	if timings, _ := j.Metadata["timings"].(map[string]any); timings["redacting_ms"] == nil {
		t.Errorf("no redacting stage in %v", timings)
	}
}

// With RUNOPS_REDACT off the SOP keeps the model's text.
func TestRedactionOff(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Answer(geminitest.JSON(leakyAnswer))
	id := r.submit(r.video(), nil)
	j := r.finished(id)
	obj, _ := r.fake.Object("videos/" + id.SOPPath())
	stored, _ := os.ReadFile(obj.File)
	if outcome(j) != done || !strings.Contains(string(stored), "jane.doe@acme-corp.com") || j.Metadata["privacy"] != nil {
		t.Fatalf("%s; privacy %v", outcome(j), j.Metadata["privacy"])
	}
}
