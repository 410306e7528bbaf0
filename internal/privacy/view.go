package privacy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// A view is a text derived from another — its line breaks joined, its
// spacing collapsed, its letters folded — that remembers where each of its
// bytes comes from, so that a value found in the view is a span of the
// original. Neither a line nor a run of single spaces is the unit of a
// value: a token a terminal wrapped, or a name split by a line break, is
// one value in some view of its text.
type view struct {
	s        string
	from, to []int // byte i of s comes from original[from[i]:to[i]]
}

// identity is the text itself.
func identity(s string) view {
	v := view{s: s, from: make([]int, len(s)), to: make([]int, len(s))}
	for i := range s {
		_, n := utf8.DecodeRuneInString(s[i:])
		for k := range n {
			v.from[i+k], v.to[i+k] = i, i+n
		}
	}
	return v
}

// hidesShape tells a rune plain takes out or reads as another.
func hidesShape(r rune) bool { return fullWidth(r) || invisible(r) }

// fullWidth tells a full-width form of an ASCII sign (r - 0xFEE0 is it).
func fullWidth(r rune) bool { return r >= 0xFF01 && r <= 0xFF5E }

// invisible tells a format character (Unicode's Cf), which shows nothing.
func invisible(r rune) bool { return unicode.Is(unicode.Cf, r) }

// plain is v without its invisible format characters (zero-width spaces
// and joiners, soft hyphens, word joiners, byte order marks: Unicode's Cf)
// and with full-width forms as the ASCII letters, digits and signs they
// show: a key with a zero-width space inside, or a card number typed in
// full-width digits, is the value it shows.
func plain(v view) view {
	var w viewBuilder
	for i := 0; i < len(v.s); {
		r, n := utf8.DecodeRuneInString(v.s[i:])
		from, to := v.from[i], v.to[i+n-1]
		switch {
		case invisible(r):
		case fullWidth(r):
			w.add(string(r-0xFEE0), from, to)
		default:
			w.add(v.s[i:i+n], from, to)
		}
		i += n
	}
	return w.view()
}

// span is the original span of the view's s[start:end] (end > start).
func (v view) span(start, end int) (int, int) { return v.from[start], v.to[end-1] }

// unescaped is v with JSON's escaped slashes ("\/") as the slashes they
// are: a URL in a JSON string, as a log or JSON.stringify prints it, is
// the URL whose credentials and tokens the rules know.
func unescaped(v view) view {
	var w viewBuilder
	for i := 0; i < len(v.s); i++ {
		if strings.HasPrefix(v.s[i:], `\/`) {
			w.add("/", v.from[i], v.to[i+1])
			i++
			continue
		}
		w.add(v.s[i:i+1], v.from[i], v.to[i])
	}
	return w.view()
}

// viewBuilder writes a view of an original text piece by piece.
type viewBuilder struct {
	b        strings.Builder
	from, to []int
}

// add writes s, all of it coming from original[from:to].
func (w *viewBuilder) add(s string, from, to int) {
	w.b.WriteString(s)
	for range len(s) {
		w.from = append(w.from, from)
		w.to = append(w.to, to)
	}
}

func (w *viewBuilder) view() view { return view{s: w.b.String(), from: w.from, to: w.to} }

// respace rewrites the runs of whitespace of v: each run, v.s[i:j], goes
// through decide, which is given the run, the rune before it and the rune
// after it (0 at either end) and where it is, and returns what to write
// instead — the run itself, one space, or nothing.
func respace(v view, decide func(run string, before, after rune, i, j int) string) view {
	var w viewBuilder
	s := v.s
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			w.add(s[i:i+n], v.from[i], v.to[i+n-1])
			i += n
			continue
		}
		j := i
		for j < len(s) {
			r, n := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsSpace(r) {
				break
			}
			j += n
		}
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[j:])
		if i == 0 {
			before = 0
		}
		if j == len(s) {
			after = 0
		}
		out := decide(s[i:j], before, after, i, j)
		if out != "" {
			w.add(out, v.from[i], v.to[j-1])
		}
		i = j
	}
	return w.view()
}

// collapsed writes every run of whitespace that holds a line break, or more
// than one space, as one space: "Jane\n  Doe" is "Jane Doe", a card number
// wrapped after a group is whole again.
func collapsed(v view) view {
	return respace(v, func(run string, _, _ rune, _, _ int) string {
		if run == " " {
			return run
		}
		return " "
	})
}

// joined removes the runs of whitespace that hold a line break, or more
// than one space, between two parts of a token: a key wrapped by a
// terminal or an editor is one token again. One side must be long enough
// to be a token's (minWrapped characters) and the other not an everyday
// word: "key\neyJ…" and "…TE\nthen" stay apart.
func joined(v view) view {
	return respace(v, func(run string, before, after rune, i, j int) string {
		if !(strings.ContainsAny(run, "\n\r") || len(run) > 1) || !isTokenRune(before) || !isTokenRune(after) {
			return run
		}
		if wrapsAcross(tokenBefore(v.s, i), tokenAfter(v.s, j)) {
			return ""
		}
		return run
	})
}

// wrapsAcross tells whether the token parts left and right, either side of
// a line break, may be one token: right does not begin with an everyday
// word ("region=eu-west-1" is the next line of a file, not the rest of a
// key), and one of them is long enough to be a token's (minWrapped
// characters), the other not ending with an everyday word.
func wrapsAcross(left, right string) bool {
	alnum := func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }
	first := right
	if i := strings.IndexFunc(right, alnum); i >= 0 {
		first = right[:i]
	}
	last := left[strings.LastIndexFunc(left, alnum)+1:]
	if isEveryday(first) {
		return false
	}
	return len(left) >= minWrapped || len(right) >= minWrapped && !isEveryday(last)
}

// minWrapped is the shortest token part that joins across a line break.
const minWrapped = 16

// tokenBefore is the run of token characters that ends at s[:i].
func tokenBefore(s string, i int) string {
	j := i
	for j > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:j])
		if !isTokenRune(r) {
			break
		}
		j -= n
	}
	return s[j:i]
}

// tokenAfter is the run of token characters that begins at s[i:].
func tokenAfter(s string, i int) string {
	j := i
	for j < len(s) {
		r, n := utf8.DecodeRuneInString(s[j:])
		if !isTokenRune(r) {
			break
		}
		j += n
	}
	return s[i:j]
}

// despaced removes the single spaces OCR puts inside a token: beside its
// joining characters ("glpat -8xYz", "sk- ant -api03-", "SG. ab12"), and
// anywhere in a long one ("AC911905f fa65638ea4…"): between two runs of a
// token's alphabet that, joined, are 16 characters or more, one of them 8
// or more, mixing letters and digits or cases, neither an everyday word.
func despaced(v view) view {
	for range 4 { // a token OCR cut in several places joins a cut a pass
		next := respace(v, func(run string, before, after rune, i, j int) string {
			if run != " " || after == '-' && optionAhead(v.s[j:]) {
				return run
			}
			if isJoiner(before) && isTokenRune(after) || isTokenRune(before) && isJoiner(after) {
				return ""
			}
			left, right := tokenBefore(v.s, i), tokenAfter(v.s, j)
			if len(left)+len(right) >= 16 && max(len(left), len(right)) >= 8 && looksGenerated(left+right) &&
				!isEveryday(left) && !isEveryday(right) {
				return ""
			}
			return run
		})
		if next.s == v.s {
			break
		}
		v = next
	}
	return v
}

// optionAhead tells whether s begins with a command line's option
// ("--role", "-p 2222", "-o=json", "-storepass"): the space before it is
// the command's, not one OCR put inside a token. An option's name is short
// or lower-case: "-VdQCwaPEq…" is the rest of a token OCR split.
func optionAhead(s string) bool {
	if strings.HasPrefix(s, "--") {
		return len(s) > 2 && unicode.IsLower(rune(s[2]))
	}
	name := strings.TrimPrefix(s, "-")
	end := strings.IndexFunc(name, func(r rune) bool { return !unicode.IsLetter(r) })
	word := name
	if end >= 0 {
		word = name[:end]
	}
	return word != "" && (end < 0 || name[end] == ' ' || name[end] == '=') && (len(word) <= 2 || strings.ToLower(word) == word)
}

// isTokenRune tells whether r may be part of a key, token or encoded value.
func isTokenRune(r rune) bool {
	return r < utf8.RuneSelf && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("-_+/=.~", r))
}

// isJoiner tells whether r joins the parts of a token: OCR often reads a
// space beside one.
func isJoiner(r rune) bool { return strings.ContainsRune("-_.=/+", r) }

// isWordRune tells whether r is a letter or digit of any script, or a mark
// on one: what a value may not touch without being part of a longer word.
// (Go's \b knows ASCII letters only, so "Chloé" would end before "é".)
// Scripts written without spaces between words (Han, kana, Hangul with
// its particles) have no such boundary: 山田太郎さん holds the name 山田太郎.
func isWordRune(r rune) bool {
	if unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul) {
		return false
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)
}

// bounded tells whether s[start:end] does not continue a word on either
// side (letters and digits of every script): where it begins or ends with
// one, the character beside it is not one.
func bounded(s string, start, end int) bool {
	if start >= end {
		return false
	}
	first, _ := utf8.DecodeRuneInString(s[start:end])
	last, _ := utf8.DecodeLastRuneInString(s[start:end])
	if start > 0 && isWordRune(first) {
		if r, _ := utf8.DecodeLastRuneInString(s[:start]); isWordRune(r) {
			return false
		}
	}
	if end < len(s) && isWordRune(last) {
		if r, _ := utf8.DecodeRuneInString(s[end:]); isWordRune(r) {
			return false
		}
	}
	return true
}
