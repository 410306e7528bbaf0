package sop

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
)

// Markdown renders the document for a person to read: the meta, the
// triggers, the steps in their visible numbering, the variables and the
// open questions.
func Markdown(d *Document) []byte {
	var b bytes.Buffer
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	if d.Meta != nil {
		line("# %s", d.Meta.Title)
		line("")
		if d.Meta.Goal != "" {
			line("**Goal:** %s", d.Meta.Goal)
			line("")
		}
		if d.Meta.Purpose != "" {
			line("**Why:** %s", d.Meta.Purpose)
			line("")
		}
		if len(d.Meta.Owner) > 0 {
			line("**Owners:** %s", strings.Join(d.Meta.Owner, ", "))
			line("")
		}
	}
	if d.Public == nil {
		return b.Bytes()
	}
	p := d.Public
	if len(p.Triggers) > 0 {
		line("## When")
		line("")
		for _, t := range p.Triggers {
			config := ""
			if t.Config != "" {
				config = " (`" + t.Config + "`)"
			}
			line("- %s%s: %s", t.Type, config, t.Description)
		}
		line("")
	}
	line("## Steps")
	line("")
	nodes := slices.Clone(p.Nodes)
	slices.SortStableFunc(nodes, func(a, b Node) int { return comparePaths(a.IDPath, b.IDPath) })
	for _, n := range nodes {
		indent := strings.Repeat("  ", strings.Count(n.IDPath, "."))
		line("%s- **%s** %s%s", indent, n.IDPath, n.Label, kindNote(n))
		if n.Intent != "" {
			line("%s  %s", indent, n.Intent)
		}
		if n.Context != "" {
			line("%s  _%s_", indent, n.Context)
		}
	}
	line("")
	if len(p.Variables) > 0 {
		line("## Inputs")
		line("")
		names := make([]string, 0, len(p.Variables))
		for k := range p.Variables {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			line("- `%s`: %s", k, p.Variables[k])
		}
		line("")
	}
	if len(p.ClarificationRequests) > 0 {
		line("## Open questions")
		line("")
		for _, c := range p.ClarificationRequests {
			line("- (%s) %s", c.Importance, c.Question)
		}
		line("")
	}
	return b.Bytes()
}

func kindNote(n Node) string {
	switch n.Type {
	case "decision":
		return " _(decision)_"
	case "loop":
		if n.Iterator != "" {
			return " _(for each: " + n.Iterator + ")_"
		}
		return " _(loop)_"
	case "end":
		return " _(end)_"
	}
	return ""
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
