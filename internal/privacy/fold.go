package privacy

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Folding: how OCR and a person read a value alike. Case goes, accents go
// (Núñez is Nunez), characters OCR confuses are one (I, l, 1 and | are l;
// O and 0 are o; S and 5, B and 8, Z and 2), ligatures and letters OCR
// reads as two are spelled out. Folded texts are compared with their
// spaces dropped: OCR puts spaces inside tokens ("sk- ant -api03").

// foldRune returns r as folded text: "" for a space or a combining mark;
// with ocr, the characters OCR confuses are one.
func foldRune(r rune, ocr bool) string {
	if unicode.IsSpace(r) || unicode.Is(unicode.Mn, r) {
		return ""
	}
	switch r {
	case 'ß':
		return "ss"
	case 'æ', 'Æ':
		return "ae"
	case 'œ', 'Œ':
		return "oe"
	case 'ø', 'Ø':
		return "o"
	case 'ł', 'Ł', 'ı':
		return "l"
	case 'đ', 'Đ':
		return "d"
	}
	if r >= utf8.RuneSelf {
		// The base letter of a precomposed one: é is e and a mark.
		d := norm.NFD.String(string(r))
		if base, _ := utf8.DecodeRuneInString(d); base != r && base < utf8.RuneSelf {
			r = base
		}
	}
	r = unicode.ToLower(r)
	if !ocr {
		return string(r)
	}
	switch r {
	case 'i', '1', '|', '!':
		return "l"
	case '0':
		return "o"
	case '5':
		return "s"
	case '8':
		return "b"
	case '2':
		return "z"
	}
	return string(r)
}

// folded is a view of v folded rune by rune, spaces dropped; with ocr,
// OCR's confusable characters are one.
func folded(v view, ocr bool) view {
	var w viewBuilder
	for i, r := range v.s {
		n := utf8.RuneLen(r)
		if r == utf8.RuneError {
			n = 1
		}
		if f := foldRune(r, ocr); f != "" {
			w.add(f, v.from[i], v.to[i+n-1])
		}
	}
	return w.view()
}

// fold returns s as OCR reads it, folded, spaces dropped: for what OCR
// read, or will read.
func fold(s string) string { return folded(identity(s), true).s }

// foldText returns s with its case, accents and spacing folded, nothing
// else: for what a person or the model typed ("Sam" is not "5AM").
func foldText(s string) string { return folded(identity(s), false).s }

// digitsOf returns the digits of s, and where each comes from.
func digitsOf(s string) view {
	var w viewBuilder
	for i, r := range s {
		if r >= '0' && r <= '9' {
			w.add(string(r), i, i+1)
		}
	}
	return w.view()
}

// digraphs are the pairs OCR reads one letter as, folded (i is l): ñ as
// fi, n as ri, m as rn, d as cl, w as vv. A word is compared in both
// spellings.
var digraphs = strings.NewReplacer("fl", "n", "rl", "n", "rn", "m", "cl", "d", "vv", "w")

// allowedEdits is how many characters a folded value of n characters may
// be off and still be read as that value: none under 4, one from 4, two
// from 12, and one more every 12 after that (a person reads a long key
// with a misread character or two as the key).
func allowedEdits(n int) int {
	switch {
	case n < 4:
		return 0
	case n < 12:
		return 1
	}
	return min(1+n/12, 4)
}

// near tells whether the folded word w, as OCR read it, reads as the
// folded token t: the same, or within allowedEdits; from 5 characters on,
// also with OCR's digraphs in w read as the letter they stand for.
func near(w, t string) bool {
	if w == t {
		return true
	}
	n := utf8.RuneCountInString(t)
	k := allowedEdits(n)
	if k == 0 {
		return false
	}
	if abs(utf8.RuneCountInString(w)-n) <= k && distance(w, t) <= k {
		return true
	}
	if n < 5 {
		return false
	}
	dw := digraphs.Replace(w)
	return dw != w && abs(utf8.RuneCountInString(dw)-n) <= k && distance(dw, t) <= k
}

// approx returns the spans [start, end) of text (runes) that are within k
// edits of pattern, none overlapping, leftmost first (Sellers' algorithm:
// edit distance with a free start, each cell remembering where its
// alignment began). Of alignments that overlap, the closest is kept, and
// of those the one that ends first: an occurrence never takes a character
// of the text after it.
func approx(text, pattern []rune, k int) [][2]int {
	m := len(pattern)
	if m == 0 || len(text) == 0 {
		return nil
	}
	cost := make([]int, m+1)
	start := make([]int, m+1)
	for i := range cost {
		cost[i] = i
	}
	type hit struct{ start, end, cost int }
	var out [][2]int
	var cur *hit
	for j, c := range text {
		prevCost, prevStart := cost[0], start[0] // the diagonal
		cost[0], start[0] = 0, j+1
		for i := 1; i <= m; i++ {
			c0, s0 := prevCost, prevStart
			if pattern[i-1] != c {
				c0++
			}
			if d := cost[i] + 1; d < c0 { // a character of text too many
				c0, s0 = d, start[i]
			}
			if d := cost[i-1] + 1; d < c0 { // a character of pattern missing
				c0, s0 = d, start[i-1]
			}
			prevCost, prevStart = cost[i], start[i]
			cost[i], start[i] = c0, s0
		}
		if cost[m] > k {
			continue
		}
		h := hit{start[m], j + 1, cost[m]}
		switch {
		case cur == nil:
			cur = &h
		case h.start < cur.end: // overlapping: the closer one
			if h.cost < cur.cost {
				*cur = h
			}
		default:
			out = append(out, [2]int{cur.start, cur.end})
			*cur = h
		}
	}
	if cur != nil {
		out = append(out, [2]int{cur.start, cur.end})
	}
	return out
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// distance is the Levenshtein distance between a and b, in runes.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
