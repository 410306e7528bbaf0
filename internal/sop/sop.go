// Package sop is the SOP document the viewer renders (docs/frontend-contract.md): its
// types, the mechanical repairs we allow ourselves, and the validator that
// catches everything the viewer would crash on or silently drop. The worker
// and the SOP API both use it. It must not do I/O.
package sop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Document is an SOP.
type Document struct {
	Meta    *Meta    `json:"meta"`
	Public  *Public  `json:"public"`
	Private *Private `json:"private"`
}

// Meta describes the procedure.
type Meta struct {
	ID      string   `json:"id"`
	Title   string   `json:"title"`
	Version string   `json:"version"`
	Goal    string   `json:"goal"`
	Purpose string   `json:"purpose"`
	Owner   []string `json:"owner"`
}

// Public is what the viewer shows.
type Public struct {
	Triggers              []Trigger         `json:"triggers"`
	Nodes                 []Node            `json:"nodes"`
	Edges                 []Edge            `json:"edges"`
	Variables             map[string]string `json:"variables"`
	ClarificationRequests []Clarification   `json:"clarification_requests"`
}

// Trigger starts the procedure. Type is one of TriggerTypes; Config is text
// the viewer prints (a cron expression, an endpoint, a signal, or "").
type Trigger struct {
	Type        string `json:"type"`
	Config      string `json:"config"`
	Description string `json:"description"`
}

// Node is a step of the procedure.
type Node struct {
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Label         string    `json:"label"`
	Intent        string    `json:"intent"`
	Context       string    `json:"context"`
	Position      *Position `json:"position,omitempty"`
	Iterator      string    `json:"iterator,omitempty"`
	ExitCondition string    `json:"exit_condition,omitempty"`
	Children      []string  `json:"children"`
	ParentID      string    `json:"parentId,omitempty"`
	IDPath        string    `json:"id_path"`
	// Our own additions, which the viewer ignores: where the step is shown
	// in the recording (HH:MM:SS), whether it was shown, only narrated or
	// inferred (Evidences), and its screenshot's object path in the bucket
	// (frames/<jobId>/<nodeId>.jpg).
	Timestamp  string `json:"timestamp,omitempty"`
	Evidence   string `json:"evidence,omitempty"`
	Screenshot string `json:"screenshot,omitempty"`
	// Highlight is where the step acts on its screenshot (the element
	// clicked or typed into), outlined on the picture.
	Highlight *Highlight `json:"highlight,omitempty"`
}

// Highlight is a box on a step's screenshot, in fractions of the picture
// (0–1 from its top left corner).
type Highlight struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
	W float64 `json:"w"`
	H float64 `json:"h"`
}

// Valid tells whether the box is inside the picture and not empty.
func (h Highlight) Valid() bool {
	const slack = 1e-9
	return h.X >= 0 && h.Y >= 0 && h.W > 0 && h.H > 0 && h.X+h.W <= 1+slack && h.Y+h.H <= 1+slack
}

// Position places a node in the flow view.
type Position struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Edge links two nodes.
type Edge struct {
	Source       string `json:"source"`
	Target       string `json:"target"`
	Condition    string `json:"condition,omitempty"`
	DecisionPath string `json:"decision_path,omitempty"`
}

// Clarification is a question the model could not answer from the video.
type Clarification struct {
	ID         string `json:"id"`
	Question   string `json:"question"`
	Importance string `json:"importance"`
}

// Private is what automation would need.
type Private struct {
	Skills    []Skill `json:"skills"`
	Steps     []Step  `json:"steps"`
	Artifacts []any   `json:"artifacts"`
}

// Skill is a way of doing a step in an app.
type Skill struct {
	ID              string   `json:"id"`
	App             string   `json:"app"`
	MethodType      string   `json:"method_type"`
	PerformanceHint string   `json:"performance_hint,omitempty"`
	VariablesIn     []string `json:"variables_in,omitempty"`
	VariablesOut    []string `json:"variables_out,omitempty"`
}

// Step ties a node to its skills.
type Step struct {
	NodeID       string   `json:"node_id"`
	PrimarySkill string   `json:"primary_skill"`
	AltSkills    []string `json:"alt_skills,omitempty"`
}

// Node types, edge conditions and importances the viewer knows.
var (
	NodeTypes   = []string{"task", "decision", "loop", "trigger", "end"}
	Conditions  = []string{"start", "yes", "no", "next", "all_processed"}
	Importances = []string{"high", "medium", "low"}
	// Evidences say how a step is known: seen on screen, only said, or
	// concluded by the model from neither.
	Evidences = []string{EvidenceShown, "narrated", "inferred"}
)

// EvidenceShown marks a step seen on screen: it has a timestamp, and a screenshot.
const EvidenceShown = "shown"

// MaxDocumentBytes bounds a stored SOP document: what is read back from
// storage, and so what an edit may make of it.
const MaxDocumentBytes = 10 << 20

// ParseTimestamp reads HH:MM:SS (minutes and seconds below 60).
func ParseTimestamp(s string) (time.Duration, bool) {
	if len(s) != 8 || s[2] != ':' || s[5] != ':' {
		return 0, false
	}
	var parts [3]int
	for i := range parts {
		a, b := s[3*i], s[3*i+1]
		if a < '0' || a > '9' || b < '0' || b > '9' {
			return 0, false
		}
		parts[i] = int(a-'0')*10 + int(b-'0')
	}
	if parts[1] > 59 || parts[2] > 59 {
		return 0, false
	}
	return time.Duration(parts[0])*time.Hour + time.Duration(parts[1])*time.Minute + time.Duration(parts[2])*time.Second, true
}

// Problem is one reason a document is refused.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Invalid lists every problem of a document.
type Invalid struct{ Problems []Problem }

func (e *Invalid) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid SOP: " + strings.Join(parts, "; ")
}

// Parse reads a document; a JSON or type error is reported as *Invalid.
func Parse(data []byte) (*Document, error) {
	var d Document
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		return nil, &Invalid{Problems: []Problem{jsonProblem(err)}}
	}
	if dec.More() {
		return nil, errExtraData
	}
	return &d, nil
}

var errExtraData = &Invalid{Problems: []Problem{{Path: "$", Message: "extra data after the document"}}}

func jsonProblem(err error) Problem {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		path := te.Field
		if path == "" {
			path = "$"
		}
		return Problem{Path: path, Message: fmt.Sprintf("must be %s, not %s", kind(te.Type.Kind().String()), te.Value)}
	}
	return Problem{Path: "$", Message: "not valid JSON: " + err.Error()}
}

func kind(k string) string {
	switch k {
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	case "float64", "int":
		return "a number"
	}
	return "a " + k
}

// Marshal writes the document as the viewer reads it. A document longer
// than MaxDocumentBytes is a *TooLarge: stored, it could not be read back.
func Marshal(d *Document) ([]byte, error) {
	b, err := marshal(d)
	if err == nil && len(b) > MaxDocumentBytes {
		return nil, &TooLarge{Size: len(b)}
	}
	return b, err
}

func marshal(d *Document) ([]byte, error) { return json.MarshalIndent(d, "", "  ") }

// TooLarge is a document longer than MaxDocumentBytes, written out.
type TooLarge struct{ Size int }

func (e *TooLarge) Error() string {
	return fmt.Sprintf("the SOP is %d bytes; at most %d can be read back", e.Size, MaxDocumentBytes)
}

// Size is the length of the document as Marshal writes it, however long.
func Size(d *Document) int {
	b, _ := marshal(d)
	return len(b)
}
