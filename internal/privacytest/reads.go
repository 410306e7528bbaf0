package privacytest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode"
)

// Reads tells whether ocrText, what OCR read on a screen (Read, or
// mediatest.ScreenText: lines of text), still holds v as a person would
// read it: case ignored, accents and the characters OCR confuses folded
// together (I, l, 1 and |; O and 0; S and 5; B and 8; Z and 2; G, Q and 9;
// the dashes; ñ read as "fi", m as "rn", w as "vv"), whitespace ignored
// (OCR inserts it, and a value wrapped over lines is still the value), and
// one edit forgiven from 8 characters on, one for every 10 characters from
// 20 on. A value shown over several lines is read too when one of its
// Pieces is.
func Reads(ocrText string, v Value) bool {
	text := fold(ocrText, true)
	if within(text, v.Text) {
		return true
	}
	for _, p := range v.Pieces {
		if within(text, p) {
			return true
		}
	}
	return false
}

// WordsRead counts how many of words (each counted as often as it is
// listed) ocrText holds as words of their own: case ignored, accents and
// confusable characters folded as Reads does, punctuation around a word
// dropped, and no edit forgiven.
func WordsRead(ocrText string, words []string) (read, total int) {
	seen := map[string]bool{}
	for _, w := range strings.Fields(ocrText) {
		seen[string(fold(trimPunct(w), false))] = true
	}
	for _, w := range words {
		if seen[string(fold(trimPunct(w), false))] {
			read++
		}
	}
	return read, len(words)
}

func trimPunct(w string) string {
	return strings.TrimFunc(w, func(r rune) bool { return unicode.IsPunct(r) || unicode.IsSymbol(r) })
}

// within tells whether the folded text holds value with at most one edit
// from 8 of its characters on, one for every 10 from 20 on (Sellers'
// approximate substring match: edit distance with a free start and end in
// the text).
func within(text []rune, value string) bool {
	pat, alts := foldValue(value)
	m := len(pat)
	if m == 0 {
		return false
	}
	budget := m / 10
	if m >= 8 {
		budget = max(budget, 1)
	}
	// rows[i%3][j]: the fewest edits that make pat[:j] a substring of text
	// ending at i. Three rows: an alternative spans two characters at most.
	var rows [3][]int
	for k := range rows {
		rows[k] = make([]int, m+1)
	}
	for j := range m + 1 {
		rows[0][j] = j
	}
	for i := 1; i <= len(text); i++ {
		cur, prev := rows[i%3], rows[(i-1)%3]
		cur[0] = 0
		for j := 1; j <= m; j++ {
			cost := 1
			if text[i-1] == pat[j-1] {
				cost = 0
			}
			best := min(prev[j-1]+cost, prev[j]+1, cur[j-1]+1)
			for _, alt := range alts[j-1] {
				if n := len(alt); n <= i && string(text[i-n:i]) == string(alt) {
					best = min(best, rows[(i-n)%3][j-1])
				}
			}
			cur[j] = best
		}
		if cur[m] <= budget {
			return true
		}
	}
	return false
}

// fold lower-cases s, drops accents, maps each confusable character to
// one of its class and, with dropSpace, leaves whitespace out.
func fold(s string, dropSpace bool) []rune {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if dropSpace && unicode.IsSpace(r) {
			continue
		}
		out = append(out, foldRune(r))
	}
	return out
}

func foldRune(r rune) rune {
	r = unicode.ToLower(r)
	if a, ok := accents[r]; ok {
		r = a
	}
	if c, ok := confusable[r]; ok {
		r = c
	}
	return r
}

// foldValue folds value as fold does, whitespace left out, and lists for
// each of its characters what OCR reads for it in two characters.
func foldValue(value string) ([]rune, [][][]rune) {
	var pat []rune
	var alts [][][]rune
	for _, r := range value {
		if unicode.IsSpace(r) {
			continue
		}
		pat = append(pat, foldRune(r))
		var a [][]rune
		for _, s := range split[unicode.ToLower(r)] {
			a = append(a, fold(s, true))
		}
		alts = append(alts, a)
	}
	return pat, alts
}

// split is what OCR reads, in two characters, for one a person reads.
var split = map[rune][]string{'ñ': {"fi", "ri"}, 'm': {"rn"}, 'w': {"vv"}}

// confusable maps the characters OCR mistakes for one another (after
// lower-casing and dropping accents) to one of their class.
var confusable = map[rune]rune{
	'1': 'l', 'i': 'l', '|': 'l', '!': 'l',
	'0': 'o',
	'5': 's', '$': 's',
	'8': 'b',
	'2': 'z',
	'9': 'g', 'q': 'g',
	'_': '-', '—': '-', '–': '-', '~': '-',
	',': '.',
	';': ':',
	'"': '\'', '`': '\'', '‘': '\'', '’': '\'', '“': '\'', '”': '\'',
	'[': '(', '{': '(', ']': ')', '}': ')',
}

// accents maps lower-case Latin letters with a mark to the letter.
var accents = map[rune]rune{}

func init() {
	for base, marked := range map[rune]string{
		'a': "àáâãäåāă", 'c': "çćč", 'e': "èéêëēėęě", 'i': "ìíîïī", 'n': "ñńň", 'o': "òóôõöøō",
		'u': "ùúûüūů", 'y': "ýÿ", 's': "śšş", 'z': "źżž", 'l': "ł", 'r': "ř", 'd': "ď", 't': "ť",
	} {
		for _, r := range marked {
			accents[r] = base
			accents[unicode.ToUpper(r)] = unicode.ToUpper(base)
		}
	}
}

// Read is what Tesseract (the CLI, English, its own page segmentation)
// reads on the picture at path. It is this package's own reading, shared
// with nothing the service runs, so that it can judge the service's. It
// fails the test if tesseract is missing or fails; ReadErr, for another
// goroutine than the test's, returns the error.
func Read(t testing.TB, path string) string {
	t.Helper()
	text, err := ReadErr(path)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// ReadErr: see Read.
func ReadErr(path string) (string, error) {
	cmd := exec.Command("tesseract", path, "-", "-l", "eng")
	cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("tesseract %s: %v %s", path, err, stderr.String())
	}
	return string(out), nil
}
