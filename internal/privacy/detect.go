// Package privacy finds the values in a recording's SOP that must not be
// shared — e-mail addresses, payment cards, IBANs, secrets of the usual
// shapes, an operator's own patterns, and what the model marked — and
// replaces each distinct one with a named variable (docs/security.md,
// privacy). It must not do I/O.
package privacy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// Kind is what a sensitive value is. It names its variables ({{EMAIL_1}})
// and its counts in metadata.privacy, never the value.
type Kind string

// The kinds the detectors find.
const (
	Email      Kind = "email"
	Card       Kind = "card_number"
	IBAN       Kind = "iban"
	APIKey     Kind = "api_key"     // Stripe, Google, OpenAI-style keys
	AccessKey  Kind = "access_key"  // AWS access key ids
	Token      Kind = "token"       // GitHub, Slack, JWTs, token= values
	PrivateKey Kind = "private_key" // PEM private-key blocks
	Password   Kind = "password"    // password= values, credentials in URLs
	Custom     Kind = "custom"      // RUNOPS_REDACT_PATTERNS
)

// The kinds the model marks besides those (the response schema's enum).
const (
	Name    Kind = "name"
	Address Kind = "address"
	Phone   Kind = "phone"
	Secret  Kind = "secret" // anything else personal or secret
)

// ModelKinds are the kinds the model may give a value it marks.
var ModelKinds = []Kind{Name, Email, Phone, Address, Password, Card, IBAN, APIKey, Token, Secret}

// Match is a sensitive value found in a text: text[Start:End].
type Match struct {
	Start, End int
	Kind       Kind
	rank       int // the detector's place: the first wins a tie
}

// detector finds one kind: re's match, or its group 1 when it has one (the
// value after "password="), kept when ok (a checksum) says so.
type detector struct {
	kind Kind
	re   *regexp.Regexp
	ok   func(string) bool
}

var builtins = []detector{
	{PrivateKey, regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY-----|$)`), nil},
	{Password, regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]+:([^\s@/]+)@`), nil},
	{Email, regexp.MustCompile(`[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}`), nil},
	{APIKey, regexp.MustCompile(`\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}\b`), nil},
	{APIKey, regexp.MustCompile(`\bAIza[0-9A-Za-z_\-]{35}`), nil},
	{APIKey, regexp.MustCompile(`\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}`), hasDigitAndLetter},
	{AccessKey, regexp.MustCompile(`\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b`), nil},
	{Token, regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{36,255}\b`), nil},
	{Token, regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{22,255}\b`), nil},
	{Token, regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9\-]{10,}`), nil},
	{Token, regexp.MustCompile(`\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,}`), nil},
	{Password, regexp.MustCompile(`(?i)\b(?:password|passwd|pwd|passphrase)\s*=\s*("[^"]+"|'[^']+'|[^\s&;,"'()\[\]{}<>]+)`), nil},
	{Token, regexp.MustCompile(`(?i)\b(?:token|secret|api[_\-]?key|access[_\-]?token|client[_\-]?secret|auth)\s*=\s*("[^"]+"|'[^']+'|[^\s&;,"'()\[\]{}<>]+)`), nil},
	{IBAN, regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b`), ibanValid},
	{Card, regexp.MustCompile(`\b\d(?:[ \-]?\d){12,18}\b`), cardValid},
}

// Detector finds sensitive values in text: the built-in kinds and an
// operator's own patterns.
type Detector struct {
	custom []*regexp.Regexp
}

// NewDetector returns a detector with the operator's patterns (RE2
// syntax), each of whose matches is a Custom value.
func NewDetector(patterns []string) (*Detector, error) {
	d := &Detector{}
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", p, err)
		}
		if re.MatchString("") {
			return nil, fmt.Errorf("pattern %q matches the empty text", p)
		}
		d.custom = append(d.custom, re)
	}
	return d, nil
}

// ParsePatterns splits RUNOPS_REDACT_PATTERNS (`;`-separated; `;;` is a
// literal semicolon) and checks each pattern.
func ParsePatterns(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(strings.ReplaceAll(s, ";;", "\x00"), ";") {
		p = strings.TrimSpace(strings.ReplaceAll(p, "\x00", ";"))
		if p != "" {
			out = append(out, p)
		}
	}
	_, err := NewDetector(out)
	return out, err
}

// Find returns the sensitive values in text, in order, none overlapping
// (where two overlap, the one that starts first wins; from one place, the
// first detector — credentials in a URL before the e-mail they look like —
// then the longer).
func (d *Detector) Find(text string) []Match {
	var all []Match
	add := func(rank int, kind Kind, re *regexp.Regexp, ok func(string) bool) {
		for _, loc := range re.FindAllStringSubmatchIndex(text, -1) {
			start, end := loc[0], loc[1]
			if len(loc) >= 4 && loc[2] >= 0 {
				start, end = loc[2], loc[3]
			}
			v := text[start:end]
			if ok != nil && !ok(v) {
				continue
			}
			all = append(all, Match{start, end, kind, rank})
		}
	}
	for i, b := range builtins {
		add(i, b.kind, b.re, b.ok)
	}
	for _, re := range d.custom {
		add(len(builtins), Custom, re, nil)
	}
	slices.SortFunc(all, func(a, b Match) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return (b.End - b.Start) - (a.End - a.Start)
	})
	var out []Match
	for _, m := range all {
		if n := len(out); n > 0 && m.Start < out[n-1].End {
			continue
		}
		out = append(out, m)
	}
	return out
}

// Scrub returns text with each sensitive value replaced by its kind in
// brackets ("[email]"): for logs and error causes, which name no variable.
// A nil detector (redaction off) returns text as it is.
func (d *Detector) Scrub(text string) string {
	if d == nil {
		return text
	}
	var b strings.Builder
	last := 0
	for _, m := range d.Find(text) {
		b.WriteString(text[last:m.Start])
		b.WriteString("[" + string(m.Kind) + "]")
		last = m.End
	}
	b.WriteString(text[last:])
	return b.String()
}

func hasDigitAndLetter(s string) bool {
	return strings.IndexFunc(s, unicode.IsDigit) >= 0 && strings.IndexFunc(s[3:], unicode.IsLetter) >= 0
}

// cardValid: 13–19 digits, grouped as cards print them (none, or groups of
// four, or Amex's 4-6-5 and Diners' 4-6-4, with one kind of separator), a
// first digit a card network uses (2–6), and the Luhn check.
func cardValid(s string) bool {
	sep := ""
	switch {
	case strings.Contains(s, " ") && strings.Contains(s, "-"):
		return false
	case strings.Contains(s, " "):
		sep = " "
	case strings.Contains(s, "-"):
		sep = "-"
	}
	digits := strings.NewReplacer(" ", "", "-", "").Replace(s)
	if len(digits) < 13 || len(digits) > 19 || digits[0] < '2' || digits[0] > '6' {
		return false
	}
	if sep != "" {
		groups := strings.Split(s, sep)
		lens := make([]int, len(groups))
		for i, g := range groups {
			lens[i] = len(g)
		}
		fours := true
		for i, n := range lens {
			if n != 4 && !(i == len(lens)-1 && n >= 1 && n <= 4) {
				fours = false
			}
		}
		if !fours && !slices.Equal(lens, []int{4, 6, 5}) && !slices.Equal(lens, []int{4, 6, 4}) {
			return false
		}
	}
	return luhn(digits)
}

func luhn(digits string) bool {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// ibanValid: 15–34 characters without spaces, and the ISO 13616 mod-97
// check.
func ibanValid(s string) bool {
	v := strings.ReplaceAll(s, " ", "")
	if len(v) < 15 || len(v) > 34 {
		return false
	}
	v = v[4:] + v[:4]
	rem := 0
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			rem = (rem*100 + int(c-'A'+10)) % 97
		default:
			return false
		}
	}
	return rem == 1
}
