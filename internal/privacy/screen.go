package privacy

import (
	"image"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/runops/runops/internal/ocr"
)

// Screen is what OCR read on one picture, as one text: its lines joined by
// line breaks, their words by spaces, each byte knowing its word.
type Screen struct {
	lines []ocr.Line
	text  string
	word  []int             // word index of each byte of text, -1 between words
	boxes []image.Rectangle // word index → its box
	words []string          // word index → its text, folded as OCR reads
	raw   []string          // word index → its text, without the punctuation around it
	line  []int             // word index → its line
	// views of text: as read, with wrapped lines joined, and with OCR's
	// spaces beside a token's joining characters dropped too
	views []view
	found []Match // spans of text the rules found
}

// minPart is the shortest piece of a longer value (a line of a wrapped key,
// of a private key) looked for on its own: a model that repeats one line of
// it leaks that line.
const minPart = 12

// ReadScreen prepares the lines OCR read on a picture and finds the values
// on it: every rule on the lines as read, on lines a terminal or an editor
// wrapped joined again, and with the spaces OCR puts inside tokens
// dropped. Each value found (and each line of one that spans lines) is
// looked for in the SOP's text afterwards and on the other screenshots.
func (r *Redactor) ReadScreen(lines []ocr.Line) *Screen {
	s := &Screen{lines: lines}
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteByte('\n')
			s.word = append(s.word, -1)
		}
		for j, w := range l.Words {
			if j > 0 {
				b.WriteByte(' ')
				s.word = append(s.word, -1)
			}
			b.WriteString(w.Text)
			for range len(w.Text) {
				s.word = append(s.word, len(s.boxes))
			}
			s.boxes = append(s.boxes, w.Box)
			s.line = append(s.line, i)
			raw := strings.Trim(w.Text, markTrim)
			s.raw = append(s.raw, raw)
			s.words = append(s.words, fold(raw))
		}
	}
	s.text = b.String()
	base := identity(s.text)
	tight := despaced(base)
	s.views = []view{base, tight, unwrap(tight, lines)}
	var all []Match
	seen := map[string]bool{}
	for _, v := range s.views {
		if seen[v.s] {
			continue
		}
		seen[v.s] = true
		for _, m := range r.det.findIn(v.s) {
			start, end := v.span(m.Start, m.End)
			all = append(all, Match{start, end, m.Kind})
		}
	}
	s.found = union(all)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range s.found {
		r.learnLines(s.text[m.Start:m.End], m.Kind, true)
	}
	return s
}

// unwrap joins the lines of v (a view of a Screen's text that keeps its
// line breaks) that a terminal or an editor wrapped: a line that reaches
// the right edge of its column and ends in a token's alphabet, and the
// next, just below it, starting at the column's left edge in a token's
// alphabet, where the two parts may be one token (wrapsAcross). The line
// break between them goes; nothing else changes.
func unwrap(v view, lines []ocr.Line) view {
	type geometry struct{ left, right, top, bottom, height int }
	g := make([]geometry, len(lines))
	for i, l := range lines {
		if len(l.Words) == 0 {
			continue
		}
		first, last := l.Words[0].Box, l.Words[len(l.Words)-1].Box
		g[i] = geometry{first.Min.X, last.Max.X, first.Min.Y, last.Max.Y, max(first.Dy(), last.Dy(), 1)}
	}
	below := func(i int) bool { // line i+1 is where line i would continue
		if i+1 >= len(lines) || len(lines[i].Words) == 0 || len(lines[i+1].Words) == 0 {
			return false
		}
		a, b := g[i], g[i+1]
		tol := 2 * a.height
		edge := a.right
		for j := range lines {
			if len(lines[j].Words) > 0 && abs(g[j].left-a.left) <= tol {
				edge = max(edge, g[j].right)
			}
		}
		return a.right >= edge-tol && b.left <= a.left+tol && b.top >= a.top && b.top-a.bottom <= 2*a.height
	}
	line := 0
	return respace(v, func(run string, _, _ rune, i, j int) string {
		n := strings.Count(run, "\n")
		if n == 0 {
			return run
		}
		join := n == 1 && below(line)
		line += n
		left, right := tokenBefore(v.s, i), tokenAfter(v.s, j)
		if r, n := utf8.DecodeRuneInString(v.s[j:]); right == "" && (unicode.IsSymbol(r) || r == '|') {
			right = tokenAfter(v.s, j+n) // OCR's "£1PULR…" for "f1PULR…"
		}
		if join && left != "" && right != "" && wrapsAcross(left, right) {
			return ""
		}
		return run
	})
}

// Cover returns the boxes of the words to destroy on the screen: those of
// every value the rules found on it, and of every value known to this
// redactor — found in the text, read on another screenshot, marked by the
// model — wherever OCR reads it, within OCR's errors: a token by its
// folded characters across words and lines, a mark's words one by one
// (accents folded, one character off from 4 characters on, none of its
// everyday words alone) and as a phrase.
func (r *Redactor) Cover(s *Screen) []image.Rectangle {
	c := coverage{s: s, words: map[int]bool{}}
	base := s.views[0]
	for _, m := range s.found {
		c.span(base, m.Start, m.End)
	}
	r.mu.Lock()
	known := append([]*known(nil), r.known...)
	r.mu.Unlock()
	page := newReading(folded(s.views[len(s.views)-1], true))
	digits := digitsOf(s.text)
	for _, k := range known {
		var hits int
		switch {
		case k.digits != "":
			hits = c.number(k, base, digits)
		case k.mark && strings.ContainsRune(k.value, ' '):
			hits = c.phrase(k, base, page)
		case !k.mark && len(k.fold) >= minTokenMatch:
			hits = c.token(k, page)
		}
		hits += c.wordByWord(k)
		if k.mark && hits > 0 {
			r.mu.Lock()
			k.seen = true
			r.mu.Unlock()
		}
	}
	var out []image.Rectangle
	for i := range s.boxes {
		if c.words[i] {
			out = append(out, s.boxes[i])
		}
	}
	return out
}

// coverage is the words of one screen that Cover has chosen so far.
type coverage struct {
	s     *Screen
	words map[int]bool // word index → covered
}

// span covers the words under v's text from start to end, and returns how
// many were not covered already.
func (c coverage) span(v view, start, end int) int {
	from, to := v.span(start, end)
	n := 0
	for i := from; i < to && i < len(c.s.word); i++ {
		if c.s.word[i] >= 0 && !c.words[c.s.word[i]] {
			c.words[c.s.word[i]] = true
			n++
		}
	}
	return n
}

// number covers a marked phone or card number by its digits, in any format.
func (c coverage) number(k *known, base, digits view) int {
	hits := 0
	for from := 0; ; {
		i := strings.Index(digits.s[from:], k.digits)
		if i < 0 {
			break
		}
		start, end := digits.span(from+i, from+i+len(k.digits))
		hits += c.span(base, numberStart(c.s.text, start), end)
		from += i + len(k.digits)
	}
	return hits
}

// phrase covers a marked phrase as read, or else within OCR's errors, as
// whole words.
func (c coverage) phrase(k *known, base view, page *reading) int {
	hits := 0
	edits := allowedEdits(len(k.fold))
	for _, e := range []int{0, edits} {
		for _, at := range approx(page.runes, k.fold, e) {
			from, to := page.v.span(page.offsets[at[0]], page.offsets[at[1]])
			if bounded(c.s.text, from, to) {
				hits += c.span(base, from, to)
			}
		}
		if hits > 0 || !mayContain(page.v.s, k.fold, edits) {
			break
		}
	}
	return hits
}

// token covers a value the rules found by its folded characters, or by its
// spelling with a digraph, within OCR's errors, across words and lines.
func (c coverage) token(k *known, page *reading) int {
	hits := 0
	edits := allowedEdits(len(k.fold))
	for _, pattern := range [][]rune{k.fold, k.digram} {
		if len(pattern) == 0 || !mayContain(page.v.s, pattern, edits) {
			continue
		}
		for _, at := range approx(page.runes, pattern, edits) {
			hits += c.span(page.v, page.offsets[at[0]], page.offsets[at[1]])
		}
	}
	return hits
}

// wordByWord covers a mark's words, and a value too short to match as a
// token, one word at a time: accents folded, one character off from 4
// characters on, never an everyday word unless as typed. It returns how
// many words were not covered already.
func (c coverage) wordByWord(k *known) int {
	var tokens []markWord
	switch {
	case k.mark:
		tokens = k.words
	case len(k.fold) < minTokenMatch:
		tokens = []markWord{{string(k.fold), string(k.text), false}}
	}
	// A name's words count alone; the words of an address or a phone
	// number ("Kingdom", "366") only with another of them on their line.
	alone := !k.mark || k.kind == Name || len(tokens) == 1
	matched := map[int][]int{} // line → words
	tokensOn := map[int]map[string]bool{}
	short := map[int]bool{} // word → matched a short token only
	s := c.s
	for _, t := range tokens {
		for i, w := range s.words {
			if w == "" || !near(w, t.ocr) {
				continue
			}
			// An everyday word ("all", "Save") is a mark's only as
			// typed, not one OCR confusion or edit away from it.
			if isEveryday(s.raw[i]) && foldText(s.raw[i]) != t.text {
				continue
			}
			matched[s.line[i]] = append(matched[s.line[i]], i)
			short[i] = t.short
			if tokensOn[s.line[i]] == nil {
				tokensOn[s.line[i]] = map[string]bool{}
			}
			tokensOn[s.line[i]][t.ocr] = true
		}
	}
	hits := 0
	for l, ws := range matched {
		if alone || len(tokensOn[l]) > 1 {
			for _, i := range ws {
				if short[i] && len(tokensOn[l]) < 2 {
					continue
				}
				if !c.words[i] {
					c.words[i] = true
					hits++
				}
			}
		}
	}
	return hits
}

// mayContain tells, cheaply, whether text can hold pattern within k edits:
// cut into k+1 pieces, one of them is in text exactly.
func mayContain(text string, pattern []rune, k int) bool {
	n := len(pattern) / (k + 1)
	if n == 0 {
		return true
	}
	for i := 0; i <= k; i++ {
		if strings.Contains(text, string(pattern[i*n:(i+1)*n])) {
			return true
		}
	}
	return false
}
