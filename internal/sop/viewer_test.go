package sop_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/sop/soptest"
)

const jobID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

func TestSampleRendersInTheViewer(t *testing.T) {
	raw, _ := os.ReadFile("../../docs/sample-sop.json")
	soptest.Check(t, "the sample", raw)
	d, err := sop.Load(raw, jobID)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := sop.Marshal(d)
	soptest.Check(t, "the loaded sample", out)
	types := map[string]bool{}
	for _, tr := range d.Public.Triggers {
		types[tr.Type] = true
	}
	if len(types) < 3 {
		t.Fatalf("the sample should show several trigger types: %v", types)
	}
}

// setFirst replaces the first value a sop.Printed path names.
func setFirst(t *testing.T, tree any, path string, v any) {
	t.Helper()
	steps := strings.Split(path, ".")
	cur := tree
	for i, step := range steps {
		obj := cur.(map[string]any)
		name, each := strings.CutSuffix(step, "[]")
		last := i == len(steps)-1
		if name == "*" {
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			name = keys[0]
		}
		switch {
		case each && last:
			obj[name].([]any)[0] = v
			return
		case each:
			cur = obj[name].([]any)[0]
		case last:
			obj[name] = v
			return
		default:
			cur = obj[name]
		}
	}
}

// Every field the viewer prints, set to something that is not text, is
// refused on read and named — except a trigger's config, which is repaired.
func TestPrintedFieldsMustBeText(t *testing.T) {
	raw, _ := os.ReadFile("../../docs/sample-sop.json")
	for _, path := range sop.Printed {
		for _, bad := range []string{`{}`, `7`, `null`, `["x"]`, `true`} {
			t.Run(path+"="+bad, func(t *testing.T) {
				var tree any
				if err := json.Unmarshal(raw, &tree); err != nil {
					t.Fatal(err)
				}
				var v any
				_ = json.Unmarshal([]byte(bad), &v)
				setFirst(t, tree, path, v)
				doc, _ := json.Marshal(tree)
				if len(soptest.Problems(doc)) == 0 {
					t.Fatalf("the viewer check accepts %s", doc)
				}
				d, err := sop.Load(doc, jobID)
				if path == "public.triggers[].config" || path == "public.triggers[].type" {
					if err != nil {
						t.Fatalf("a trigger's %s is repaired, not refused: %v", path, err)
					}
					out, _ := sop.Marshal(d)
					soptest.Check(t, "the repaired document", out)
					return
				}
				inv, ok := err.(*sop.Invalid)
				if !ok {
					t.Fatalf("loaded (%v)", err)
				}
				want := strings.NewReplacer("[]", "[0]", "*", "amount").Replace(path)
				if !slices.ContainsFunc(inv.Problems, func(p sop.Problem) bool { return p.Path == want }) {
					t.Fatalf("problems %v do not name %s", inv.Problems, want)
				}
			})
		}
	}
}

// A document stored by an earlier version (config {} or null, trigger types
// of the first prompt) is served repaired.
func TestLoadRepairsLegacyTriggers(t *testing.T) {
	raw, err := os.ReadFile("testdata/legacy-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(soptest.Problems(raw)) == 0 {
		t.Fatal("the legacy sample does not show the old bug")
	}
	if _, err := sop.Parse(raw); err == nil {
		t.Fatal("strict parsing accepts an object config")
	}
	d, err := sop.Load(raw, jobID)
	if err != nil {
		t.Fatal(err)
	}
	var types, configs []string
	for _, tr := range d.Public.Triggers {
		types, configs = append(types, tr.Type), append(configs, tr.Config)
	}
	if strings.Join(types, ",") != "manual,cron,event,manual" || strings.Join(configs, ",") != ",,," {
		t.Fatalf("types %v configs %q", types, configs)
	}
	out, _ := sop.Marshal(d)
	soptest.Check(t, "the repaired legacy document", out)
	if d.Meta.ID != jobID {
		t.Fatal(d.Meta.ID)
	}
}

// What the viewer ignores, and what a trigger's config says, never make a
// document unreadable.
func TestLoadIsLenientWhereTheViewerIs(t *testing.T) {
	raw, _ := os.ReadFile("../../docs/sample-sop.json")
	var tree map[string]any
	_ = json.Unmarshal(raw, &tree)
	public := tree["public"].(map[string]any)
	public["triggers"] = []any{map[string]any{"type": "cron", "config": "whenever it rains", "description": "d"},
		map[string]any{"type": "webhook", "config": 42, "description": "d"}}
	node := public["nodes"].([]any)[0].(map[string]any)
	node["screenshot"] = map[string]any{"path": "frames/x.jpg", "w": 1280}
	delete(node, "intent")
	tree["extra"] = []any{1, 2}
	doc, _ := json.Marshal(tree)
	d, err := sop.Load(doc, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Public.Triggers[0].Config != "whenever it rains" || d.Public.Triggers[1].Config != "42" {
		t.Fatalf("%+v", d.Public.Triggers)
	}
	if d.Public.Nodes[0].Screenshot != "" || d.Public.Nodes[1].Screenshot != "" {
		// Someone else's screenshot object is dropped, and so is a path of
		// another job's folder (the sample's own id is not jobID).
		t.Fatalf("screenshots %q, %q", d.Public.Nodes[0].Screenshot, d.Public.Nodes[1].Screenshot)
	}
	for _, bad := range []string{`not json`, `[]`, `{"meta":{"title":"x"}} {}`, `{"meta":{"title":"x"},"public":{"nodes":{}}}`} {
		if _, err := sop.Load([]byte(bad), jobID); err == nil {
			t.Errorf("%s loaded", bad)
		} else if _, ok := err.(*sop.Invalid); !ok {
			t.Errorf("%s: %T %v", bad, err, err)
		}
	}
}

// A node's highlight — an object, which the viewer ignores — survives a
// load and a write; one that is not a box inside the picture is dropped,
// not a reason to refuse the document.
func TestLoadKeepsTheHighlight(t *testing.T) {
	raw, _ := os.ReadFile("../../docs/sample-sop.json")
	var tree map[string]any
	_ = json.Unmarshal(raw, &tree)
	nodes := tree["public"].(map[string]any)["nodes"].([]any)
	nodes[0].(map[string]any)["highlight"] = map[string]any{"x": 0.25, "y": 0.5, "w": 0.125, "h": 0.0625}
	for i, bad := range []any{"a string", map[string]any{"x": 0.9, "y": 0.1, "w": 0.2, "h": 0.1},
		map[string]any{"x": 0.1, "y": 0.1, "w": 0, "h": 0.1}, map[string]any{"x": "0.1", "y": 0.1, "w": 0.1, "h": 0.1}} {
		nodes[1+i%3].(map[string]any)["highlight"] = bad
	}
	doc, _ := json.Marshal(tree)
	d, err := sop.Load(doc, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if h := d.Public.Nodes[0].Highlight; h == nil || *h != (sop.Highlight{X: 0.25, Y: 0.5, W: 0.125, H: 0.0625}) {
		t.Fatalf("highlight %+v", h)
	}
	for _, n := range d.Public.Nodes[1:] {
		if n.Highlight != nil {
			t.Errorf("%s keeps a highlight that is not one: %+v", n.ID, n.Highlight)
		}
	}
	out, err := sop.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := sop.Load(out, jobID); err != nil || again.Public.Nodes[0].Highlight == nil ||
		*again.Public.Nodes[0].Highlight != *d.Public.Nodes[0].Highlight {
		t.Fatalf("written and read again: %v\n%s", err, out)
	}
	soptest.Check(t, "an SOP with a highlight", out)
}
