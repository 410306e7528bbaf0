// Package docs_test keeps the repository's documentation reachable and
// true: every relative link in a Markdown file, and every docs/… file a
// comment names, must exist, nothing may cite a document that lives outside
// the repository, and what README.md and docs/*.md quote of the product — a
// sentence a person reads, a RUNOPS_ variable, a metric — must be in the code.
package docs_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
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

// withoutFences blanks fenced code blocks, whose brackets are code, not
// links, and whose quotes are examples; every other line keeps its number.
func withoutFences(md string) string {
	var b strings.Builder
	in := false
	for line := range strings.SplitSeq(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			in = !in
			b.WriteString("\n")
			continue
		}
		if !in {
			b.WriteString(line)
		}
		b.WriteString("\n")
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

// What the documents quote of the product.
//
// A sentence a person reads — a job's error, an API answer, a log line, a
// /readyz reason — is quoted as it is, so each quote below must be a whole
// string of the product's Go code (tests and test helpers left out): "…" in
// a quote stands for text left out; a format verb or a value the code
// computes (a number, a duration) stands for some text, but at least half of
// the quote must be the code's own letters; a named constant or error in a
// sum of strings counts as its text. Which quotes are the product's:
//   - prose between double quotes that reads as a sentence: it starts with a
//     capital letter or "…", has more than one word, and ends with "." or "…";
//   - a code span that reads as a sentence (a capital letter, more than one
//     word, a final "."): `Video file not found. Please upload again.`;
//   - a code span right after an HTTP status, as an API answer is quoted:
//     404 `Job not found`;
//   - the "error" and "message" of a JSON answer in a code span:
//     `{"error":"Method not allowed"}`, and every value of one that follows
//     `/readyz`: `"disk": "disk full"`;
//   - prose between double quotes inside "(log: …)", up to its ";" or ")";
//   - prose between double quotes, whatever its case, that the text before
//     introduces as the product's words (wordsOf): after "log", "logs",
//     "logged", "says", "with the error", "stored" (each with an optional
//     ":" and "("), in parentheses right after a code span (`ErrCancelled`
//     ("…")), or after a code span and a colon (`schema`: "…"); and each
//     further quote of a list so introduced ("…" or "…").
//
// The code's strings include the words it stores: each '…' literal of its
// queries and of the migrations' code. A number a quote says where a
// constant fills a verb (the limit of "The video is 21 minutes long; the
// limit is 20 minutes. …", jobs.MaxDuration) must be the constant's: fills
// lists those sentences.
//
// A quote of another system's words that these rules take for ours (docs/
// dependencies.md quotes what Supabase and Gemini answer) is left out by
// name, in othersWords, with whose words they are. Every document is held
// to the names: each RUNOPS_ variable is one the code reads, each runops_
// name with a metric's shape (labels, or a _total, _seconds, _bytes,
// _bucket, _count or _sum suffix) is a metric of internal/metrics with those
// labels, and every other runops_ name is in the migrations' code or in a
// string of the Go code, never only in a comment of either.

// wild stands for any text in a pattern: an elision in a quote, a format verb
// or a computed value in the code.
const wild = '\x00'

var (
	formatVerb = regexp.MustCompile(`%%|%[-+# 0]*(\[\d+\])?(\d+|\*)?(\.(\d+|\*)?)?[a-zA-Z]`)
	httpStatus = regexp.MustCompile(`(^|[\s(])[1-5]\d\d $`)
	jsonAnswer = regexp.MustCompile(`"(?:error|message)"\s*:\s*"([^"]*)"`)
	jsonValue  = regexp.MustCompile(`"[\w-]+"\s*:\s*"([^"]*)"`)
	readyz     = regexp.MustCompile("`/readyz`:? \\(?$")
	envName    = regexp.MustCompile(`\bRUNOPS_[A-Z0-9_]*[A-Z0-9]\b`)
	runopsName = regexp.MustCompile(`\brunops_[a-z0-9_]*[a-z0-9](\{[^}\n]*\})?`)
	metricName = regexp.MustCompile(`_(total|seconds|bytes|bucket|count|sum)$`)
	blankLine  = regexp.MustCompile(`\n[ \t]*\n`)
)

// fold collapses every run of white space into one space: Markdown wraps its
// lines, and code writes a sentence over several lines or literals.
func fold(s string) string { return strings.Join(strings.Fields(s), " ") }

// A quote is a double-quoted text or a code span of a Markdown document.
type quote struct {
	line   int
	text   string // folded
	code   bool   // a code span
	before string // the paragraph up to the quote
}

// quotes finds the quotes of md outside fenced blocks, paragraph by
// paragraph (neither kind of quote crosses a blank line).
func quotes(md string) []quote {
	md = withoutFences(md)
	var out []quote
	for start := 0; start < len(md); {
		end := len(md)
		if loc := blankLine.FindStringIndex(md[start:]); loc != nil {
			end = start + loc[0]
		}
		p := md[start:end]
		lineAt := func(i int) int { return strings.Count(md[:start+i], "\n") + 1 }
		for i := 0; i < len(p); {
			switch p[i] {
			case '`':
				ticks := codeSpanTicks(p[i:])
				body, ok := codeSpan(p[i:])
				if !ok {
					i += ticks
					continue
				}
				out = append(out, quote{line: lineAt(i), text: fold(body), code: true, before: p[:i]})
				i += 2*ticks + len(body)
			case '"':
				j := closingQuote(p, i+1)
				if j < 0 {
					i++
					continue
				}
				out = append(out, quote{line: lineAt(i), text: fold(strings.ReplaceAll(p[i+1:j], "`", "")), before: p[:i]})
				i = j + 1
			default:
				i++
			}
		}
		if end == len(md) {
			break
		}
		start = end + 1
	}
	return out
}

func codeSpanTicks(s string) int { return len(s) - len(strings.TrimLeft(s, "`")) }

// codeSpan is the text of the code span s starts with.
func codeSpan(s string) (string, bool) {
	n := codeSpanTicks(s)
	fence := s[:n]
	for i := n; i < len(s); {
		k := strings.Index(s[i:], fence)
		if k < 0 {
			return "", false
		}
		if codeSpanTicks(s[i+k:]) == n {
			return s[n : i+k], true
		}
		i += k + codeSpanTicks(s[i+k:])
	}
	return "", false
}

// closingQuote is the index of the double quote that closes the one before
// from, outside code spans, or -1.
func closingQuote(p string, from int) int {
	for i := from; i < len(p); {
		switch p[i] {
		case '"':
			return i
		case '`':
			body, ok := codeSpan(p[i:])
			if !ok {
				return -1
			}
			i += 2*codeSpanTicks(p[i:]) + len(body)
		default:
			i++
		}
	}
	return -1
}

// readsAsSentence: a capital letter (or an elision) first, more than one
// word, and one of ends last.
func readsAsSentence(s, ends string) bool {
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	return (unicode.IsUpper(first) || first == '…') && strings.Contains(s, " ") && strings.ContainsRune(ends, last)
}

// productSentences are the sentences of the product q quotes (see above).
func productSentences(q quote) []string {
	if q.code {
		var out []string
		answer := jsonAnswer
		if readyz.MatchString(q.before) {
			answer = jsonValue
		}
		for _, m := range answer.FindAllStringSubmatch(q.text, -1) {
			if !strings.HasPrefix(m[1], "<") {
				out = append(out, fold(m[1]))
			}
		}
		if !strings.HasPrefix(q.text, "{") && (readsAsSentence(q.text, ".") || httpStatus.MatchString(q.before)) {
			out = append(out, q.text)
		}
		return out
	}
	if readsAsSentence(q.text, ".…") {
		return []string{q.text}
	}
	if open := strings.LastIndex(q.before, "("); open >= 0 {
		inside := q.before[open+1:]
		if strings.HasPrefix(inside, "log:") && !strings.ContainsAny(inside, ";)") {
			return []string{q.text}
		}
	}
	if !q.code && introduced(q.before) {
		return []string{q.text}
	}
	return nil
}

var (
	// wordsOf end the text that introduces the product's own words, as the
	// documents phrase it: what a log line or a worker says, the error an
	// attempt is closed with or a row stores, and the words of a name in a
	// code span, in parentheses after it (`ErrCancelled` ("…")) or after
	// it and a colon (`schema`: "…", `last_error`: "…").
	wordsOf = []*regexp.Regexp{
		regexp.MustCompile(`(?i)\b(log|logs|logged|says|with the error|stored|stored as):? ?\(?$`),
		regexp.MustCompile("` ?\\($"),
		regexp.MustCompile("`[\\w.]+`: ?\\(?$"),
	}
	// andQuote is a quote before the last, joined to it: "…" or "…".
	andQuote = regexp.MustCompile(`"[^"]*" ?(,|/|or|and)$`)
)

// introduced tells whether the paragraph before a double-quoted text
// introduces it as the product's words, itself or as the next of a list
// of quotes that it introduces ("lease expired" or "…").
func introduced(before string) bool {
	b := fold(before)
	for {
		for _, w := range wordsOf {
			if w.MatchString(b) {
				return true
			}
		}
		loc := andQuote.FindStringIndex(b)
		if loc == nil {
			return false
		}
		b = strings.TrimSpace(b[:loc[0]])
	}
}

// quotePattern is a quote with its elisions made wild.
func quotePattern(q string) string {
	parts := strings.Split(q, "…")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return strings.Join(parts, string(wild))
}

// says tells whether the code's pattern c can say the quote's pattern q, in
// words mostly its own. An elision of the quote stands for any text of the
// code; a value of the code (a format verb, a variable) stands for some of
// the quote's text, but at least half of the quote must be the code's own
// letters: "%s: %v" can say anything, and is held to nothing.
func says(c, q string) bool {
	x, y := []rune(q), []rune(c)
	if len(x) > 0 && len(y) > 0 && x[0] != wild && y[0] != wild && x[0] != y[0] {
		return false
	}
	// own(i, j): the most letters of x[i:] that y[j:]'s own letters say, or
	// -1 when y[j:] cannot say x[i:].
	memo := map[[2]int]int{}
	var own func(i, j int) int
	own = func(i, j int) int {
		key := [2]int{i, j}
		if v, ok := memo[key]; ok {
			return v
		}
		v := -1
		switch {
		case i == len(x) && j == len(y):
			v = 0
		case i < len(x) && x[i] == wild: // the elision ends, or covers y[j]
			v = own(i+1, j)
			if j < len(y) {
				v = max(v, own(i, j+1))
			}
		case j < len(y) && y[j] == wild: // the value ends, or says x[i]
			v = own(i, j+1)
			if i < len(x) {
				v = max(v, own(i+1, j))
			}
		case i < len(x) && j < len(y) && x[i] == y[j]:
			if w := own(i+1, j+1); w >= 0 {
				v = w + 1
			}
		}
		memo[key] = v
		return v
	}
	letters := len(x) - strings.Count(q, string(wild))
	return 2*own(0, 0) >= letters && own(0, 0) >= 0
}

// productGo tells the product's Go files: not tests, nor test helpers.
func productGo(rel string) bool {
	rel = filepath.ToSlash(rel)
	dir := filepath.Base(filepath.Dir(rel))
	return strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") &&
		(strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "internal/")) &&
		!strings.HasSuffix(dir, "test") && filepath.Dir(rel) != "internal/wait"
}

// goFiles parses the repository's Go files that keep accepts.
func goFiles(t *testing.T, root string, keep func(rel string) bool) map[string]*ast.File {
	t.Helper()
	out := map[string]*ast.File{}
	fset := token.NewFileSet()
	for _, rel := range repoFiles(t, root) {
		if !strings.HasSuffix(rel, ".go") || !keep(rel) {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(root, rel), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.ToSlash(rel)] = f
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// summands are the operands of a sum, in order.
func summands(e ast.Expr) []ast.Expr {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return summands(e.X)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			return append(summands(e.X), summands(e.Y)...)
		}
	}
	return []ast.Expr{e}
}

// literalPattern is a string literal with its format verbs made wild.
func literalPattern(s string) string {
	return formatVerb.ReplaceAllStringFunc(s, func(v string) string {
		if v == "%%" {
			return "%"
		}
		return string(wild)
	})
}

// named maps "package.Name" to the pattern of each package-level string
// constant, and of each error made by errors.New or fmt.Errorf, so that a
// sentence made of them is known whole.
func named(files map[string]*ast.File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST && gen.Tok != token.VAR {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, v := range vs.Values {
					if call, ok := v.(*ast.CallExpr); ok && len(call.Args) > 0 {
						if fn := callee(call); fn == "errors.New" || fn == "fmt.Errorf" {
							v = call.Args[0]
						}
					}
					if s, ok := stringLit(v); ok && i < len(vs.Names) {
						out[f.Name.Name+"."+vs.Names[i].Name] = fold(literalPattern(s))
					}
				}
			}
		}
	}
	return out
}

// callee is "x.F" for a call of x.F, or "".
func callee(call *ast.CallExpr) string {
	if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
		if x, ok := sel.X.(*ast.Ident); ok {
			return x.Name + "." + sel.Sel.Name
		}
	}
	return ""
}

// resolve is the pattern of a named constant or error (its Error()) that
// e names in package pkg.
func resolve(e ast.Expr, pkg string, names map[string]string) (string, bool) {
	if call, ok := e.(*ast.CallExpr); ok && len(call.Args) == 0 {
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Error" {
			e = sel.X
		}
	}
	var key string
	switch e := e.(type) {
	case *ast.Ident:
		key = pkg + "." + e.Name
	case *ast.SelectorExpr:
		if x, ok := e.X.(*ast.Ident); ok {
			key = x.Name + "." + e.Sel.Name
		}
	}
	p, ok := names[key]
	return p, ok
}

// stringPatterns are the strings f can make: each literal, and each sum of
// literals, named constants and other values, with format verbs and the
// other values made wild.
func stringPatterns(f *ast.File, names map[string]string) []string {
	var out []string
	stringSums(f, func(parts []ast.Expr) {
		var b strings.Builder
		strs := false
		for _, part := range parts {
			if s, ok := stringLit(part); ok {
				b.WriteString(literalPattern(s))
				strs = true
			} else if s, ok := resolve(part, f.Name.Name, names); ok {
				b.WriteString(s)
			} else {
				b.WriteRune(wild)
			}
		}
		if strs {
			out = append(out, fold(b.String()))
		}
	})
	return out
}

// stringSums calls each with the parts of every string expression under n,
// outermost first: a sum's summands, or a lone literal. It looks into the
// parts that are no literal for more.
func stringSums(n ast.Node, each func(parts []ast.Expr)) {
	var visit func(ast.Node) bool
	visit = func(n ast.Node) bool {
		switch e := n.(type) {
		case *ast.BinaryExpr:
			if e.Op != token.ADD {
				return true
			}
			parts := summands(e)
			each(parts)
			for _, part := range parts {
				if _, ok := stringLit(part); !ok {
					ast.Inspect(part, visit)
				}
			}
			return false
		case *ast.BasicLit:
			if _, ok := stringLit(e); ok {
				each([]ast.Expr{e})
			}
		}
		return true
	}
	ast.Inspect(n, visit)
}

// documents are README.md and docs/*.md, by name.
func documents(t *testing.T, root string) map[string]string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, name := range append([]string{filepath.Join(root, "README.md")}, names...) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, name)
		out[filepath.ToSlash(rel)] = string(b)
	}
	return out
}

// codeStrings are the patterns of every string the product's code says,
// and the words it stores: each SQL literal of its queries and of the
// migrations' code.
func codeStrings(t *testing.T, root string) []string {
	var code []string
	files := goFiles(t, root, productGo)
	names := named(files)
	for _, f := range files {
		code = append(code, stringPatterns(f, names)...)
	}
	stringLits(files, func(s string) {
		if sqlQuery.MatchString(s) {
			code = append(code, sqlLiterals(sqlCode(s))...) // a comment's "'" opens no literal
		}
	})
	for _, m := range migrationsCode(t, root) {
		code = append(code, sqlLiterals(m)...)
	}
	slices.Sort(code)
	return slices.Compact(code)
}

// stringLits calls fn with every string of files: a literal, or a sum of
// literals joined (a query written in pieces), its other parts as spaces.
func stringLits(files map[string]*ast.File, fn func(string)) {
	for _, f := range files {
		stringSums(f, func(parts []ast.Expr) {
			var b strings.Builder
			for _, part := range parts {
				s, ok := stringLit(part)
				if !ok {
					s = " "
				}
				b.WriteString(s)
			}
			fn(b.String())
		})
	}
}

// migrationsCode is each migration's code, its comments left out (sqlCode).
func migrationsCode(t *testing.T, root string) []string {
	migrations, err := filepath.Glob(filepath.Join(root, "supabase", "migrations", "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range migrations {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sqlCode(string(b)))
	}
	return out
}

var (
	// sqlQuery tells a Go string that is a query.
	sqlQuery = regexp.MustCompile(`(?i)\b(select|update|insert into|delete from)\b`)
	sqlText  = regexp.MustCompile(`'((?:[^']|'')*)'`)
)

// sqlLiterals are the text literals of SQL code ('…'), a doubled quote
// inside read as one.
func sqlLiterals(sql string) []string {
	var out []string
	for _, m := range sqlText.FindAllStringSubmatch(sql, -1) {
		out = append(out, fold(strings.ReplaceAll(m[1], "''", "'")))
	}
	return out
}

// othersWords are the quotes, by document, that a document's rules take
// for a sentence of ours but that are another system's words, each with
// whose: docs/dependencies.md tells what the services and libraries we
// depend on answer, and quotes them beside our own sentences.
var othersWords = map[[2]string]string{
	{"docs/dependencies.md", "Object not found"}: "Supabase Storage's message for a missing object, in its JSON answer",
	{"docs/dependencies.md", "INVALID_ARGUMENT"}: "the status Gemini's API gives a request it refuses, after its HTTP status",
}

// sentenceProblems checks each quoted sentence of docs (by name) against
// code's patterns, leaving out others' quotes (see othersWords), and reports
// an entry of others that no document quotes any more. It also tells how
// many sentences it checked.
func sentenceProblems(docs map[string]string, code []string, others map[[2]string]string, fills []fill) ([]string, int) {
	var problems []string
	checked := 0
	used := map[[2]string]bool{}
	for _, f := range fills {
		if !slices.Contains(code, f.pattern()) {
			problems = append(problems, fmt.Sprintf("no string of the code is %q, which %s fills", f.sentence, f.constant))
		}
		if m := f.at.FindStringSubmatch(f.filled()); m == nil || m[1] != f.value {
			problems = append(problems, fmt.Sprintf("%s does not find %s's value in %q", f.at, f.constant, f.filled()))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(docs)) {
		for _, q := range quotes(docs[name]) {
			for _, s := range productSentences(q) {
				if key := [2]string{name, s}; others[key] != "" {
					used[key] = true
					continue
				}
				checked++
				p := quotePattern(s)
				if !slices.ContainsFunc(code, func(c string) bool { return says(c, p) }) {
					problems = append(problems, fmt.Sprintf("%s:%d quotes %q, which no string of the code says", name, q.line, s))
				}
				for _, f := range fills {
					if !says(f.pattern(), p) {
						continue
					}
					for _, m := range f.at.FindAllStringSubmatch(s, -1) {
						if m[1] != f.value && strings.ContainsAny(m[1], "0123456789") { // not N, nor …
							problems = append(problems, fmt.Sprintf("%s:%d quotes %q, where the code says %s (%s), not %s", name, q.line, s, f.value, f.constant, m[1]))
						}
					}
				}
			}
		}
	}
	var stale []string
	for key := range others {
		if !used[key] {
			stale = append(stale, fmt.Sprintf("%s no longer quotes %q, which othersWords says is another system's", key[0], key[1]))
		}
	}
	slices.Sort(stale)
	return append(problems, stale...), checked
}

// A fill is a constant that fills a format verb of a sentence: where a
// quote of the sentence says a number there, it must be the constant's
// value, not just any text. sentence is as the code writes it (a sum of
// literals written as one), verb the index of the verb among its verbs,
// value the text the constant makes there, and at finds the text a quote
// says there by the words beside it (a quote may leave them out, …, and
// then says nothing there to check; a value of the code's other verbs may
// stand for any text, so the words beside it are the only sure anchor).
type fill struct {
	sentence string
	verb     int
	constant string
	value    string
	at       *regexp.Regexp
}

func (f fill) pattern() string { return fold(literalPattern(f.sentence)) }

// filled is the sentence's pattern with the constant's value for its verb.
func (f fill) filled() string {
	parts := strings.Split(f.pattern(), string(wild))
	if f.verb+1 >= len(parts) {
		return f.pattern()
	}
	return strings.Join(parts[:f.verb+1], string(wild)) + f.value + strings.Join(parts[f.verb+1:], string(wild))
}

// fills are the sentences a document quotes with a number a constant of
// the code puts there. A value the code computes (a video's length, the
// listener slots a role's connections allow) fills no constant's verb, and
// stays any text.
func fills(t *testing.T, root string) []fill {
	files := goFiles(t, root, func(rel string) bool { return productGo(rel) && strings.HasPrefix(rel, "internal/pipeline/") })
	minutes := func(d time.Duration) string {
		if d%time.Minute != 0 || d < 2*time.Minute {
			t.Fatalf("%v is not a whole number of minutes: say it as pipeline's minutes does", d)
		}
		return strconv.Itoa(int(d/time.Minute)) + " minutes"
	}
	return []fill{
		{"Processing was interrupted %d times; please try again later, and contact support if it keeps happening.", 0,
			"queue.DefaultMaxAttempts, RUNOPS_MAX_ATTEMPTS's default", strconv.Itoa(queue.DefaultMaxAttempts),
			regexp.MustCompile(`interrupted (\S+) times`)},
		{"The video is %s long; the limit is %s. Please upload a shorter recording.", 1,
			"jobs.MaxDuration", minutes(jobs.MaxDuration), regexp.MustCompile(`the limit is (\S+ minutes?)`)},
		{"The AI could not describe this video as a valid SOP after %d tries. Please try again, or record the procedure again with more narration.", 0,
			"pipeline.maxCalls", intConst(t, files, "maxCalls"), regexp.MustCompile(`after (\S+) tries`)},
		{"The worker's disk has not had room for this recording (about %s of working space) %d times in a row; " +
			"please try again later, or ask your administrator for more disk space.", 1,
			"pipeline.maxDiskHandBacks", intConst(t, files, "maxDiskHandBacks"), regexp.MustCompile(`(\S+) times in a row`)},
	}
}

// A number a constant puts in a quoted sentence is held to the constant;
// one the quote leaves out is not, nor one another verb fills; a fill the
// code no longer says, or whose at does not find its value, is reported.
func TestFilledNumbersAreTheConstants(t *testing.T) {
	docs := map[string]string{"README.md": "It fails (\"Tried 4 times in a row, for 10 minutes.\", " +
		"\"Tried … times in a row …\", \"Tried N times in a row …\", \"Tried 3 times in a row, for 9 minutes.\").\n"}
	code := []string{fold(literalPattern("Tried %d times in a row, for %s."))}
	good := fill{"Tried %d times in a row, for %s.", 0, "maxTries", "3", regexp.MustCompile(`(\S+) times in a row`)}
	gone := fill{"Tried %d times.", 0, "maxTries", "3", regexp.MustCompile(`(\S+) times`)}
	lost := fill{"Tried %d times in a row, for %s.", 1, "maxTime", "5 minutes", regexp.MustCompile(`(\S+) times in a row`)}
	problems, _ := sentenceProblems(docs, code, nil, []fill{good, gone, lost})
	want := []string{
		`no string of the code is "Tried %d times.", which maxTries fills`,
		`(\S+) times in a row does not find maxTime's value in "Tried \x00 times in a row, for 5 minutes."`,
		`README.md:1 quotes "Tried 4 times in a row, for 10 minutes.", where the code says 3 (maxTries), not 4`,
		`README.md:1 quotes "Tried 4 times in a row, for 10 minutes.", where the code says 5 minutes (maxTime), not 4`,
		`README.md:1 quotes "Tried 3 times in a row, for 9 minutes.", where the code says 5 minutes (maxTime), not 3`,
	}
	if strings.Join(problems, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}

// intConst is the value of an unexported integer constant of files, which
// a test outside its package cannot read: a literal, or the test fails.
func intConst(t *testing.T, files map[string]*ast.File, name string) string {
	for _, f := range files {
		for _, decl := range f.Decls {
			if gen, ok := decl.(*ast.GenDecl); ok && gen.Tok == token.CONST {
				for _, spec := range gen.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if n.Name != name {
							continue
						}
						if i < len(vs.Values) {
							if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.INT {
								return lit.Value
							}
						}
						t.Fatalf("the constant %s is not an integer literal", name)
					}
				}
			}
		}
	}
	t.Fatalf("no constant %s", name)
	return ""
}

func TestQuotedSentencesAreTheCodes(t *testing.T) {
	root := ".."
	problems, checked := sentenceProblems(documents(t, root), codeStrings(t, root), othersWords, fills(t, root))
	for _, p := range problems {
		t.Error(p)
	}
	if checked < 20 {
		t.Errorf("only %d quoted sentences found: the rules no longer see the documents' quotes", checked)
	}
}

// A sentence of ours is held in docs/dependencies.md too; another system's
// is left out only where othersWords names it, and an entry no document
// uses any more is reported.
func TestOthersWordsAreLeftOutOnlyByName(t *testing.T) {
	docs := map[string]string{
		"docs/dependencies.md": "It answers `{\"message\": \"Object not found\"}`, or 400 `INVALID_ARGUMENT`, and we say " +
			"\"The AI service refused to process this recording…\" or \"The AI service liked it.\"\n",
		"docs/lifecycle.md": "Storage says `{\"message\": \"Object not found\"}`.\n",
	}
	code := []string{"The AI service refused to process this recording: " + string(wild)}
	others := map[[2]string]string{
		{"docs/dependencies.md", "Object not found"}: "theirs",
		{"docs/dependencies.md", "INVALID_ARGUMENT"}: "theirs",
		{"docs/dependencies.md", "Bucket not found"}: "theirs, once",
	}
	problems, checked := sentenceProblems(docs, code, others, nil)
	want := []string{
		`docs/dependencies.md:1 quotes "The AI service liked it.", which no string of the code says`,
		`docs/lifecycle.md:1 quotes "Object not found", which no string of the code says`,
		`docs/dependencies.md no longer quotes "Bucket not found", which othersWords says is another system's`,
	}
	if strings.Join(problems, "\n") != strings.Join(want, "\n") || checked != 3 {
		t.Errorf("%d checked, problems:\n%s\nwant:\n%s", checked, strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}

// envRead are the RUNOPS_ variables the code reads: a literal of the name in
// internal/config or cmd/, or os.Getenv / os.LookupEnv of it anywhere (a
// benchmark's own variable included).
func envRead(t *testing.T, root string) map[string]bool {
	read := map[string]bool{}
	all := goFiles(t, root, func(rel string) bool {
		return strings.HasPrefix(filepath.ToSlash(rel), "cmd/") || strings.HasPrefix(filepath.ToSlash(rel), "internal/")
	})
	for rel, f := range all {
		reader := productGo(rel) && (strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "internal/config/"))
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, ok := stringLit(n); ok && reader && envName.FindString(s) == s {
					read[s] = true
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok || len(n.Args) != 1 || sel.Sel.Name != "Getenv" && sel.Sel.Name != "LookupEnv" {
					return true
				}
				if pkg, _ := sel.X.(*ast.Ident); pkg != nil && pkg.Name == "os" {
					if s, ok := stringLit(n.Args[0]); ok {
						read[s] = true
					}
				}
			}
			return true
		})
	}
	return read
}

// metrics are the metrics internal/metrics makes, with their labels.
func metrics(t *testing.T, root string) map[string][]string {
	out := map[string][]string{}
	files := goFiles(t, root, func(rel string) bool {
		return productGo(rel) && filepath.Dir(filepath.ToSlash(rel)) == "internal/metrics"
	})
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			var labels []string
			for _, arg := range call.Args {
				if s, ok := stringLit(arg); ok && name == "" && strings.HasPrefix(s, "runops_") {
					name = s
				}
				lit, ok := arg.(*ast.CompositeLit)
				if !ok {
					continue
				}
				for _, el := range lit.Elts {
					switch el := el.(type) {
					case *ast.KeyValueExpr:
						if key, _ := el.Key.(*ast.Ident); key != nil && key.Name == "Name" {
							if s, ok := stringLit(el.Value); ok {
								name = s
							}
						}
					default:
						if s, ok := stringLit(el); ok {
							labels = append(labels, s)
						}
					}
				}
			}
			if name != "" {
				out[name] = labels
			}
			return true
		})
	}
	return out
}

// runopsWord is a runops_ name where it is not part of a longer one.
var runopsWord = regexp.MustCompile(`\brunops_[a-z0-9_]*[a-z0-9]\b`)

// definedNames are the runops_ names of the product's code, a table, a
// function, a channel, a setting: each in a string literal of its Go code
// (its comments left out) or in the migrations' code (theirs left out).
// A name that only a comment still mentions is gone.
func definedNames(t *testing.T, root string) []string {
	var text strings.Builder
	stringLits(goFiles(t, root, productGo), func(s string) { text.WriteString(s + "\n") })
	for _, m := range migrationsCode(t, root) {
		text.WriteString(m + "\n")
	}
	out := runopsWord.FindAllString(text.String(), -1)
	slices.Sort(out)
	return slices.Compact(out)
}

// A name only a comment mentions, of Go or of a migration, is not defined.
func TestNamesInCommentsAreNotDefined(t *testing.T) {
	root := t.TempDir()
	for name, text := range map[string]string{
		"internal/x/x.go":      "package x\n\n// runops_go_comment is gone.\nconst q = `SELECT runops_go_query()` /* runops_go_block */\n",
		"internal/x/x_test.go": "package x\n\nconst tested = \"runops_go_test\"\n",
		"supabase/migrations/1.sql": "-- runops_sql_comment\nCREATE TABLE runops_sql_table (x text DEFAULT '--runops_sql_text');\n" +
			"/* runops_sql_block */ CREATE FUNCTION runops_sql_fn() AS $$ SELECT 1 -- runops_sql_body_comment\n$$;\n",
	} {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(definedNames(t, root), " ")
	if want := "runops_go_query runops_sql_fn runops_sql_table runops_sql_text"; got != want {
		t.Errorf("defined %s, want %s", got, want)
	}
}

func TestQuotedNamesAreTheCodes(t *testing.T) {
	root := ".."
	read, known := envRead(t, root), metrics(t, root)
	if len(known) < 8 {
		t.Fatalf("internal/metrics makes %d metrics: the test no longer finds them", len(known))
	}
	defined := definedNames(t, root)
	docs := documents(t, root)
	for name, md := range docs {
		lineOf := func(i int) int { return strings.Count(md[:i], "\n") + 1 }
		for _, m := range envName.FindAllStringIndex(md, -1) {
			if v := md[m[0]:m[1]]; !read[v] {
				t.Errorf("%s:%d names %s, which the code does not read", name, lineOf(m[0]), v)
			}
		}
		if name == "docs/"+schemaPage {
			continue // made from the database itself (schema_test.go)
		}
		for _, m := range runopsName.FindAllStringSubmatchIndex(md, -1) {
			full, base := md[m[0]:m[1]], md[m[0]:m[1]]
			braces := ""
			if m[2] >= 0 {
				base, braces = md[m[0]:m[2]], md[m[2]+1:m[3]-1]
			}
			if braces == "" && !metricName.MatchString(base) {
				if !slices.Contains(defined, base) {
					t.Errorf("%s:%d names %s, which neither the migrations nor the code define", name, lineOf(m[0]), base)
				}
				continue
			}
			labels, ok := known[base]
			if !ok {
				labels, ok = known[metricName.ReplaceAllString(base, "")]
			}
			if !ok {
				t.Errorf("%s:%d names the metric %s, which internal/metrics does not make", name, lineOf(m[0]), full)
				continue
			}
			for l := range strings.SplitSeq(braces, ",") {
				l, _, _ = strings.Cut(l, "=")
				if l = strings.TrimSpace(l); l != "" && l != "…" && !slices.Contains(labels, l) {
					t.Errorf("%s:%d names %s, whose metric has no label %q (it has %v)", name, lineOf(m[0]), full, l, labels)
				}
			}
		}
	}
	for m := range known {
		if !strings.Contains(docs["docs/operations.md"], "`"+m) {
			t.Errorf("docs/operations.md does not list the metric %s", m)
		}
	}
}

// The quote checks find what they must, and nothing else.
func TestTheQuoteChecksCanFail(t *testing.T) {
	md := "The job ends with \"Gemini quota exhausted; try again later.\" or\n\"Processing was interrupted 3\ntimes; …\" (log: \"lease renewal failed\" or \"… ran out of space …\"; `/readyz`: \"disk full\").\n" +
		"A 404 `Job not found`, a 405 `{\"error\":\"Method not allowed\"}`, `The file. Please.` and `x = \"A b.\"`.\n\n" +
		"\"Deploying a fleet\", \"Read\", `Runops-Signature: t=…, v1=…`, \"the password is …\" and `{\"error\": \"<sentence>\"}`.\n" +
		"```\n\"Inside a fence.\"\n```\n\"An unclosed quote.\n\nA \"last one.\""
	var got []string
	for _, q := range quotes(md) {
		for _, s := range productSentences(q) {
			got = append(got, strconv.Itoa(q.line)+":"+s)
		}
	}
	want := []string{"1:Gemini quota exhausted; try again later.", "2:Processing was interrupted 3 times; …",
		"3:lease renewal failed", "3:… ran out of space …", "4:Job not found", "4:Method not allowed", "4:The file. Please.",
	} // not "last one.", which starts with a small letter
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("sentences\n got %q\nwant %q", got, want)
	}
	code := func(s string) string {
		f, err := parser.ParseFile(token.NewFileSet(), "", "package p\nvar _ = "+s+"\nvar errGone = errors.New(\"it is gone\")", 0)
		if err != nil {
			t.Fatal(err)
		}
		return stringPatterns(f, named(map[string]*ast.File{"": f}))[0]
	}
	for _, c := range []struct {
		quote, code string
		match       bool
	}{
		{"Processing was interrupted 3 times; …", `fmt.Sprintf("Processing was interrupted %d times; please try again.", n)`, true},
		{"The video is 21 minutes long; the limit is 20 minutes.", `"The video is %s long; the limit is %s."`, true},
		{"… too long to describe in one SOP …", `"The procedure is too long to describe in one SOP; split it."`, true},
		{"Storage is temporarily unavailable; please try again in a moment.", `what + " is temporarily unavailable; please try again in a moment."`, true},
		{"Gemini quota exhausted; try again later.", `"Gemini quota exhausted;" +` + "\n" + `" try again later."`, true},
		{"Gemini quota exhausted.", `"Gemini quota exhausted; try again later."`, false},
		{"lease renewal failed", `"lease renewal failed; retrying"`, false},
		{"LISTEN succeeded but hears nothing …", `"job listener: LISTEN succeeded but hears nothing"`, false},
		{"100% done.", `"100%% done."`, true},
		{"Storage failed: the bucket is gone.", `fmt.Sprintf("%s: %v", what, err)`, false},
		{"Stopped: it is gone; try again.", `"Stopped: " + errGone.Error() + "; try again."`, true},
		{"File storage could not be reached …", `a + " " + b + " is not an absolute URL"`, false},
	} {
		if got := says(code(c.code), quotePattern(c.quote)); got != c.match {
			t.Errorf("%q against %s: %v", c.quote, c.code, got)
		}
	}
}

// Words a document introduces as the product's are held whatever their
// case, and a stored word to the SQL literals of the queries and migrations.
func TestIntroducedWordsAreHeld(t *testing.T) {
	md := "It logs \"lease renewal failed; retrying\" or \"lease gone\", and a worker says\n\"all N slots are taken …\". " +
		"Closed with the error \"lease expired\" (`ErrCancelled` (\"stopped by a change\"), `last_error`: \"its URL is gone\"); " +
		"stored as \"lost\". A handler can say \"not now\", the worker's \"the operators\", (`x` \"y z\").\n"
	var got []string
	for _, q := range quotes(md) {
		got = append(got, productSentences(q)...)
	}
	want := []string{"lease renewal failed; retrying", "lease gone", "all N slots are taken …", "lease expired",
		"stopped by a change", "its URL is gone", "lost"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("introduced\n got %q\nwant %q", got, want)
	}
	if got := sqlLiterals("SELECT runops_close(m, 'lost', 'lease expired'), 'it''s'"); strings.Join(got, "|") != "lost|lease expired|it's" {
		t.Errorf("SQL literals %q", got)
	}
	code := append(sqlLiterals("UPDATE jobs SET error = 'lease  expired'"), literalPattern("all %d slots are taken (RUNOPS_LISTENERS)"))
	for _, c := range []struct {
		quote string
		match bool
	}{
		{"lease expired", true}, {"lease gone", false}, {"all N slots are taken …", true}, {"all N slots are taken", false},
	} {
		p := quotePattern(c.quote)
		if got := slices.ContainsFunc(code, func(s string) bool { return says(s, p) }); got != c.match {
			t.Errorf("%q: %v", c.quote, got)
		}
	}
}

// The OpenAPI document's examples answer what the code answers: each
// "error" and "message" sentence in them is a string of the product's code,
// as the quotes of the prose are (TestQuotedSentencesAreTheCodes).
func TestTheOpenAPIExamplesAreTheCodesSentences(t *testing.T) {
	root := ".."
	code := codeStrings(t, root)
	raw, err := os.ReadFile(filepath.Join(root, "internal/api/openapi.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "error" || k == "message") && strings.ContainsRune(s, ' ') {
					checked++
					p := quotePattern(s)
					// Or a sentence the code ends with a detail it computes
					// ("… Details: " + the error).
					completes := func(c string) bool { return strings.HasSuffix(c, ":") && strings.HasPrefix(s, c) }
					if !slices.ContainsFunc(code, func(c string) bool { return says(c, p) || completes(c) }) {
						t.Errorf("internal/api/openapi.json answers %q in an example, which no string of the code says", s)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if checked < 10 {
		t.Errorf("only %d example sentences found in the OpenAPI document", checked)
	}
}
