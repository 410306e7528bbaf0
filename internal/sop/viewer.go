package sop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Printed lists every field the viewer prints as text, as paths into the
// document: "[]" walks each element of an array, "*" each value of an object.
// A field here that holds an object, an array, a number or null crashes the
// viewer (React renders only text there; an object in a trigger's config
// crashed every Flow View once). A field that is absent renders as nothing.
// It is the one table of them: the validator and the tests both walk it.
var Printed = []string{
	"meta.title",
	"meta.goal",
	"meta.purpose",
	"meta.owner[]",
	"public.triggers[].type",
	"public.triggers[].config",
	"public.triggers[].description",
	"public.nodes[].label",
	"public.nodes[].intent",
	"public.nodes[].context",
	"public.nodes[].iterator",
	"public.nodes[].exit_condition",
	"public.nodes[].id_path",
	"public.variables.*",
	"public.clarification_requests[].question",
}

// TriggerTypes are the trigger types the viewer knows: cron (config: a cron
// expression or RRULE), manual (config ""), webhook (config: the endpoint)
// and event (config: the signal).
var TriggerTypes = []string{"cron", "manual", "webhook", "event"}

// legacyTriggerTypes maps the types earlier prompts asked for onto the
// viewer's; any other unknown type becomes manual.
var legacyTriggerTypes = map[string]string{"schedule": "cron", "email": "event"}

// Walk calls fn for every value the path names in a decoded JSON tree, with
// the concrete location ("public.nodes[2].label"). Absent fields and parts of
// the tree that are not the expected object or array are skipped: the
// document's shape is the validator's business, not the walk's.
func Walk(tree any, path string, fn func(at string, v any)) {
	walk(tree, strings.Split(path, "."), "", fn)
}

func walk(v any, steps []string, at string, fn func(string, any)) {
	if len(steps) == 0 {
		fn(at, v)
		return
	}
	step, rest := steps[0], steps[1:]
	name, each := strings.CutSuffix(step, "[]")
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	if name == "*" {
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			walk(obj[k], rest, join(at, k), fn)
		}
		return
	}
	child, present := obj[name]
	if !present {
		return
	}
	if !each {
		walk(child, rest, join(at, name), fn)
		return
	}
	list, _ := child.([]any)
	for i, el := range list {
		walk(el, rest, fmt.Sprintf("%s[%d]", join(at, name), i), fn)
	}
}

func join(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

// printedProblems reports every printed field of a decoded tree that is not
// a string.
func printedProblems(tree any) []Problem {
	var out []Problem
	for _, path := range Printed {
		Walk(tree, path, func(at string, v any) {
			if _, ok := v.(string); !ok {
				out = append(out, Problem{Path: at, Message: "must be text (a string), not " + jsonKind(v)})
			}
		})
	}
	return out
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

func decodeTree(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, &Invalid{Problems: []Problem{jsonProblem(err)}}
	}
	if dec.More() {
		return nil, errExtraData
	}
	return tree, nil
}

// repairTriggers mends, in a decoded tree, the triggers of documents written
// before triggers were typed as the viewer types them: a config that is not
// text becomes "" (a number or boolean its text), and a type the viewer does
// not know becomes the nearest one it does.
// ourExtras are the text fields we add to nodes, which the viewer ignores
// (as it does highlight, a box): a value that is not text there (someone
// else's extension, a hand edit) is dropped, as is a highlight that is not
// one, rather than making the whole document unreadable.
var ourExtras = []string{"timestamp", "evidence", "screenshot"}

func dropForeignExtras(tree any) {
	Walk(tree, "public.nodes[]", func(_ string, v any) {
		n, _ := v.(map[string]any)
		for _, k := range ourExtras {
			if _, isText := n[k].(string); !isText {
				delete(n, k)
			}
		}
		if h, ok := n["highlight"]; ok && !highlightShape(h) {
			delete(n, "highlight")
		}
	})
}

// highlightShape tells whether v is a highlight as we write them: an
// object of four numbers x, y, w, h, a box inside the picture.
func highlightShape(v any) bool {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 4 {
		return false
	}
	var f [4]float64
	for i, k := range []string{"x", "y", "w", "h"} {
		num, ok := m[k].(json.Number)
		if !ok {
			return false
		}
		x, err := num.Float64()
		if err != nil {
			return false
		}
		f[i] = x
	}
	return Highlight{f[0], f[1], f[2], f[3]}.Valid()
}

func repairTriggers(tree any) {
	Walk(tree, "public.triggers[]", func(_ string, v any) {
		t, ok := v.(map[string]any)
		if !ok {
			return
		}
		switch c := t["config"].(type) {
		case string:
		case json.Number:
			t["config"] = c.String()
		case bool:
			t["config"] = fmt.Sprint(c)
		default: // an object, an array, null or absent
			t["config"] = ""
		}
		typ, _ := t["type"].(string)
		if !slices.Contains(TriggerTypes, typ) {
			if mapped, ok := legacyTriggerTypes[strings.ToLower(typ)]; ok {
				t["type"] = mapped
			} else {
				t["type"] = "manual"
			}
		}
	})
}

// Load reads a document that was stored earlier or that a person supplies,
// and makes it one the viewer renders: the mechanical repairs (legacy
// triggers, then Repair), then the viewer's checks — every printed field is
// text and the graph holds (Validate). What a trigger's config says, and
// fields the viewer ignores, are never a reason to refuse it (unknown fields
// are dropped). The error is *Invalid.
func Load(data []byte, jobID string) (*Document, error) {
	tree, err := decodeTree(data)
	if err != nil {
		return nil, err
	}
	repairTriggers(tree)
	dropForeignExtras(tree)
	if problems := printedProblems(tree); len(problems) > 0 {
		return nil, &Invalid{Problems: problems}
	}
	repaired, err := json.Marshal(tree)
	if err != nil {
		return nil, &Invalid{Problems: []Problem{{Path: "$", Message: err.Error()}}}
	}
	d, err := Parse(repaired)
	if err != nil {
		return nil, err
	}
	Repair(d, jobID)
	if err := Validate(d); err != nil {
		return nil, err
	}
	return d, nil
}

// Served is the document GET /api/sop serves for stored bytes: loaded
// (Load) and written again (Marshal). Its entity tag is what every writer
// of an SOP records (jobs.ETag of these bytes).
func Served(stored []byte, jobID string) ([]byte, *Document, error) {
	d, err := Load(stored, jobID)
	if err != nil {
		return nil, nil, err
	}
	b, err := Marshal(d)
	return b, d, err
}

// Unshown lists, as paths, the objects of a job's screenshots folder
// (names, as listed in folder) that the document does not show: those of
// steps it no longer has.
func Unshown(d *Document, folder string, names []string) []string {
	shown := map[string]bool{}
	for _, n := range d.Public.Nodes {
		shown[n.Screenshot] = n.Screenshot != ""
	}
	var out []string
	for _, name := range names {
		if path := folder + "/" + name; !shown[path] {
			out = append(out, path)
		}
	}
	return out
}

// Shown lists the nodes whose screenshot the document names.
func Shown(d *Document) []string {
	var out []string
	for _, n := range d.Public.Nodes {
		if n.Screenshot != "" {
			out = append(out, n.ID)
		}
	}
	return out
}
