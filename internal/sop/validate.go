package sop

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/runops/runops/internal/jobs"
)

var semver = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// Repair makes the changes where nothing is in doubt: meta.id is the job id,
// meta.version is SemVer, absent arrays and maps are present, the missing side
// of a parent/child relation is added, and id_path is numbered where it is
// missing. A conflict is never repaired: Validate reports it.
func Repair(d *Document, jobID string) {
	if d.Meta != nil {
		d.Meta.ID = jobID
		if !semver.MatchString(d.Meta.Version) {
			d.Meta.Version = "1.0.0"
		}
		d.Meta.Owner = orEmpty(d.Meta.Owner)
	}
	if d.Public == nil {
		d.Public = &Public{}
	}
	p := d.Public
	p.Triggers, p.Nodes, p.Edges = orEmpty(p.Triggers), orEmpty(p.Nodes), orEmpty(p.Edges)
	p.ClarificationRequests = orEmpty(p.ClarificationRequests)
	if p.Variables == nil {
		p.Variables = map[string]string{}
	}
	if d.Private == nil {
		d.Private = &Private{}
	}
	d.Private.Skills, d.Private.Steps, d.Private.Artifacts = orEmpty(d.Private.Skills), orEmpty(d.Private.Steps), orEmpty(d.Private.Artifacts)

	index := map[string]int{}
	for i := range p.Nodes {
		p.Nodes[i].Children = orEmpty(p.Nodes[i].Children)
		// A screenshot is this job's frame of this node or none: a document
		// made for another job (the sample, a copy) names frames that are
		// not this job's.
		if n := &p.Nodes[i]; n.Screenshot != "" && n.Screenshot != framePath(jobID, n.ID) {
			n.Screenshot = ""
		}
		if _, dup := index[p.Nodes[i].ID]; !dup {
			index[p.Nodes[i].ID] = i
		}
	}
	// A child that names its parent is listed by it, and the other way round,
	// unless that would contradict what the document already says.
	for i := range p.Nodes {
		n := &p.Nodes[i]
		if pi, ok := index[n.ParentID]; ok && n.ParentID != "" && !slices.Contains(p.Nodes[pi].Children, n.ID) && parentsOf(p.Nodes, n.ID) == 0 {
			p.Nodes[pi].Children = append(p.Nodes[pi].Children, n.ID)
		}
	}
	for i := range p.Nodes {
		for _, c := range p.Nodes[i].Children {
			if ci, ok := index[c]; ok && p.Nodes[ci].ParentID == "" && parentsOf(p.Nodes, c) == 1 {
				p.Nodes[ci].ParentID = p.Nodes[i].ID
			}
		}
	}
	numberPaths(p.Nodes, index)
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func parentsOf(nodes []Node, id string) int {
	n := 0
	for _, p := range nodes {
		if slices.Contains(p.Children, id) {
			n++
		}
	}
	return n
}

// numberPaths fills missing id_path values: roots 1, 2, …; children 2.1, 2.2, ….
func numberPaths(nodes []Node, index map[string]int) {
	root := 0
	seen := make([]bool, len(nodes)) // each node once, whatever cycles or repeats the children hold
	var visit func(i int, path string)
	visit = func(i int, path string) {
		if seen[i] {
			return
		}
		seen[i] = true
		if nodes[i].IDPath == "" {
			nodes[i].IDPath = path
		}
		for k, c := range nodes[i].Children {
			if ci, ok := index[c]; ok {
				visit(ci, path+"."+strconv.Itoa(k+1))
			}
		}
	}
	for i := range nodes {
		if nodes[i].ParentID == "" {
			root++
			visit(i, strconv.Itoa(root))
		}
	}
}

// framePath is the screenshot path of node in job's folder; "" when the
// node's id cannot name an object.
func framePath(job, node string) string {
	if !jobs.SafeNodeID(node) {
		return ""
	}
	return jobs.ID(job).FramePath(node)
}

// CheckRecorded checks what only a fresh answer about a recording of the
// given duration can be held to: every step says how it is known, a shown
// step says when, no timestamp, nor the moment a context begins with, is
// past the end (duration 0: unknown), and
// no id holds a control character (the job's metadata names steps by id,
// and PostgreSQL's jsonb refuses a NUL). Documents read back or edited are
// held to the format only (Validate).
func CheckRecorded(d *Document, duration time.Duration) []Problem {
	var out []Problem
	if d.Public == nil {
		return nil
	}
	for i, n := range d.Public.Nodes {
		at := fmt.Sprintf("public.nodes[%d]", i)
		if strings.ContainsFunc(n.ID, unicode.IsControl) {
			out = append(out, Problem{at + ".id", fmt.Sprintf("%q holds a control character: use letters, digits, - and _", n.ID)})
		}
		ts, ok := ParseTimestamp(n.Timestamp)
		switch {
		case n.Evidence == "":
			out = append(out, Problem{at + ".evidence", "is missing: say whether the step is shown, narrated or inferred"})
		case n.Evidence == EvidenceShown && n.Timestamp == "":
			out = append(out, Problem{at + ".timestamp", "is missing: a shown step needs the moment it is shown (HH:MM:SS)"})
		}
		if ok && duration > 0 && ts >= duration {
			out = append(out, Problem{at + ".timestamp", fmt.Sprintf("%s is past the end of the video, which is %.1f seconds long",
				n.Timestamp, duration.Seconds())})
		}
		if cited := strings.TrimSpace(citedTime.FindString(n.Context)); cited != "" && cited != n.Timestamp { // the timestamp's own is reported above
			if ts, ok := ParseTimestamp(cited); ok && duration > 0 && ts >= duration {
				out = append(out, Problem{at + ".context", fmt.Sprintf("cites %s, past the end of the video, which is %.1f seconds long",
					cited, duration.Seconds())})
			}
		}
	}
	return out
}

// citedTime is the moment of the video a context cites, as it begins
// (HH:MM:SS): a time later in it may be a log's or a schedule's.
var citedTime = regexp.MustCompile(`^\s*\d\d:\d\d:\d\d\b`)

// Validate checks every rule the viewer depends on and returns nil or *Invalid.
func Validate(d *Document) error {
	v := &validator{}
	v.check(d)
	if len(v.problems) == 0 {
		return nil
	}
	return &Invalid{Problems: v.problems}
}

type validator struct{ problems []Problem }

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// check runs the rules in the order their problems are reported: the
// document's sections, then the triggers, the printed fields, the nodes,
// their relations, the edges, the questions and the private section.
func (v *validator) check(d *Document) {
	v.checkMeta(d.Meta)
	if d.Public == nil {
		v.add("public", "is missing")
		return
	}
	p := d.Public
	v.checkSections(p, d.Private)
	v.checkTriggers(p.Triggers)
	v.checkPrinted(d)
	nodes := v.checkNodes(p.Nodes, d.Meta)
	v.checkRelations(p.Nodes, nodes)
	v.checkCycles(p.Nodes, nodes)
	outgoing := v.checkEdges(p.Edges, nodes)
	v.checkExits(p.Nodes, outgoing)
	v.checkClarifications(p.ClarificationRequests)
	v.checkPrivate(d.Private, nodes)
}

// checkMeta checks the title, the version and the owners.
func (v *validator) checkMeta(m *Meta) {
	if m == nil {
		v.add("meta", "is missing")
		return
	}
	if strings.TrimSpace(m.Title) == "" {
		v.add("meta.title", "is missing")
	}
	if !semver.MatchString(m.Version) {
		v.add("meta.version", "must be a SemVer version such as 1.0.0, not %q", m.Version)
	}
	if m.Owner == nil {
		v.add("meta.owner", "must be an array")
	}
}

// checkSections checks that the public arrays and maps and the private
// section are there: the viewer iterates over them without looking.
func (v *validator) checkSections(p *Public, private *Private) {
	for name, missing := range map[string]bool{"public.triggers": p.Triggers == nil, "public.nodes": p.Nodes == nil,
		"public.edges": p.Edges == nil, "public.clarification_requests": p.ClarificationRequests == nil,
		"public.variables": p.Variables == nil} {
		if missing {
			v.add(name, "must be present")
		}
	}
	if private == nil {
		v.add("private", "is missing")
	} else if private.Skills == nil || private.Steps == nil || private.Artifacts == nil {
		v.add("private", "skills, steps and artifacts must be arrays")
	}
}

// checkTriggers checks that each trigger has a type the viewer knows.
func (v *validator) checkTriggers(triggers []Trigger) {
	for i, t := range triggers {
		if !slices.Contains(TriggerTypes, t.Type) {
			v.add(fmt.Sprintf("public.triggers[%d].type", i), "must be one of %s, not %q", strings.Join(TriggerTypes, ", "), t.Type)
		}
	}
}

// checkNodes checks each node's id and fields, and returns the nodes by id:
// the first node of each id, none with an empty one.
func (v *validator) checkNodes(list []Node, meta *Meta) map[string]*Node {
	nodes := map[string]*Node{}
	for i := range list {
		n := &list[i]
		at := fmt.Sprintf("public.nodes[%d]", i)
		switch {
		case strings.TrimSpace(n.ID) == "":
			v.add(at+".id", "is missing")
		case nodes[n.ID] != nil:
			v.add(at+".id", "%q is used by another node", n.ID)
		default:
			nodes[n.ID] = n
		}
		v.checkNodeFields(at, n, meta)
	}
	return nodes
}

// checkNodeFields checks a node's fields other than its id and relations.
func (v *validator) checkNodeFields(at string, n *Node, meta *Meta) {
	if !slices.Contains(NodeTypes, n.Type) {
		v.add(at+".type", "must be one of %s, not %q", strings.Join(NodeTypes, ", "), n.Type)
	}
	if strings.TrimSpace(n.Label) == "" {
		v.add(at+".label", "is missing")
	}
	if n.IDPath == "" {
		v.add(at+".id_path", "is missing")
	}
	if n.Children == nil {
		v.add(at+".children", "must be an array")
	}
	if _, ok := ParseTimestamp(n.Timestamp); n.Timestamp != "" && !ok {
		v.add(at+".timestamp", "must be HH:MM:SS (such as 00:01:23) or empty, not %q", n.Timestamp)
	}
	if n.Evidence != "" && !slices.Contains(Evidences, n.Evidence) {
		v.add(at+".evidence", "must be one of %s, not %q", strings.Join(Evidences, ", "), n.Evidence)
	}
	if n.Screenshot != "" && (meta == nil || n.Screenshot != framePath(meta.ID, n.ID)) {
		v.add(at+".screenshot", "must be this job's frames/<jobId>/<nodeId>.jpg, not %q", n.Screenshot)
	}
	if n.Highlight != nil && !n.Highlight.Valid() {
		v.add(at+".highlight", "must be a box inside the picture: x, y, w, h fractions of it, w and h above 0")
	}
}

// checkRelations checks that parent and children name each other, and that
// no loop is inside another.
func (v *validator) checkRelations(list []Node, nodes map[string]*Node) {
	for i, n := range list {
		at := fmt.Sprintf("public.nodes[%d]", i)
		if n.ParentID != "" {
			parent := nodes[n.ParentID]
			switch {
			case parent == nil:
				v.add(at+".parentId", "names no node (%q)", n.ParentID)
			case !slices.Contains(parent.Children, n.ID):
				v.add(at+".parentId", "names %q, which does not list %q in its children", n.ParentID, n.ID)
			}
		}
		for _, c := range n.Children {
			child := nodes[c]
			switch {
			case child == nil:
				v.add(at+".children", "names no node (%q)", c)
			case child.ParentID != n.ID:
				v.add(at+".children", "lists %q, whose parentId is %q", c, child.ParentID)
			}
		}
		if n.Type == "loop" {
			v.checkLoopDepth(at, n, nodes, len(list))
		}
	}
}

// checkLoopDepth reports a loop inside another loop. It climbs at most
// limit ancestors: a cycle among them is reported by checkCycles.
func (v *validator) checkLoopDepth(at string, loop Node, nodes map[string]*Node, limit int) {
	a := nodes[loop.ParentID]
	for steps := 0; a != nil && steps < limit; steps++ {
		if a.Type == "loop" {
			v.add(at, "loop %q is inside loop %q: keep loops one level deep", loop.ID, a.ID)
			return
		}
		a = nodes[a.ParentID]
	}
}

// checkEdges checks each edge's ends and condition and that at most one edge
// starts the procedure, and returns each source's outgoing conditions.
func (v *validator) checkEdges(edges []Edge, nodes map[string]*Node) map[string][]string {
	outgoing := map[string][]string{}
	starts := 0
	for i, e := range edges {
		at := fmt.Sprintf("public.edges[%d]", i)
		src, dst := nodes[e.Source], nodes[e.Target]
		if src == nil {
			v.add(at+".source", "names no node (%q)", e.Source)
		}
		if dst == nil {
			v.add(at+".target", "names no node (%q)", e.Target)
		}
		if e.Condition != "" && !slices.Contains(Conditions, e.Condition) {
			v.add(at+".condition", "must be one of %s, not %q", strings.Join(Conditions, ", "), e.Condition)
		}
		if e.Condition == "start" {
			starts++
		}
		if src != nil && dst != nil && (dst.ParentID == src.ID || src.ParentID == dst.ID) {
			v.add(at, "links parent %q and its own child %q", pick(src, dst), e.Target)
		}
		outgoing[e.Source] = append(outgoing[e.Source], e.Condition)
	}
	if starts > 1 {
		v.add("public.edges", "has %d start edges; at most one", starts)
	}
	return outgoing
}

// checkExits checks the edges that leave decisions and loops: a decision
// has a yes and a no edge; a loop that has edges leaves by all_processed.
func (v *validator) checkExits(list []Node, outgoing map[string][]string) {
	for i, n := range list {
		at := fmt.Sprintf("public.nodes[%d]", i)
		out := outgoing[n.ID]
		switch n.Type {
		case "decision":
			if !slices.Contains(out, "yes") || !slices.Contains(out, "no") {
				v.add(at, "decision %q needs a yes and a no edge", n.ID)
			}
		case "loop":
			if len(out) > 0 && !slices.Contains(out, "all_processed") {
				v.add(at, "loop %q leaves without an all_processed edge", n.ID)
			}
		}
	}
}

// checkClarifications checks each open question's importance.
func (v *validator) checkClarifications(list []Clarification) {
	for i, c := range list {
		if !slices.Contains(Importances, c.Importance) {
			v.add(fmt.Sprintf("public.clarification_requests[%d].importance", i), "must be high, medium or low, not %q", c.Importance)
		}
	}
}

// checkPrivate checks each skill's method and that each step names a node.
func (v *validator) checkPrivate(private *Private, nodes map[string]*Node) {
	if private == nil {
		return
	}
	for i, s := range private.Skills {
		if s.MethodType != "ui" && s.MethodType != "api" {
			v.add(fmt.Sprintf("private.skills[%d].method_type", i), "must be ui or api, not %q", s.MethodType)
		}
	}
	for i, s := range private.Steps {
		if nodes[s.NodeID] == nil {
			v.add(fmt.Sprintf("private.steps[%d].node_id", i), "names no node (%q)", s.NodeID)
		}
	}
}

// checkPrinted checks every field of Printed on the document as the viewer
// will receive it, so that no change of a Go type can let an object, a number
// or null reach a place where the viewer prints text.
func (v *validator) checkPrinted(d *Document) {
	b, err := json.Marshal(d)
	if err != nil {
		v.add("$", "cannot be encoded: %v", err)
		return
	}
	tree, err := decodeTree(b)
	if err != nil {
		v.add("$", "does not decode back: %v", err)
		return
	}
	v.problems = append(v.problems, printedProblems(tree)...)
}

func pick(src, dst *Node) string {
	if dst.ParentID == src.ID {
		return src.ID
	}
	return dst.ID
}

// checkCycles reports parent/child relations that loop back on themselves.
func (v *validator) checkCycles(list []Node, nodes map[string]*Node) {
	for i, n := range list {
		seen := map[string]bool{n.ID: true}
		for p := nodes[n.ParentID]; p != nil; p = nodes[p.ParentID] {
			if seen[p.ID] {
				if p.ID != n.ID {
					break // a cycle above this node: reported for its members
				}
				v.add(fmt.Sprintf("public.nodes[%d]", i), "%q is its own ancestor (a cycle in children)", n.ID)
				break
			}
			seen[p.ID] = true
		}
	}
}
