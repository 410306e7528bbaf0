package privacy

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/pelletier/go-toml/v2"
)

// RuleSet names the maintained rule set the providers' secrets are found
// with: gitleaks' default configuration (222 rules, each a regular
// expression, keywords that must be present, an entropy threshold and
// allowlists of example values).
const RuleSet = "gitleaks v8.30.1 default rules"

// gitleaksRules is that configuration, byte for byte as the gitleaks module
// of go.mod embeds it (TestTheRuleTableIsGitleaksOwn; to update it after
// upgrading the module: RUNOPS_UPDATE_RULES=1 go test -run RuleTable
// ./internal/privacy/). We apply its rules ourselves, as gitleaks' detector
// does (TestEveryGitleaksFindingIsFound holds the two side by side): linking
// the detector cost 9.3 MB of binary and 15 MB of heap, 11 of them the
// byte-indexed tries it builds for its allowlists' stop words; this costs
// 0.9 MB and 2.7 MB (docs/security.md).
//
//go:embed gitleaks.toml
var gitleaksRules string

// leakRule is one rule of the set, compiled.
type leakRule struct {
	id       string
	kind     Kind
	re       *regexp.Regexp
	group    int     // the secret's submatch (0: the first non-empty one)
	entropy  float64 // a secret must carry more bits a character than this
	keywords []string
	allow    []allowlist
}

// allowlist is a rule's (or the set's) list of what is not a secret: a
// regular expression over the secret, its match or its line, or a stop word
// inside the secret.
type allowlist struct {
	target    string // "secret", "match" or "line"
	re        *regexp.Regexp
	stopwords []string
	and       bool // every check must hold (else any one)
	paths     bool // it has path checks: never true for text without a file
}

// ruleFile is the part of gitleaks' configuration its detector reads.
type ruleFile struct {
	Allowlist  *allowlistSpec  `toml:"allowlist"`
	Allowlists []allowlistSpec `toml:"allowlists"`
	Rules      []struct {
		ID          string          `toml:"id"`
		Path        string          `toml:"path"`
		Regex       string          `toml:"regex"`
		SecretGroup int             `toml:"secretGroup"`
		Entropy     float64         `toml:"entropy"`
		Keywords    []string        `toml:"keywords"`
		Allowlists  []allowlistSpec `toml:"allowlists"`
	} `toml:"rules"`
}

type allowlistSpec struct {
	Condition   string   `toml:"condition"`
	RegexTarget string   `toml:"regexTarget"`
	Regexes     []string `toml:"regexes"`
	StopWords   []string `toml:"stopwords"`
	Paths       []string `toml:"paths"`
	Commits     []string `toml:"commits"`
}

// leakSet is the compiled rule set and the set's own allowlists.
type leakSet struct {
	rules []leakRule
	allow []allowlist
}

// leaks is the rule set, compiled once per process.
var leaks = sync.OnceValues(func() (*leakSet, error) {
	// Compiling allocates about 10 MB to keep 3: collected often meanwhile
	// (it happens once, at start), the process's peak memory grows by less.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	var f ruleFile
	if err := toml.Unmarshal([]byte(gitleaksRules), &f); err != nil {
		return nil, fmt.Errorf("gitleaks rules: %w", err)
	}
	set := &leakSet{}
	global := f.Allowlists
	if f.Allowlist != nil {
		global = append(global, *f.Allowlist)
	}
	var err error
	if set.allow, err = compileAllowlists(global); err != nil {
		return nil, err
	}
	for _, r := range f.Rules {
		if r.Regex == "" || r.Path != "" {
			continue // a rule about file names: no text has one
		}
		re, err := regexp.Compile(r.Regex)
		if err != nil {
			return nil, fmt.Errorf("gitleaks rule %s: %w", r.ID, err)
		}
		allow, err := compileAllowlists(r.Allowlists)
		if err != nil {
			return nil, fmt.Errorf("gitleaks rule %s: %w", r.ID, err)
		}
		lr := leakRule{id: r.ID, kind: ruleKind(r.ID), re: re, group: r.SecretGroup, entropy: r.Entropy, allow: allow}
		for _, k := range r.Keywords {
			lr.keywords = append(lr.keywords, strings.ToLower(k))
		}
		set.rules = append(set.rules, lr)
	}
	return set, nil
})

func compileAllowlists(specs []allowlistSpec) ([]allowlist, error) {
	var out []allowlist
	for _, s := range specs {
		a := allowlist{target: s.RegexTarget, and: strings.EqualFold(s.Condition, "AND"), paths: len(s.Paths) > 0 || len(s.Commits) > 0}
		if a.target == "" {
			a.target = "secret"
		}
		if len(s.Regexes) > 0 {
			re, err := regexp.Compile("(?:" + strings.Join(s.Regexes, "|") + ")")
			if err != nil {
				return nil, fmt.Errorf("allowlist: %w", err)
			}
			a.re = re
		}
		for _, w := range s.StopWords {
			a.stopwords = append(a.stopwords, strings.ToLower(w))
		}
		out = append(out, a)
	}
	return out, nil
}

// allows tells whether a lets a finding go: its secret, its match and the
// line it is on.
func (a allowlist) allows(secret, match, line string) bool {
	target := secret
	switch a.target {
	case "match":
		target = match
	case "line":
		target = line
	}
	regex := a.re != nil && target != "" && a.re.MatchString(target)
	stop := false
	if lower := strings.ToLower(secret); secret != "" {
		for _, w := range a.stopwords {
			if strings.Contains(lower, w) {
				stop = true
				break
			}
		}
	}
	if !a.and {
		return regex || stop
	}
	// Every check the list has must hold; a path or commit check never does.
	if a.paths || a.re == nil && len(a.stopwords) == 0 {
		return false
	}
	return (a.re == nil || regex) && (len(a.stopwords) == 0 || stop)
}

// ruleKind is the kind of a value a gitleaks rule found, from its id: the
// name of its variable, and its count in metadata.privacy.
func ruleKind(id string) Kind {
	switch {
	case strings.Contains(id, "private-key"), id == "age-secret-key", id == "pkcs12-file":
		return PrivateKey
	case id == "aws-access-token", strings.HasSuffix(id, "access-key-id"), strings.HasSuffix(id, "access-id"):
		return AccessKey
	case strings.Contains(id, "password"), id == "curl-auth-user":
		return Password
	case id == "generic-api-key":
		return Token
	case strings.Contains(id, "api-key"), strings.Contains(id, "api-token"), strings.HasSuffix(id, "-key"),
		id == "stripe-access-token": // sk_live_…: an API key
		return APIKey
	}
	return Token
}

// findLeaks returns what the rule set finds in s, as gitleaks' detector
// would (keywords, match, secret group, entropy, allowlists): each secret at
// the place its rule matched, and wherever else it appears whole in s.
func findLeaks(s string) []Match {
	set, err := leaks()
	if err != nil || s == "" {
		return nil
	}
	lower := strings.ToLower(s)
	var out, generic []Match
	elsewhere := map[string]bool{} // secrets already looked for in the rest of s
	for i := range set.rules {
		r := &set.rules[i]
		if !r.present(lower) {
			continue
		}
		for _, loc := range r.re.FindAllStringIndex(s, -1) {
			at, secret, ok := r.secret(s, loc, set.allow)
			if !ok {
				continue
			}
			if strings.Contains(r.id, "generic") {
				generic = append(generic, Match{Start: at, End: at + len(secret), Kind: r.kind})
				continue
			}
			out = append(out, Match{Start: at, End: at + len(secret), Kind: r.kind})
			if elsewhere[secret] {
				continue // a secret repeated n times costs n searches, not n²
			}
			elsewhere[secret] = true
			for from := 0; ; {
				j := strings.Index(s[from:], secret)
				if j < 0 {
					break
				}
				start, end := from+j, from+j+len(secret)
				if start != at && bounded(s, start, end) {
					out = append(out, Match{Start: start, End: end, Kind: r.kind})
				}
				from = end
			}
		}
	}
	// A generic rule's finding inside a provider's goes, as in gitleaks:
	// the provider names the value.
	for _, g := range generic {
		if !slices.ContainsFunc(out, func(m Match) bool { return m.Start <= g.Start && g.End <= m.End }) {
			out = append(out, g)
		}
	}
	return out
}

// present tells whether one of the rule's keywords is in the lower-cased
// text (a rule without keywords always runs).
func (r *leakRule) present(lower string) bool {
	if len(r.keywords) == 0 {
		return true
	}
	for _, k := range r.keywords {
		if strings.Contains(lower, k) {
			return true
		}
	}
	return false
}

// secret is the finding of the rule's match at loc in s — where its secret
// begins in s, and the secret — unless its entropy is too low or an
// allowlist (global ones first) lets it go, as gitleaks decides.
func (r *leakRule) secret(s string, loc []int, global []allowlist) (int, string, bool) {
	match := strings.Trim(s[loc[0]:loc[1]], "\n")
	secret := match
	if groups := r.re.FindStringSubmatch(match); len(groups) >= 2 {
		if r.group > 0 {
			if len(groups) <= r.group {
				return 0, "", false
			}
			secret = groups[r.group]
		} else {
			for _, g := range groups[1:] {
				if g != "" {
					secret = g
					break
				}
			}
			// A rule that names no group and matches a URL (a webhook's)
			// holds its secret in the URL, not in a piece of an id the
			// first group happens to catch (microsoft-teams-webhook's "a165-").
			if strings.Contains(match, "://") && len(secret) < len(match)/2 {
				secret = strings.TrimRight(match, "\"'`;,) \t")
			}
		}
	}
	secret = strings.TrimSpace(secret)
	if len(secret) < 4 || r.entropy != 0 && shannon(secret) <= r.entropy {
		return 0, "", false
	}
	lineStart := strings.LastIndexByte(s[:loc[0]], '\n') + 1
	lineEnd := len(s)
	if i := strings.IndexByte(s[loc[1]:], '\n'); i >= 0 {
		lineEnd = loc[1] + i
	}
	line := s[lineStart:lineEnd]
	// gitleaks' "gitleaks:allow" comment is a repository's opt-out of its
	// scan: a recorded screen showing it still shows the secret.
	for _, lists := range [][]allowlist{global, r.allow} {
		for _, a := range lists {
			if a.allows(secret, match, line) {
				return 0, "", false
			}
		}
	}
	start := loc[0] + strings.Index(s[loc[0]:loc[1]], match)
	i := strings.LastIndex(match, secret)
	if i < 0 {
		return 0, "", false
	}
	return start + i, secret, true
}

// shannon is gitleaks' entropy of a secret: over its characters, divided
// by its length in bytes.
func shannon(s string) float64 {
	counts := map[rune]int{}
	for _, r := range s {
		counts[r]++
	}
	h := 0.0
	for _, n := range counts {
		p := float64(n) / float64(len(s))
		h -= p * math.Log2(p)
	}
	return h
}
