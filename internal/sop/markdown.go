package sop

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Markdown renders the document for a person to read or paste into a wiki:
// the title, goal and purpose, the triggers, every node under its visible
// number (id_path) with its label as written — decisions with their yes and
// no branches, loops with their steps and exit condition — each step's
// intent, context, timestamp and evidence, its screenshot, the variables and
// the open questions. image gives the URL of a node's screenshot ("" for
// none); it is called only for nodes that have one.
func Markdown(d *Document, image func(n Node) string) []byte {
	var b markdown
	b.writeHeader(d.Meta)
	if d.Public == nil {
		return b.Bytes()
	}
	p := d.Public
	b.writeTriggers(p.Triggers)
	b.writeSteps(p, image)
	b.writeVariables(p.Variables)
	b.writeOpenQuestions(p.ClarificationRequests)
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
}

// markdown is the text being written, a line or a paragraph at a time.
type markdown struct{ bytes.Buffer }

// line writes one line.
func (b *markdown) line(format string, args ...any) { fmt.Fprintf(&b.Buffer, format+"\n", args...) }

// para writes one line and the blank line that ends its paragraph.
func (b *markdown) para(format string, args ...any) { b.line(format, args...); b.line("") }

// writeHeader writes the title, even without meta, then the goal, the
// purpose and the owners.
func (b *markdown) writeHeader(m *Meta) {
	title := "Untitled procedure"
	if m != nil && strings.TrimSpace(m.Title) != "" {
		title = m.Title
	}
	b.para("# %s", inline(title))
	if m == nil {
		return
	}
	if m.Goal != "" {
		b.para("**Goal:** %s", inline(m.Goal))
	}
	if m.Purpose != "" {
		b.para("**Purpose:** %s", inline(m.Purpose))
	}
	if len(m.Owner) > 0 {
		owners := make([]string, len(m.Owner))
		for i, o := range m.Owner {
			owners[i] = inline(o)
		}
		b.para("**Owners:** %s", strings.Join(owners, ", "))
	}
}

// writeTriggers lists the triggers, each with its config and description.
func (b *markdown) writeTriggers(triggers []Trigger) {
	if len(triggers) == 0 {
		return
	}
	b.para("## Triggers")
	for _, t := range triggers {
		what := triggerNames[t.Type]
		if what == "" {
			what = inline(t.Type)
		}
		if t.Config != "" {
			what += " " + code(t.Config)
		}
		if t.Description != "" {
			what += ": " + inline(t.Description)
		}
		b.line("- %s", what)
	}
	b.line("")
}

// writeSteps writes every node under its visible number, in that number's
// order.
func (b *markdown) writeSteps(p *Public, image func(n Node) string) {
	refs := newStepRefs(p)
	b.para("## Steps")
	nodes := slices.Clone(p.Nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int { return comparePaths(a.IDPath, b.IDPath) })
	for _, n := range nodes {
		b.writeStep(n, refs, image)
	}
}

// writeStep writes one node: its heading, how it is known, its intent and
// context, a decision's branches or a loop's steps, and its screenshot.
func (b *markdown) writeStep(n Node, refs stepRefs, image func(n Node) string) {
	level := "###"
	if n.ParentID != "" {
		level = "####"
	}
	b.para("%s %s %s%s", level, inline(n.IDPath), inline(n.Label), kindNote(n.Type))
	if seen := evidenceNote(n); seen != "" {
		b.para("_%s_", seen)
	}
	if n.Intent != "" {
		b.para("%s", block(n.Intent))
	}
	if n.Context != "" {
		b.para("> %s", block(n.Context))
	}
	switch n.Type {
	case "decision":
		b.writeBranches(refs.out[n.ID], refs)
	case "loop":
		b.writeLoop(n, refs)
	}
	if n.Screenshot != "" && image != nil {
		if url := image(n); url != "" {
			b.para("![Screenshot of step %s](%s)", inline(n.IDPath), url)
		}
	}
}

// writeBranches lists a decision's yes and no edges.
func (b *markdown) writeBranches(edges []Edge, refs stepRefs) {
	for _, e := range edges {
		switch e.Condition {
		case "yes":
			b.line("- **Yes** → %s", refs.ref(e.Target))
		case "no":
			b.line("- **No** → %s", refs.ref(e.Target))
		}
	}
	b.line("")
}

// writeLoop writes what a loop goes over, its steps and its exit condition.
func (b *markdown) writeLoop(n Node, refs stepRefs) {
	if n.Iterator != "" {
		b.para("**For each:** %s", inline(n.Iterator))
	}
	if len(n.Children) > 0 {
		steps := make([]string, 0, len(n.Children))
		for _, c := range n.Children {
			steps = append(steps, refs.ref(c))
		}
		b.para("**Steps:** %s", strings.Join(steps, ", "))
	}
	if n.ExitCondition != "" {
		b.para("**Until:** %s", inline(n.ExitCondition))
	}
}

// writeVariables lists the variables by name.
func (b *markdown) writeVariables(vars map[string]string) {
	if len(vars) == 0 {
		return
	}
	b.para("## Variables")
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b.line("- %s: %s", code(k), inline(vars[k]))
	}
	b.line("")
}

// writeOpenQuestions lists the clarification requests with their importance.
func (b *markdown) writeOpenQuestions(list []Clarification) {
	if len(list) == 0 {
		return
	}
	b.para("## Open questions")
	for _, c := range list {
		b.line("- %s _(importance: %s)_", block(c.Question), inline(c.Importance))
	}
	b.line("")
}

// stepRefs is what a step's text needs to name other steps: the nodes by
// id (the first of each id) and each node's outgoing edges.
type stepRefs struct {
	byID map[string]Node
	out  map[string][]Edge
}

func newStepRefs(p *Public) stepRefs {
	r := stepRefs{byID: map[string]Node{}, out: map[string][]Edge{}}
	for _, n := range p.Nodes {
		if _, dup := r.byID[n.ID]; !dup {
			r.byID[n.ID] = n
		}
	}
	for _, e := range p.Edges {
		r.out[e.Source] = append(r.out[e.Source], e)
	}
	return r
}

// ref names a step by its visible number and label, or by the id as written
// when no node has it.
func (r stepRefs) ref(id string) string {
	n, ok := r.byID[id]
	if !ok {
		return inline(id)
	}
	return "**" + inline(n.IDPath) + "** " + inline(n.Label)
}

var triggerNames = map[string]string{"cron": "**Schedule**", "manual": "**Manually**", "webhook": "**Webhook**", "event": "**Event**"}

func kindNote(t string) string {
	switch t {
	case "decision", "loop", "end":
		return " _(" + t + ")_"
	}
	return ""
}

func evidenceNote(n Node) string {
	at := ""
	if n.Timestamp != "" {
		at = " at " + inline(n.Timestamp)
	}
	switch n.Evidence {
	case EvidenceShown:
		return "Shown" + at
	case "narrated":
		return "Narrated, not shown" + at
	case "inferred":
		return "Inferred: neither shown nor narrated" + at
	}
	if at != "" {
		return "At" + at
	}
	return ""
}

// markdownEscapes are the characters that would make Markdown (or the HTML
// a wiki allows in it) out of text: escaped with CommonMark's backslash
// escapes, the text reads as written. "~" opens a fenced code block ("~~~")
// and GFM's strikethrough.
var markdownEscapes = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `[`, `\[`, `]`, `\]`, `<`, `\<`, `>`, `\>`,
	`#`, `\#`, `|`, `\|`, `&`, `\&`, `!`, `\!`, `~`, `\~`, "\r\n", " ", "\n", " ", "\r", " ")

// inline is text as written, on one line.
func inline(s string) string { return markdownEscapes.Replace(strings.TrimSpace(s)) }

// block is inline text that starts a paragraph: a leading "-", "+", "="
// or "1." would make it a list or a heading underline.
func block(s string) string {
	s = inline(s)
	digits := len(s) - len(strings.TrimLeft(s, "0123456789"))
	switch {
	case s == "":
	case strings.ContainsAny(s[:1], "-+="):
		return `\` + s
	case digits > 0 && digits < len(s) && (s[digits] == '.' || s[digits] == ')'):
		return s[:digits] + `\` + s[digits:]
	}
	return s
}

// code is s as inline code, fenced so that no backtick inside ends it.
func code(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

// comparePaths orders visible numbers as a reader does: 2 < 2.1 < 2.3Y < 10.
// Each part is compared by its number, then by what follows it; it reads
// no more of a number than it compares, so that a sort of thousands of
// steps numbered thousands of levels deep (a chain of steps) stays quick.
func comparePaths(a, b string) int {
	for {
		ap, arest, amore := strings.Cut(a, ".")
		bp, brest, bmore := strings.Cut(b, ".")
		an, asuffix := splitNumber(ap)
		bn, bsuffix := splitNumber(bp)
		if c := compareDigits(an, bn); c != 0 {
			return c
		}
		if c := strings.Compare(asuffix, bsuffix); c != 0 {
			return c
		}
		switch {
		case !amore && !bmore:
			return 0
		case !amore:
			return -1
		case !bmore:
			return 1
		}
		a, b = arest, brest
	}
}

// splitNumber splits a part of a visible number into its digits (leading
// zeros dropped) and what follows them ("3Y": "3", "Y").
func splitNumber(p string) (digits, suffix string) {
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	return strings.TrimLeft(p[:i], "0"), p[i:]
}

// compareDigits orders two runs of digits without leading zeros by value.
func compareDigits(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}
