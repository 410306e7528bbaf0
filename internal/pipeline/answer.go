package pipeline

import (
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"strings"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

// answer is the model's SOP, checked, and the values it marked as
// personal or secret (never stored), with where each shows on its step's
// screenshot.
type answer struct {
	doc   *sop.Document
	marks []privacy.Mark
	boxes map[string][]box2d // node id → boxes to destroy on its screenshot
}

// box2d is a box in Gemini's convention: [ymin, xmin, ymax, xmax], 0–1000.
type box2d [4]int

// parseBox keeps a box that is inside the picture and not empty.
func parseBox(v []int) (box2d, bool) {
	if len(v) != 4 {
		return box2d{}, false
	}
	b := box2d(v)
	for _, c := range b {
		if c < 0 || c > 1000 {
			return b, false
		}
	}
	return b, b[0] < b[2] && b[1] < b[3]
}

// pixels is the box on a picture of bounds r.
func (b box2d) pixels(r image.Rectangle) image.Rectangle {
	w, h := r.Dx(), r.Dy()
	return image.Rect(r.Min.X+b[1]*w/1000, r.Min.Y+b[0]*h/1000, r.Min.X+(b[3]*w+999)/1000, r.Min.Y+(b[2]*h+999)/1000)
}

// toDocument converts and checks an answer about a recording of the given
// duration: the document, or nil and the problems to send back to the model.
func toDocument(text string, id jobs.ID, duration time.Duration) (answer, string) {
	var m modelSOP
	dec := json.NewDecoder(strings.NewReader(text))
	err := dec.Decode(&m)
	if err == nil {
		if _, next := dec.Token(); next != io.EOF {
			err = errors.New("more follows the JSON object; answer with one object only")
		}
	}
	if err != nil {
		return answer{}, "- the answer is not the JSON the schema asks for: " + err.Error() + "\n"
	}
	var marks []privacy.Mark
	boxes := map[string][]box2d{}
	for _, n := range m.Nodes {
		for _, v := range n.Sensitive {
			marks = append(marks, privacy.Mark{Value: v.Value, Kind: privacy.Kind(v.Kind)})
			if b, ok := parseBox(v.Box); ok {
				boxes[n.ID] = append(boxes[n.ID], b)
			}
		}
	}
	d := &sop.Document{
		Meta:    &sop.Meta{Title: m.Title, Goal: m.Goal, Purpose: m.Purpose, Owner: m.Owners},
		Public:  &sop.Public{Variables: map[string]string{}},
		Private: &sop.Private{},
	}
	var problems []string
	for _, t := range m.Triggers {
		d.Public.Triggers = append(d.Public.Triggers, sop.Trigger{Type: t.Type, Config: t.Config, Description: t.Description})
	}
	for _, n := range m.Nodes {
		node := sop.Node{ID: n.ID, Type: n.Type, Label: n.Label, Intent: n.Intent, Context: n.Context,
			ParentID: n.ParentID, Iterator: n.Iterator, ExitCondition: n.ExitCondition, Timestamp: n.Timestamp, Evidence: n.Evidence}
		// A box outside the picture, empty or inverted is dropped, not drawn.
		if b, ok := parseBox(n.Box); ok && n.Evidence == sop.EvidenceShown {
			node.Highlight = &sop.Highlight{X: float64(b[1]) / 1000, Y: float64(b[0]) / 1000,
				W: float64(b[3]-b[1]) / 1000, H: float64(b[2]-b[0]) / 1000}
		}
		d.Public.Nodes = append(d.Public.Nodes, node)
	}
	for _, e := range m.Edges {
		d.Public.Edges = append(d.Public.Edges, sop.Edge{Source: e.Source, Target: e.Target, Condition: e.Condition})
	}
	for _, v := range m.Variables {
		if _, dup := d.Public.Variables[v.Name]; dup {
			problems = append(problems, fmt.Sprintf("- variables: %q is listed twice", v.Name))
		}
		d.Public.Variables[v.Name] = v.Description
	}
	for i, c := range m.Clarifications {
		d.Public.ClarificationRequests = append(d.Public.ClarificationRequests,
			sop.Clarification{ID: fmt.Sprintf("q%d", i+1), Question: c.Question, Importance: c.Importance})
	}
	for _, s := range m.Skills {
		d.Private.Skills = append(d.Private.Skills, sop.Skill{ID: s.ID, App: s.App, MethodType: s.MethodType, PerformanceHint: s.PerformanceHint})
	}
	for _, s := range m.Steps {
		d.Private.Steps = append(d.Private.Steps, sop.Step{NodeID: s.NodeID, PrimarySkill: s.PrimarySkill})
	}
	sop.Repair(d, string(id))
	found := sop.CheckRecorded(d, duration) // before a context is made to cite its moment
	sop.RepairFlow(d)
	if err := sop.Validate(d); err != nil {
		var inv *sop.Invalid
		if errors.As(err, &inv) {
			found = append(found, inv.Problems...)
		}
	}
	for _, p := range found {
		problems = append(problems, "- "+p.String())
	}
	if len(problems) == 0 {
		// Measured on the document, not the answer: the numbers Repair
		// gives a deep chain of steps grow with the square of its depth.
		// Half of what can be read back: the privacy pass may lengthen it.
		if size := sop.Size(d); size > maxAnswerBytes {
			problems = append(problems, fmt.Sprintf("- the document is %d bytes long; it must stay under %d: fewer steps, shorter texts",
				size, maxAnswerBytes))
		}
	}
	if len(problems) > 0 {
		return answer{marks: marks}, strings.Join(problems, "\n") + "\n" // the marks, to keep them out of the problems
	}
	return answer{d, marks, boxes}, ""
}

// maxAnswerBytes bounds the document an answer makes: half of what the API
// reads back (sop.MaxDocumentBytes), as the privacy pass may lengthen it.
const maxAnswerBytes = sop.MaxDocumentBytes / 2
