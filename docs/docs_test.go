// Package docs_test keeps the repository's documentation reachable: every
// relative link in a Markdown file, and every docs/… file a comment names,
// must exist, and nothing may cite a document that lives outside the
// repository.
package docs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	docsRef = regexp.MustCompile(`\bdocs/[\w./-]*\w\.md(#[\w-]+)?`)
	// Documents that once lived beside the repository, and the folder they lived in.
	outside = regexp.MustCompile(`\b(DESIGN|CONTRACT|PROTOCOLS|STYLE)` + `\.md\b|\.\./` + `shared\b`)
	heading = regexp.MustCompile(`(?m)^#{1,6}\s+(.+)$`)
)

// repoFiles lists the repository's files, relative to its root, outside
// .git and testdata folders.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "node_modules" || d.Name() == ".bin") {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// withoutFences drops fenced code blocks, whose brackets are code, not links.
func withoutFences(md string) string {
	var b strings.Builder
	in := false
	for line := range strings.SplitSeq(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// relativeLinks are the link targets of md that point into the repository.
func relativeLinks(md string) []string {
	var out []string
	for _, m := range mdLink.FindAllStringSubmatch(withoutFences(md), -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		out = append(out, target)
	}
	return out
}

// anchors are the heading slugs of a Markdown file, as GitHub makes them.
func anchors(md string) map[string]bool {
	out := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(withoutFences(md), -1) {
		slug := strings.Map(func(r rune) rune {
			switch {
			case r == ' ' || r == '-':
				return '-'
			case r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
				return r
			}
			return -1
		}, strings.ToLower(strings.TrimSpace(m[1])))
		out[slug] = true
	}
	return out
}

// checkTarget reports whether target (a path with an optional #anchor,
// relative to dir) names an existing file and, for Markdown, heading.
func checkTarget(root, dir, target string) string {
	path, anchor, _ := strings.Cut(target, "#")
	full := filepath.Join(root, dir, path)
	if path == "" {
		full = filepath.Join(root, dir)
	}
	b, err := os.ReadFile(full)
	if err != nil {
		return "names a file that does not exist"
	}
	if anchor != "" && strings.HasSuffix(full, ".md") && !anchors(string(b))[anchor] {
		return "names a heading (#" + anchor + ") that does not exist"
	}
	return ""
}

func TestDocumentsAreReachable(t *testing.T) {
	root := ".."
	for _, rel := range repoFiles(t, root) {
		switch filepath.Ext(rel) {
		case ".md", ".go", ".sql", ".sh", ".toml", ".json", ".yml", ".yaml", "":
		default:
			continue // media, binaries: nothing that cites a document
		}
		if st, err := os.Stat(filepath.Join(root, rel)); err != nil || st.Size() > 1<<20 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if !strings.HasPrefix(rel, "docs"+string(filepath.Separator)) && outside.MatchString(text) {
			t.Errorf("%s cites %q, which is not in the repository: cite docs/ instead", rel, outside.FindString(text))
		}
		switch {
		case strings.HasSuffix(rel, ".md"):
			for _, target := range relativeLinks(text) {
				if strings.HasPrefix(target, "#") {
					target = filepath.Base(rel) + target
				}
				if why := checkTarget(root, filepath.Dir(rel), target); why != "" {
					t.Errorf("%s: the link %s %s", rel, target, why)
				}
			}
		case strings.HasSuffix(rel, ".go"), strings.HasSuffix(rel, ".sql"), strings.HasSuffix(rel, ".sh"),
			strings.HasSuffix(rel, ".toml"), filepath.Base(rel) == "Dockerfile", rel == filepath.Join(".ci", "run"):
			for _, ref := range docsRef.FindAllString(text, -1) {
				if why := checkTarget(root, "", ref); why != "" {
					t.Errorf("%s: %s %s", rel, ref, why)
				}
			}
		}
	}
}

// The checks above find what they must, and nothing else.
func TestTheChecksCanFail(t *testing.T) {
	md := "See [the contract](frontend-contract.md#the-sop-document), [gone](missing.md), [web](https://x.example/a.md).\n" +
		"```\n[not a link](nowhere.md)\n```\n## A heading, with punctuation\n"
	links := relativeLinks(md)
	if strings.Join(links, " ") != "frontend-contract.md#the-sop-document missing.md" {
		t.Fatalf("links %v", links)
	}
	if why := checkTarget("..", "docs", "missing.md"); why == "" {
		t.Error("a missing file passes")
	}
	if why := checkTarget("..", "docs", "lifecycle.md#no-such-heading"); why == "" {
		t.Error("a missing heading passes")
	}
	if why := checkTarget("..", "docs", "lifecycle.md#people-win"); why != "" {
		t.Errorf("an existing heading fails: %s", why)
	}
	if !anchors(md)["a-heading-with-punctuation"] {
		t.Errorf("anchors %v", anchors(md))
	}
	missing := "docs/" + "ops.md" // spelled in two parts, or this file would cite it
	if got := docsRef.FindAllString("// see docs/lifecycle.md#errors and "+missing+".", -1); strings.Join(got, " ") != "docs/lifecycle.md#errors "+missing {
		t.Errorf("docs references %v", got)
	}
	if !outside.MatchString("("+"DESIGN"+".md)") || !outside.MatchString("../"+"shared/x") || outside.MatchString("docs/"+"design.md") {
		t.Error("the outside-citation pattern is wrong")
	}
}

// The README's layout names every Go package under cmd/ and internal/ by
// its full path, and nothing that is not one.
func TestLayoutNamesEveryPackage(t *testing.T) {
	root := ".."
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "\n## Layout\n\n```\n")
	block, _, ok2 := strings.Cut(block, "\n```")
	if !ok || !ok2 {
		t.Fatal("README.md has no layout block under ## Layout")
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(block, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (strings.HasPrefix(f[0], "cmd/") || strings.HasPrefix(f[0], "internal/")) {
			listed[f[0]] = true
		}
	}
	packages := map[string]bool{}
	for _, f := range repoFiles(t, root) {
		if (strings.HasPrefix(f, "cmd/") || strings.HasPrefix(f, "internal/")) && strings.HasSuffix(f, ".go") {
			packages[filepath.ToSlash(filepath.Dir(f))] = true
		}
	}
	for p := range packages {
		if !listed[p] {
			t.Errorf("README.md's layout does not name %s", p)
		}
	}
	for p := range listed {
		if !packages[p] {
			t.Errorf("README.md's layout names %s, which holds no Go package", p)
		}
	}
}
