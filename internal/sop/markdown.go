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
	var b bytes.Buffer
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	para := func(format string, args ...any) { line(format, args...); line("") }
	title := "Untitled procedure"
	if d.Meta != nil && strings.TrimSpace(d.Meta.Title) != "" {
		title = d.Meta.Title
	}
	para("# %s", inline(title))
	if m := d.Meta; m != nil {
		if m.Goal != "" {
			para("**Goal:** %s", inline(m.Goal))
		}
		if m.Purpose != "" {
			para("**Purpose:** %s", inline(m.Purpose))
		}
		if len(m.Owner) > 0 {
			owners := make([]string, len(m.Owner))
			for i, o := range m.Owner {
				owners[i] = inline(o)
			}
			para("**Owners:** %s", strings.Join(owners, ", "))
		}
	}
	if d.Public == nil {
		return b.Bytes()
	}
	p := d.Public
	if len(p.Triggers) > 0 {
		para("## Triggers")
		for _, t := range p.Triggers {
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
			line("- %s", what)
		}
		line("")
	}

	byID := map[string]Node{}
	for _, n := range p.Nodes {
		if _, dup := byID[n.ID]; !dup {
			byID[n.ID] = n
		}
	}
	ref := func(id string) string {
		n, ok := byID[id]
		if !ok {
			return inline(id)
		}
		return "**" + inline(n.IDPath) + "** " + inline(n.Label)
	}
	out := map[string][]Edge{}
	for _, e := range p.Edges {
		out[e.Source] = append(out[e.Source], e)
	}
	para("## Steps")
	nodes := slices.Clone(p.Nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int { return comparePaths(a.IDPath, b.IDPath) })
	for _, n := range nodes {
		level := "###"
		if n.ParentID != "" {
			level = "####"
		}
		para("%s %s %s%s", level, inline(n.IDPath), inline(n.Label), kindNote(n.Type))
		if seen := evidenceNote(n); seen != "" {
			para("_%s_", seen)
		}
		if n.Intent != "" {
			para("%s", block(n.Intent))
		}
		if n.Context != "" {
			para("> %s", block(n.Context))
		}
		switch n.Type {
		case "decision":
			for _, e := range out[n.ID] {
				switch e.Condition {
				case "yes":
					line("- **Yes** → %s", ref(e.Target))
				case "no":
					line("- **No** → %s", ref(e.Target))
				}
			}
			line("")
		case "loop":
			if n.Iterator != "" {
				para("**For each:** %s", inline(n.Iterator))
			}
			if len(n.Children) > 0 {
				steps := make([]string, 0, len(n.Children))
				for _, c := range n.Children {
					steps = append(steps, ref(c))
				}
				para("**Steps:** %s", strings.Join(steps, ", "))
			}
			if n.ExitCondition != "" {
				para("**Until:** %s", inline(n.ExitCondition))
			}
		}
		if n.Screenshot != "" && image != nil {
			if url := image(n); url != "" {
				para("![Screenshot of step %s](%s)", inline(n.IDPath), url)
			}
		}
	}
	if len(p.Variables) > 0 {
		para("## Variables")
		names := make([]string, 0, len(p.Variables))
		for k := range p.Variables {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			line("- %s: %s", code(k), inline(p.Variables[k]))
		}
		line("")
	}
	if len(p.ClarificationRequests) > 0 {
		para("## Open questions")
		for _, c := range p.ClarificationRequests {
			line("- %s _(importance: %s)_", block(c.Question), inline(c.Importance))
		}
		line("")
	}
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
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
func comparePaths(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		var an, bn int
		var arest, brest string
		fmt.Sscanf(as[i], "%d%s", &an, &arest)
		fmt.Sscanf(bs[i], "%d%s", &bn, &brest)
		if an != bn {
			return an - bn
		}
		if c := strings.Compare(arest, brest); c != 0 {
			return c
		}
	}
	return len(as) - len(bs)
}
