package privacytest

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/runops/runops/internal/geminitest"
)

// node is a step of the model's answer, in the response schema's fields.
type node struct {
	ID        string      `json:"id"`
	Type      string      `json:"type"`
	Label     string      `json:"label"`
	Intent    string      `json:"intent"`
	Context   string      `json:"context"`
	ParentID  string      `json:"parent_id"`
	Timestamp string      `json:"timestamp"`
	Evidence  string      `json:"evidence"`
	Sensitive []sensitive `json:"sensitive,omitempty"`
}

type sensitive struct {
	Value string `json:"value"`
	Kind  string `json:"kind"`
	Box   []int  `json:"box_2d,omitempty"`
}

type edge struct {
	Source    string `json:"source"`
	Target    string `json:"target"`
	Condition string `json:"condition"`
}

// ModelNodes is the nodes (a JSON array) of the answer of a careless
// model about a recording of screens: a shown task per screen at its
// second whose label, intent and context repeat every value of the
// screen (a wrapped key's parts each on its own, a key block's first
// body line alone and the whole block, an address over its lines), a
// second shown step at the first screen's second, and an end. The
// names, addresses and phones it marks, with the kind and the box the
// model gives them; the rest it does not mark.
func ModelNodes(screens []Screen) string { return marshal(nodes(screens)) }

// ModelEdges is the edges (a JSON array) that go with ModelNodes: from
// one step to the next, the first a start.
func ModelEdges(screens []Screen) string {
	ns := nodes(screens)
	var es []edge
	for i := 1; i < len(ns); i++ {
		cond := ""
		if i == 1 {
			cond = "start"
		}
		es = append(es, edge{ns[i-1].ID, ns[i].ID, cond})
	}
	return marshal(es)
}

// ModelAnswer is a whole answer with ModelNodes and ModelEdges:
// geminitest.SampleSOP with its nodes, edges and steps replaced, for the
// service's stand-in model to give.
func ModelAnswer(screens []Screen) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(geminitest.SampleSOP), &m); err != nil {
		panic(err)
	}
	var n, e any
	if err := json.Unmarshal([]byte(ModelNodes(screens)), &n); err != nil {
		panic(err)
	}
	if err := json.Unmarshal([]byte(ModelEdges(screens)), &e); err != nil {
		panic(err)
	}
	m["nodes"], m["edges"], m["steps"] = n, e, []any{}
	return marshal(m)
}

// marshal is v in JSON, its values as they are (no HTML escapes: a
// password's & stays an &).
func marshal(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Timestamp is second as the model writes it: HH:MM:SS.
func Timestamp(second int) string {
	return fmt.Sprintf("%02d:%02d:%02d", second/3600, second/60%60, second%60)
}

func nodes(screens []Screen) []node {
	var out []node
	for _, s := range screens {
		ts := Timestamp(s.Second)
		var said []string
		var blocks []string
		var marks []sensitive
		for _, v := range s.Values {
			said = append(said, phrase(s, v))
			if strings.Contains(v.Text, "\n") {
				blocks = append(blocks, v.Text)
			}
			if v.Marked {
				marks = append(marks, sensitive{Value: strings.Join(strings.Fields(v.Text), " "), Kind: v.Mark, Box: box2D(s, v)})
			}
		}
		n := node{ID: s.Name, Type: "task", Label: s.Title, Intent: "i", Context: ts + " " + s.Title,
			Timestamp: ts, Evidence: "shown", Sensitive: marks}
		if len(said) > 0 {
			n.Label = s.Title + ": " + said[0]
			n.Intent = capital(strings.Join(said[1:], "; "))
			if n.Intent == "" {
				n.Intent = "Keep it at hand"
			}
		}
		if len(blocks) > 0 {
			n.Context += ", as shown:\n" + strings.Join(blocks, "\n\n")
		}
		out = append(out, n)
		if len(out) == 1 && len(s.Values) > 0 {
			// A second step at the same second, repeating the screen's
			// last value.
			last := s.Values[len(s.Values)-1]
			out = append(out, node{ID: s.Name + "-check", Type: "task", Label: "Check the details: " + phrase(s, last),
				Intent: "Nothing is missing", Context: ts + " the same screen", Timestamp: ts, Evidence: "shown"})
		}
	}
	return append(out, node{ID: "done", Type: "end", Label: "Done", Intent: "The procedure is complete", Evidence: "inferred"})
}

// phrase is how a careless model repeats v, shown on s.
func phrase(s Screen, v Value) string {
	switch v.Kind {
	case "name":
		return v.Text + " is the account holder"
	case "email":
		if s.Name == "signin" {
			return "sign in as " + v.Text
		}
		return "send the receipt to " + v.Text
	case "phone":
		return "call " + v.Text + " if anything fails"
	case "address":
		return "the address is " + v.Text
	case "card":
		return "check that the card " + v.Text + " is on file"
	case "iban":
		return "confirm the IBAN " + v.Text
	case "password":
		return "type the password " + v.Text
	case "db_url":
		return "run " + strings.TrimPrefix(v.Shown, prompt)
	case "bearer":
		return "send the header Authorization: Bearer " + v.Text
	case "aws_id":
		return "set aws_access_key_id to " + v.Text
	case "aws_secret":
		return "the next line reads " + v.Text
	case "pem", "openssh":
		return "the key's body begins " + v.Pieces[0]
	}
	if len(v.Pieces) > 1 {
		s := "paste the key " + v.Pieces[0]
		for _, p := range v.Pieces[1:] {
			s += "; the key continues " + p
		}
		return s
	}
	return "paste " + v.Text + " into the Key field"
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// box2D is where v is on its screen in Gemini's convention: [ymin, xmin,
// ymax, xmax], each 0–1000, padded a little as models do.
func box2D(s Screen, v Value) []int {
	r := v.Box
	pad := 4
	clamp := func(n int) int { return max(0, min(1000, n)) }
	return []int{
		clamp((r.Min.Y - pad) * 1000 / s.Height), clamp((r.Min.X - pad) * 1000 / s.Width),
		clamp((r.Max.Y + pad) * 1000 / s.Height), clamp((r.Max.X + pad) * 1000 / s.Width),
	}
}
