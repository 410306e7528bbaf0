package sop

import (
	"slices"
	"strings"
)

// RepairFlow makes true, in a model's answer, what the viewer's flow needs
// and the answer only left out (repairEdges, citeTimestamps). Not on a
// read: a document stored is served as it was tagged.
func RepairFlow(d *Document) {
	if d.Public != nil {
		repairEdges(d.Public, true)
	}
	citeTimestamps(d)
}

// The edge rules the viewer depends on (docs/frontend-contract.md, "The SOP document"):
// decisions branch with yes and no, a loop leaves with all_processed, a
// loop's last child goes back to its first with next, the first edge
// starts at the first real task with start. repairEdges makes them true
// where the document only leaves them out or puts a condition where it
// means nothing: the answer of a model, a delete. With search, a flow
// without a start edge is given one (startFirst); a delete that removed
// the first step hands the start on itself.
func repairEdges(p *Public, search bool) {
	byID := map[string]*Node{}
	for i := range p.Nodes {
		if _, dup := byID[p.Nodes[i].ID]; !dup { // the first, as Repair and Validate take it
			byID[p.Nodes[i].ID] = &p.Nodes[i]
		}
	}
	led := targets(p)
	lead := leadNode(p, led)
	for i := range p.Edges {
		if !conditionFits(p.Edges[i], byID, lead) {
			p.Edges[i].Condition = ""
		}
	}
	for _, n := range p.Nodes {
		if n.Type == "loop" && len(n.Children) > 0 {
			loopExit(p, n)
			loopBack(p, n)
		}
	}
	startFirst(p, search, lead, led)
}

// targets are the nodes some edge leads to.
func targets(p *Public) map[string]bool {
	led := map[string]bool{}
	for _, e := range p.Edges {
		led[e.Target] = true
	}
	return led
}

// conditionFits tells whether e's condition stands where it means
// something: yes and no out of a decision, all_processed out of a loop,
// next between two steps of one loop, start out of no end, and out of a
// step inside another only when that is the first step of the flow's lead
// (a procedure that is one loop). A model's yes out of a task is a plain
// edge.
func conditionFits(e Edge, byID map[string]*Node, lead string) bool {
	src, dst := byID[e.Source], byID[e.Target]
	if src == nil || dst == nil {
		return true // Validate names the missing node
	}
	switch e.Condition {
	case "yes", "no":
		return src.Type == "decision"
	case "all_processed":
		return src.Type == "loop"
	case "next":
		return src.ParentID != "" && src.ParentID == dst.ParentID
	case "start":
		parent := byID[src.ParentID]
		return src.Type != "end" && (parent == nil || parent.ID == lead && len(parent.Children) > 0 && parent.Children[0] == src.ID)
	}
	return true
}

// loopExit gives a loop that leaves by no all_processed edge the one its
// last step takes out of it: a model wires the last step straight to the
// step after the loop. The edge then leaves from the loop (never to the
// loop itself or to the step it is a part of).
func loopExit(p *Public, loop Node) {
	if slices.ContainsFunc(p.Edges, func(e Edge) bool { return e.Source == loop.ID && e.Condition == "all_processed" }) {
		return
	}
	last := loop.Children[len(loop.Children)-1]
	out := slices.IndexFunc(p.Edges, func(e Edge) bool {
		return e.Source == last && !slices.Contains(loop.Children, e.Target) && e.Target != loop.ID && e.Target != loop.ParentID && e.Condition == ""
	})
	if out >= 0 {
		p.Edges[out].Source, p.Edges[out].Condition = loop.ID, "all_processed"
	}
}

// citeTimestamps makes a shown step's context cite the moment it is shown
// (docs/frontend-contract.md: "Context fields cite the video's timestamps"), where the model's
// answer left it out. Not on a read or an edit: a context a person wrote
// stays as written.
func citeTimestamps(d *Document) {
	if d.Public == nil {
		return
	}
	p := d.Public
	for i := range p.Nodes {
		n := &p.Nodes[i]
		if n.Evidence == EvidenceShown && n.Timestamp != "" && !strings.Contains(n.Context, n.Timestamp) {
			n.Context = strings.TrimSpace(n.Timestamp + " " + n.Context)
		}
	}
}

// startFirst makes the start edge the first one: the one there is, or the
// first real task's plain edge out, marked start — the first task that is
// no step of a loop and that no edge leads to, else (a retry comes back to
// it) the flow's first node when it is such a task — when search says to
// look. A flow that begins with no task (a decision, a loop) is left
// without one.
func startFirst(p *Public, search bool, lead string, led map[string]bool) {
	at := slices.IndexFunc(p.Edges, func(e Edge) bool { return e.Condition == "start" })
	if at < 0 && !search {
		return
	}
	if at < 0 {
		root := func(n Node) bool { return n.Type == "task" && n.ParentID == "" }
		first := slices.IndexFunc(p.Nodes, func(n Node) bool { return root(n) && !led[n.ID] })
		if first < 0 {
			if i := slices.IndexFunc(p.Nodes, func(n Node) bool { return n.ID == lead }); i >= 0 && root(p.Nodes[i]) {
				first = i
			}
		}
		if first < 0 || !markStart(p, p.Nodes[first].ID) {
			return
		}
		at = slices.IndexFunc(p.Edges, func(e Edge) bool { return e.Condition == "start" })
	}
	start := p.Edges[at]
	copy(p.Edges[1:at+1], p.Edges[:at])
	p.Edges[0] = start
}

// leadNode is the flow's first node: of the nodes that are no step of
// another and no trigger, the first that no edge leads to, else the first
// ("" when none) — whatever order the nodes are listed in. led are the
// nodes an edge leads to (targets).
func leadNode(p *Public, led map[string]bool) string {
	top := func(n Node) bool { return n.ParentID == "" && n.Type != "trigger" }
	if i := slices.IndexFunc(p.Nodes, func(n Node) bool { return top(n) && !led[n.ID] }); i >= 0 {
		return p.Nodes[i].ID
	}
	if i := slices.IndexFunc(p.Nodes, top); i >= 0 {
		return p.Nodes[i].ID
	}
	return ""
}

// markStart marks id's first plain edge out start, and reports whether it
// had one.
func markStart(p *Public, id string) bool {
	at := slices.IndexFunc(p.Edges, func(e Edge) bool { return e.Source == id && e.Condition == "" })
	if at >= 0 {
		p.Edges[at].Condition = "start"
	}
	return at >= 0
}

// loopBack gives a loop that has no next edge one, from its last child back
// to its first: the plain edge there, marked, or a new one when the last
// child has no edge to a step of its loop at all. Another edge there (a
// decision's yes back) is the document's own way round. A loop of one step
// goes back to that step, as the model answers it.
func loopBack(p *Public, loop Node) {
	first, last := loop.Children[0], loop.Children[len(loop.Children)-1]
	inLoop := func(e Edge) bool {
		return slices.Contains(loop.Children, e.Source) && slices.Contains(loop.Children, e.Target)
	}
	if slices.ContainsFunc(p.Edges, func(e Edge) bool { return inLoop(e) && e.Condition == "next" }) {
		return
	}
	if at := slices.IndexFunc(p.Edges, func(e Edge) bool { return e.Source == last && e.Target == first && e.Condition == "" }); at >= 0 {
		p.Edges[at].Condition = "next"
		return
	}
	if !slices.ContainsFunc(p.Edges, func(e Edge) bool { return e.Source == last && inLoop(e) }) {
		p.Edges = append(p.Edges, Edge{Source: last, Target: first, Condition: "next"})
	}
}

// Delete removes node id and every node under it, with their edges and
// steps, and joins the flow around them: each edge into what is removed
// goes on where the removed node went (a loop by its all_processed exit, a
// decision by its yes), keeping its condition — a decision keeps its
// branch, the start stays the start — unless it would then go to its own
// source or repeat an edge. The flow's rules are then made true again
// (repairEdges). It reports whether the node was there.
func Delete(d *Document, id string) bool {
	p := d.Public
	if p == nil || !slices.ContainsFunc(p.Nodes, func(n Node) bool { return n.ID == id }) {
		return false
	}
	gone := map[string]bool{}
	var mark func(string)
	mark = func(id string) {
		if gone[id] {
			return
		}
		gone[id] = true
		for _, n := range p.Nodes {
			if n.ID == id {
				for _, c := range n.Children {
					mark(c)
				}
			}
		}
	}
	mark(id)
	onward := onwardOf(p.Edges, id, gone)
	// The first step removed: the procedure starts where it went on (a
	// task's plain edge out), not at a step a removed decision left behind.
	next, started := "", slices.ContainsFunc(p.Edges, func(e Edge) bool { return e.Condition == "start" })
	if at := slices.IndexFunc(p.Edges, func(e Edge) bool { return e.Condition == "start" }); at >= 0 && gone[p.Edges[at].Source] {
		next = p.Edges[at].Target
		if gone[next] {
			next = onward
		}
	}
	decision := map[string]bool{}
	for _, n := range p.Nodes {
		decision[n.ID] = n.Type == "decision"
	}
	var edges []Edge
	for _, e := range p.Edges {
		switch {
		case !gone[e.Source] && !gone[e.Target]:
		case !gone[e.Source] && onward != "" && onward != e.Source:
			e.Target = onward
		default:
			continue
		}
		// One edge between two steps; a decision's two branches may meet.
		if !slices.ContainsFunc(edges, func(k Edge) bool {
			return k.Source == e.Source && k.Target == e.Target && (!decision[e.Source] || k.Condition == e.Condition)
		}) {
			edges = append(edges, e)
		}
	}
	p.Edges = orEmpty(edges)
	p.Nodes = slices.DeleteFunc(p.Nodes, func(n Node) bool { return gone[n.ID] })
	for i := range p.Nodes {
		p.Nodes[i].Children = slices.DeleteFunc(p.Nodes[i].Children, func(c string) bool { return gone[c] })
	}
	if d.Private != nil {
		d.Private.Steps = slices.DeleteFunc(d.Private.Steps, func(s Step) bool { return gone[s.NodeID] })
	}
	if i := slices.IndexFunc(p.Nodes, func(n Node) bool { return n.ID == next }); i >= 0 && p.Nodes[i].Type == "task" {
		markStart(p, next) // a step inside a loop too: conditionFits keeps it where the loop leads the flow
	}
	repairEdges(p, !started)
	return true
}

// onwardOf is where the removed part, rooted at id, went on: the root's
// way out (a plain edge, a loop's all_processed, a start; then a yes; then
// any), else any edge out of the part but a loop's next; "" when none.
func onwardOf(edges []Edge, id string, gone map[string]bool) string {
	best, onward := 0, ""
	for _, e := range edges {
		if !gone[e.Source] || gone[e.Target] {
			continue
		}
		rank := 1
		switch {
		case e.Source == id && (e.Condition == "" || e.Condition == "all_processed" || e.Condition == "start"):
			rank = 4
		case e.Source == id && e.Condition == "yes":
			rank = 3
		case e.Source == id:
			rank = 2
		case e.Condition == "next":
			continue
		}
		if rank > best {
			best, onward = rank, e.Target
		}
	}
	return onward
}
