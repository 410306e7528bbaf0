// Package soptest checks, in tests, that an SOP document is one the viewer
// renders. Its expectations come from the viewer's side of the contract
// (docs/frontend-contract.md), written out here rather than taken from the
// sop package, so that a wrong assumption in the validator cannot make this
// check agree with it; only the table of printed fields (sop.Printed) is
// shared, because it is the one table of them. For tests only.
package soptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/runops/runops/internal/sop"
)

// What the viewer knows, as the contract states it.
var (
	viewerTriggerTypes = []string{"cron", "manual", "webhook", "event"}
	viewerNodeTypes    = []string{"task", "decision", "loop", "trigger", "end"}
)

// Problems lists every reason the viewer would crash on, or misprint, doc.
func Problems(doc []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	var out []string
	bad := func(at, msg string) { out = append(out, at+": "+msg) }
	root, _ := tree.(map[string]any)
	meta, ok := root["meta"].(map[string]any)
	if !ok {
		bad("meta", "must be an object")
	} else if title, _ := meta["title"].(string); strings.TrimSpace(title) == "" {
		bad("meta.title", "must be non-empty text")
	}
	public, _ := root["public"].(map[string]any)
	for _, name := range []string{"triggers", "nodes", "edges"} {
		if _, ok := public[name].([]any); !ok {
			bad("public."+name, "must be an array")
		}
	}
	for _, path := range sop.Printed {
		sop.Walk(tree, path, func(at string, v any) {
			if _, ok := v.(string); !ok {
				bad(at, "is printed as text but is not a string")
			}
		})
	}
	sop.Walk(tree, "public.triggers[].type", func(at string, v any) {
		if s, _ := v.(string); !slices.Contains(viewerTriggerTypes, s) {
			bad(at, "is not a trigger type the viewer knows")
		}
	})
	sop.Walk(tree, "public.nodes[]", func(at string, v any) {
		n, _ := v.(map[string]any)
		if s, _ := n["type"].(string); !slices.Contains(viewerNodeTypes, s) {
			bad(at+".type", "is not a node type the viewer knows")
		}
		if _, ok := n["id_path"].(string); !ok {
			bad(at+".id_path", "must be a string")
		}
		if _, ok := n["children"].([]any); !ok {
			bad(at+".children", "must be an array")
		}
	})
	return out
}

// Check fails the test when the viewer could not render doc.
func Check(t testing.TB, what string, doc []byte) {
	t.Helper()
	if p := Problems(doc); len(p) > 0 {
		t.Errorf("%s would break the viewer:\n  %s\n%s", what, strings.Join(p, "\n  "), doc)
	}
}

// Inspect returns a hook for supabasetest's OnStore: every SOP document a
// test's code stores (under sops/) must be one the viewer renders.
func Inspect(t testing.TB) func(key, file string) {
	return func(key, file string) {
		if !strings.Contains(key, "/sops/") || !strings.HasSuffix(key, ".json") {
			return
		}
		b, err := os.ReadFile(file)
		if errors.Is(err, fs.ErrNotExist) {
			return // replaced by a newer write meanwhile, which is inspected in turn
		}
		if err != nil {
			t.Errorf("read stored %s: %v", key, err)
			return
		}
		Check(t, "stored "+key, b)
	}
}
