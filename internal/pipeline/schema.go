package pipeline

import "github.com/runops/runops/internal/sop"

// schema is the JSON Schema of modelSOP, sent as responseJsonSchema. It stays
// flat: nodes name their parent instead of nesting, variables are a list.
var schema = func() map[string]any {
	str := map[string]any{"type": "string"}
	enum := func(values ...string) map[string]any { return map[string]any{"type": "string", "enum": values} }
	obj := func(props map[string]any, required ...string) map[string]any {
		return map[string]any{"type": "object", "properties": props, "required": required}
	}
	list := func(items any) map[string]any { return map[string]any{"type": "array", "items": items} }
	return obj(map[string]any{
		"title": str, "goal": str, "purpose": str, "owners": list(str),
		"triggers": list(obj(map[string]any{"type": enum("manual", "schedule", "event", "email"), "description": str}, "type", "description")),
		"nodes": list(obj(map[string]any{"id": str, "type": enum(sop.NodeTypes...), "label": str, "intent": str, "context": str,
			"parent_id": str, "iterator": str, "exit_condition": str}, "id", "type", "label", "intent", "context", "parent_id")),
		"edges":          list(obj(map[string]any{"source": str, "target": str, "condition": enum(append([]string{""}, sop.Conditions...)...)}, "source", "target", "condition")),
		"variables":      list(obj(map[string]any{"name": str, "description": str}, "name", "description")),
		"clarifications": list(obj(map[string]any{"question": str, "importance": enum(sop.Importances...)}, "question", "importance")),
		"skills":         list(obj(map[string]any{"id": str, "app": str, "method_type": enum("ui", "api"), "performance_hint": str}, "id", "app", "method_type")),
		"steps":          list(obj(map[string]any{"node_id": str, "primary_skill": str}, "node_id", "primary_skill")),
	}, "title", "goal", "purpose", "owners", "triggers", "nodes", "edges", "variables", "clarifications", "skills", "steps")
}()
