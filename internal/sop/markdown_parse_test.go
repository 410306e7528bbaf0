package sop

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"
)

// nasty are pieces of text that open CommonMark (and GFM) blocks or inline
// markup when they start a line or stand where markup may.
var nasty = []string{
	"~~~", "```", "~~~ go", "---", "***", "___", "===", "- ", "+ ", "* ", "1. ", "2) ", "> ", "# ", "###### ",
	"<div>", "</div>", "<!-- ", "-->", "<script>", "[x]: http://a.test", "[x]", "|a|b|", "| --- |", "    ", "\t",
	"\n", "\r\n", "\n\n", "\\", "&amp;", "&#35;", "![i](http://i.test/x.png)", "[l](http://l.test)", "<http://a.test>",
	"~~gone~~", "*", "_", "`", "``", "word", " ", "0", "9.", "=", "-", "+", "!", "<", ">", "|", "[", "]", "(", ")",
}

func nastyText(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteString(nasty[r.IntN(len(nasty))])
	}
	return b.String()
}

// The Markdown export read by a real CommonMark parser (goldmark, with the
// GFM tables and strikethrough a wiki adds), on fuzzed text in every field:
// every step stays a heading that starts with its number, every screenshot
// an image of its URL, and no text becomes a code block, HTML, a link, a
// thematic break or another heading.
func TestMarkdownStructureSurvivesAnyText(t *testing.T) {
	md := goldmark.New(goldmark.WithExtensions(extension.Table, extension.Strikethrough))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		d := sample(t)
		Repair(d, jobID)
		d.Meta.Title, d.Meta.Goal, d.Meta.Purpose = nastyText(r), nastyText(r), nastyText(r)
		d.Meta.Owner = []string{nastyText(r)}
		for k := range d.Public.Triggers {
			tr := &d.Public.Triggers[k]
			tr.Config, tr.Description = nastyText(r), nastyText(r)
		}
		shots := 0
		for k := range d.Public.Nodes {
			n := &d.Public.Nodes[k]
			n.Label, n.Intent, n.Context = nastyText(r), nastyText(r), nastyText(r)
			if n.Type == "loop" {
				n.Iterator, n.ExitCondition = nastyText(r), nastyText(r)
			}
			n.Timestamp = nastyText(r)
			if k%2 == 0 {
				n.Screenshot = "frames/" + jobID + "/" + n.ID + ".jpg"
				shots++
			} else {
				n.Screenshot = ""
			}
		}
		d.Public.Variables = map[string]string{nastyText(r): nastyText(r)}
		for k := range d.Public.ClarificationRequests {
			d.Public.ClarificationRequests[k].Question = nastyText(r)
		}
		src := Markdown(d, func(n Node) string { return "/img/" + n.ID })
		doc := md.Parser().Parse(text.NewReader(src))

		var steps []string
		var images []string
		bad := ""
		titles := 0
		_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
			if !entering {
				return ast.WalkContinue, nil
			}
			switch n := n.(type) {
			case *ast.Heading:
				switch n.Level {
				case 1:
					titles++
				case 3, 4:
					steps = append(steps, plain(n, src))
				}
			case *ast.Image:
				images = append(images, string(n.Destination))
			case *ast.FencedCodeBlock, *ast.CodeBlock, *ast.HTMLBlock, *ast.RawHTML, *ast.Link, *ast.AutoLink, *ast.ThematicBreak:
				bad = n.Kind().String()
			}
			return ast.WalkContinue, nil
		})
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("case %d: "+format+"\n--- markdown:\n%s", append([]any{i}, append(args, src)...)...)
		}
		if bad != "" {
			fail("text became a %s", bad)
		}
		if titles != 1 {
			fail("%d level-1 headings", titles)
		}
		if len(steps) != len(d.Public.Nodes) {
			fail("%d step headings for %d nodes", len(steps), len(d.Public.Nodes))
		}
		sorted := append([]Node(nil), d.Public.Nodes...)
		slices.SortStableFunc(sorted, func(a, b Node) int { return comparePaths(a.IDPath, b.IDPath) })
		for k, n := range sorted {
			if !strings.HasPrefix(steps[k], n.IDPath+" ") && steps[k] != n.IDPath {
				fail("step heading %q does not start with %s", steps[k], n.IDPath)
			}
		}
		if len(images) != shots {
			fail("%d images for %d screenshots", len(images), shots)
		}
		for _, img := range images {
			if !strings.HasPrefix(img, "/img/") {
				fail("image %q", img)
			}
		}
	}
}

// plain is the text of n's inline children, as a reader sees it.
func plain(n ast.Node, src []byte) string {
	var b strings.Builder
	_ = ast.Walk(n, func(c ast.Node, entering bool) (ast.WalkStatus, error) {
		if t, ok := c.(*ast.Text); ok && entering {
			b.Write(t.Segment.Value(src))
			if t.SoftLineBreak() || t.HardLineBreak() {
				b.WriteByte(' ')
			}
		}
		return ast.WalkContinue, nil
	})
	return b.String()
}

// Visible numbers sort as a reader reads them, part by part: by number
// (leading zeros aside, however long), then by what follows it; a number
// before its own children.
func TestComparePaths(t *testing.T) {
	ordered := []string{"1", "1.1", "1.1.1", "1.2", "1.10", "2", "2N", "2Y", "2Y.1", "3", "10", "99999999999999999999", "100000000000000000000"}
	for i := range ordered {
		for j := range ordered {
			got, want := comparePaths(ordered[i], ordered[j]), i-j
			if got < 0 != (want < 0) || got > 0 != (want > 0) {
				t.Errorf("comparePaths(%q, %q) = %d; want the sign of %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	if comparePaths("02.1", "2.01") != 0 {
		t.Error("leading zeros count")
	}
	// A chain 2,000 steps deep, shuffled, sorts back into its order.
	var chain []string
	for p := "1"; len(chain) < 2000; p += ".1" {
		chain = append(chain, p)
	}
	shuffled := slices.Clone(chain)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	slices.SortFunc(shuffled, comparePaths)
	if !slices.Equal(shuffled, chain) {
		t.Error("a deep chain does not sort into its order")
	}
}
