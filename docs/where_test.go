package docs_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// codeSpans are the `…` spans of a Markdown table cell.
var codeSpans = regexp.MustCompile("`([^`]+)`")

// quotedCode is code a row's second cell quotes from a file beside the two
// it sends a newcomer to: "`file` holds `code`", word for word.
var quotedCode = regexp.MustCompile("`([\\w./-]+\\.\\w+)` holds `([^`]+)`")

// sqlCode is a migration without its comments (-- to the end of the line,
// /* to */), which begin only outside quotes: a name cited there must be in
// its code. A dollar-quoted body is code too.
func sqlCode(sql string) string {
	var b strings.Builder
	var quote byte // ' or ", while inside
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return b.String()
			}
			i += end - 1
			continue
		case strings.HasPrefix(sql[i:], "/*"):
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return b.String()
			}
			i += end + 3
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// wholeWord matches n where it is not part of a longer name.
func wholeWord(n string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[^\w])` + regexp.QuoteMeta(n) + `($|[^\w])`)
}

// declared are the names a Go file declares at its top level: functions,
// methods as Type.Method, types, constants and variables.
func declared(file string) (map[string]bool, error) {
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			name := d.Name.Name
			if d.Recv != nil && len(d.Recv.List) == 1 {
				typ := d.Recv.List[0].Type
				if star, ok := typ.(*ast.StarExpr); ok {
					typ = star.X
				}
				if generic, ok := typ.(*ast.IndexExpr); ok {
					typ = generic.X
				}
				if id, ok := typ.(*ast.Ident); ok {
					name = id.Name + "." + name
				}
			}
			out[name] = true
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				switch spec := spec.(type) {
				case *ast.TypeSpec:
					out[spec.Name.Name] = true
				case *ast.ValueSpec:
					for _, n := range spec.Names {
						out[n.Name] = true
					}
				}
			}
		}
	}
	return out, nil
}

// whereProblems checks the table of README's "Where things happen": each
// row names, in its third cell, one or two groups "`file`: `name`, `name`"
// split by ";" (a newcomer opens at most those two files and README), and
// each file must exist and declare each name (Go) or contain it (any other
// file). Code its second cell quotes ("`file` holds `code`") must be in
// that file, word for word.
func whereProblems(root, readme string) []string {
	_, section, ok := strings.Cut(readme, "\n## Where things happen\n")
	if !ok {
		return []string{`README has no section "Where things happen"`}
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var problems []string
	rows := 0
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.TrimSpace(cells[1]) == "question" {
			continue
		}
		if len(cells) != 6 {
			problems = append(problems, "a row without four cells: "+line)
			continue
		}
		rows++
		for _, q := range quotedCode.FindAllStringSubmatch(cells[2], -1) {
			b, err := os.ReadFile(filepath.Join(root, q[1]))
			if err != nil || !strings.Contains(string(b), q[2]) {
				problems = append(problems, q[1]+" does not hold "+q[2])
			}
		}
		groups := strings.Split(cells[3], ";")
		if len(groups) > 2 {
			problems = append(problems, "a row that sends a newcomer to more than two files: "+strings.TrimSpace(cells[1]))
		}
		for _, group := range groups {
			file, names, ok := strings.Cut(group, ":")
			paths := codeSpans.FindAllStringSubmatch(file, -1)
			spans := codeSpans.FindAllStringSubmatch(names, -1)
			if !ok || len(paths) != 1 || len(spans) == 0 {
				problems = append(problems, "a group is not `file`: `name`, …: "+strings.TrimSpace(group))
				continue
			}
			path := paths[0][1]
			b, err := os.ReadFile(filepath.Join(root, path))
			if err != nil {
				problems = append(problems, path+" does not exist")
				continue
			}
			var has func(string) bool
			if strings.HasSuffix(path, ".go") {
				decls, err := declared(filepath.Join(root, path))
				if err != nil {
					problems = append(problems, path+": "+err.Error())
					continue
				}
				has = func(n string) bool { return decls[n] }
			} else {
				code := string(b)
				if strings.HasSuffix(path, ".sql") {
					code = sqlCode(code)
				}
				has = func(n string) bool { return wholeWord(n).MatchString(code) }
			}
			for _, n := range spans {
				if !has(n[1]) {
					problems = append(problems, path+" has no "+n[1])
				}
			}
		}
	}
	if rows == 0 {
		problems = append(problems, `"Where things happen" has no rows`)
	}
	return problems
}

// Every file and function README's "Where things happen" sends a newcomer
// to exists.
func TestWhereThingsHappenIsTrue(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range whereProblems("..", string(readme)) {
		t.Error(p)
	}
}

// The check finds a missing file, a missing function, a method named on
// the wrong type, a name missing from a migration (or only in its comments,
// or only as part of a longer name), rows it cannot read, a row with three
// files, and code quoted from a file that does not hold it.
func TestTheWhereCheckCanFail(t *testing.T) {
	md := "intro\n## Where things happen\n\n| question | in short | where it happens | explained in |\n|---|---|---|---|\n" +
		"| a? | y | `internal/queue/lease.go`: `Worker.heartbeat`, `Worker.noSuchThing`; `internal/queue/gone.go`: `X` | x |\n" +
		"| b? | y | `internal/queue/lease.go`: `run.heartbeat`, `readLossCause`; `supabase/migrations/20261207000000_claim_owner_first.sql`: `runops_claim`, `runops_no_such` | x |\n" +
		"| c? | y | internal/queue/lease.go heartbeat | x |\n| d? | y | `a|b` | x |\n" +
		"| g? | y | `supabase/migrations/20261207000000_claim_owner_first.sql`: `BenchmarkClaimOrder`, `runops_cl`, `runops videos read` | x |\n" +
		"| e? | y | `internal/queue/lease.go`: `run.lose`; `internal/queue/run.go`: `Worker.execute`; `internal/queue/worker.go`: `Worker.Wake` | x |\n" +
		"| h? | `cmd/runops/main.go` holds `CapOwners(cfg.OwnerCap)`, `cmd/runops/main.go` holds `CapOwners(cfg.OwnerConcurrency)`, `cmd/runops/gone.go` holds `x` | `internal/queue/lease.go`: `run.lose` | x |\n" +
		"## Next\n| f? | y | `internal/queue/gone2.go`: `X` | x |\n"
	got := strings.Join(whereProblems("..", md), "\n")
	want := strings.Join([]string{
		"internal/queue/lease.go has no Worker.noSuchThing",
		"internal/queue/gone.go does not exist",
		"internal/queue/lease.go has no run.heartbeat",
		"supabase/migrations/20261207000000_claim_owner_first.sql has no runops_no_such",
		"a group is not `file`: `name`, …: internal/queue/lease.go heartbeat",
		"a row without four cells: | d? | y | `a|b` | x |",
		"supabase/migrations/20261207000000_claim_owner_first.sql has no BenchmarkClaimOrder",
		"supabase/migrations/20261207000000_claim_owner_first.sql has no runops_cl",
		"supabase/migrations/20261207000000_claim_owner_first.sql has no runops videos read",
		"a row that sends a newcomer to more than two files: e?",
		"cmd/runops/main.go does not hold CapOwners(cfg.OwnerCap)",
		"cmd/runops/gone.go does not hold x",
	}, "\n")
	if got != want {
		t.Errorf("problems:\n%s\nwant:\n%s", got, want)
	}
}

// A migration's comments go, and only they: quotes may hold "--" and "/*",
// and a function's dollar-quoted body is code.
func TestSQLCode(t *testing.T) {
	sql := "SELECT '--' || runops_real(), \"a--b\" /* runops_x */ FROM t -- runops_y\n" +
		"CREATE FUNCTION f() AS $$ BEGIN PERFORM runops_body(); -- runops_z\nEND $$; /* unended"
	want := "SELECT '--' || runops_real(), \"a--b\"  FROM t \n" +
		"CREATE FUNCTION f() AS $$ BEGIN PERFORM runops_body(); \nEND $$; "
	if got := sqlCode(sql); got != want {
		t.Errorf("%q\nwant %q", got, want)
	}
	// A query's words, read from its code: a comment's apostrophe opens none.
	query := "UPDATE jobs SET outcome = 'lost' -- a person's edit\nWHERE cause = 'lease expired'"
	if got := fmt.Sprint(sqlLiterals(sqlCode(query))); got != "[lost lease expired]" {
		t.Errorf("the words of %q: %s", query, got)
	}
}
