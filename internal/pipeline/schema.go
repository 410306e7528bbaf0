package pipeline

import (
	"reflect"
	"strings"

	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
)

// modelSOP is the flat shape the model answers in (Gemini rejects large
// nested schemas: nodes name their parent instead of nesting, variables are
// a list); toDocument turns it into the viewer's document. The response
// schema is generated from these types, so the two cannot disagree. Tags:
// `schema:"optional"` leaves a field out of required, `schema:"enum=NAME"`
// limits a string to the values enums[NAME].
type modelSOP struct {
	Title          string               `json:"title"`
	Goal           string               `json:"goal"`
	Purpose        string               `json:"purpose"`
	Owners         []string             `json:"owners"`
	Triggers       []modelTrigger       `json:"triggers"`
	Nodes          []modelNode          `json:"nodes"`
	Edges          []modelEdge          `json:"edges"`
	Variables      []modelVariable      `json:"variables"`
	Clarifications []modelClarification `json:"clarifications"`
	Skills         []modelSkill         `json:"skills"`
	Steps          []modelStep          `json:"steps"`
}

type modelTrigger struct {
	Type        string `json:"type" schema:"enum=trigger"`
	Config      string `json:"config"`
	Description string `json:"description"`
}

type modelNode struct {
	ID            string `json:"id"`
	Type          string `json:"type" schema:"enum=node"`
	Label         string `json:"label"`
	Intent        string `json:"intent"`
	Context       string `json:"context"`
	ParentID      string `json:"parent_id"`
	Timestamp     string `json:"timestamp"`
	Evidence      string `json:"evidence" schema:"enum=evidence"`
	Iterator      string `json:"iterator" schema:"optional"`
	ExitCondition string `json:"exit_condition" schema:"optional"`
	// Sensitive lists the personal or secret values the step shows or
	// says: hidden before anything is stored (internal/privacy).
	Sensitive []modelSensitive `json:"sensitive" schema:"optional"`
	// Box is, for a shown step, the element it acts on, on the frame of its
	// second: [ymin, xmin, ymax, xmax], each 0–1000.
	Box []int `json:"box_2d" schema:"optional"`
}

type modelSensitive struct {
	Value string `json:"value"`
	Kind  string `json:"kind" schema:"enum=sensitive"`
	// Box is where the value shows on the step's screenshot, in Gemini's
	// convention: [ymin, xmin, ymax, xmax], each 0–1000.
	Box []int `json:"box_2d" schema:"optional"`
}

type modelEdge struct {
	Source    string `json:"source"`
	Target    string `json:"target"`
	Condition string `json:"condition" schema:"enum=condition"`
}

type modelVariable struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

type modelClarification struct {
	Question   string `json:"question"`
	Importance string `json:"importance" schema:"enum=importance"`
}

type modelSkill struct {
	ID              string `json:"id"`
	App             string `json:"app"`
	MethodType      string `json:"method_type" schema:"enum=method"`
	PerformanceHint string `json:"performance_hint" schema:"optional"`
}

type modelStep struct {
	NodeID       string `json:"node_id"`
	PrimarySkill string `json:"primary_skill"`
}

// enums are the values the viewer accepts; "" is an edge without condition.
var enums = map[string][]string{
	"trigger":    sop.TriggerTypes,
	"node":       sop.NodeTypes,
	"condition":  append([]string{""}, sop.Conditions...),
	"importance": sop.Importances,
	"method":     {"ui", "api"},
	"evidence":   sop.Evidences,
	"sensitive":  sensitiveKinds(),
}

func sensitiveKinds() []string {
	var out []string
	for _, k := range privacy.ModelKinds {
		out = append(out, string(k))
	}
	return out
}

// schema is the JSON Schema of modelSOP, sent as responseJsonSchema.
var schema = jsonSchema(reflect.TypeFor[modelSOP](), "")

// jsonSchema describes t (strings, integers, slices and structs of them:
// all that modelSOP uses); tag is the field's schema tag.
func jsonSchema(t reflect.Type, tag string) map[string]any {
	switch t.Kind() {
	case reflect.String:
		s := map[string]any{"type": "string"}
		for part := range strings.SplitSeq(tag, ",") {
			if name, ok := strings.CutPrefix(part, "enum="); ok {
				values, known := enums[name]
				if !known {
					panic("schema: no enum " + name)
				}
				s["enum"] = values
			}
		}
		return s
	case reflect.Int:
		return map[string]any{"type": "integer"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": jsonSchema(t.Elem(), tag)}
	case reflect.Struct:
		props := map[string]any{}
		required := []string{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			tag := f.Tag.Get("schema")
			props[name] = jsonSchema(f.Type, tag)
			if !strings.Contains(tag, "optional") {
				required = append(required, name)
			}
		}
		return map[string]any{"type": "object", "properties": props, "required": required}
	}
	panic("schema: unsupported type " + t.String())
}
