package privacy

import (
	"image"
	"strings"
	"unicode/utf8"

	"github.com/runops/runops/internal/ocr"
)

// Boxes returns the boxes of the words to destroy on a screenshot whose
// text OCR read as lines: every word of a value the detectors, the
// operator's patterns or the model's marks find in a line, and every word
// that comes close to a value this redactor has replaced (OCR misreads a
// character or two that a person still reads). A value found only on the
// screenshot is counted (source ocr), and its words are compared with
// those of the screenshots read after it.
func (r *Redactor) Boxes(lines []ocr.Line) []image.Rectangle {
	r.mu.Lock()
	defer r.mu.Unlock()
	var boxes []image.Rectangle
	cover := func(l ocr.Line, start, end int) {
		for i, w := range l.Words {
			ws, we := l.Starts[i], l.Starts[i]+len(w.Text)
			if ws < end && start < we {
				boxes = append(boxes, w.Box)
			}
		}
	}
	tokens := r.tokens()
	for _, l := range lines {
		if r.markRe != nil {
			for _, loc := range r.markRe.FindAllStringIndex(l.Text, -1) {
				cover(l, loc[0], loc[1])
			}
		}
		for _, m := range r.det.Find(l.Text) {
			cover(l, m.Start, m.End)
			if v := l.Text[m.Start:m.End]; !r.known(v, m.Kind) {
				// Counted once, and looked for on the screenshots read after
				// this one, where OCR may misread it.
				r.seen[normalise(v, m.Kind)] = true
				r.values = append(r.values, v)
				r.CountOCR(m.Kind)
			}
		}
		for i, w := range l.Words {
			if close(w.Text, tokens) {
				cover(l, l.Starts[i], l.Starts[i]+len(w.Text))
			}
		}
	}
	return boxes
}

// known tells whether v was replaced in the text, or already counted on
// another screenshot.
func (r *Redactor) known(v string, kind Kind) bool {
	key := normalise(v, kind)
	_, named := r.vars[key]
	return named || r.seen[key]
}

// tokens are the words of the values replaced so far, and of the marked
// values: what a screenshot's words are compared with.
func (r *Redactor) tokens() []string {
	var out []string
	add := func(v string) {
		for _, t := range strings.Fields(v) {
			out = append(out, strings.ToLower(strings.Trim(t, ".,;:()[]{}<>\"'")))
		}
	}
	for _, v := range r.values {
		add(v)
	}
	for _, m := range r.marks {
		add(m.Value)
	}
	return out
}

// close tells whether word reads as one of tokens: the same, ignoring case,
// or, for a long token, a character or two off (1 for 6–7 characters, 2 from
// 8 on; shorter ones must match exactly, or every short word would).
func close(word string, tokens []string) bool {
	w := strings.ToLower(strings.Trim(word, ".,;:()[]{}<>\"'"))
	if utf8.RuneCountInString(w) < 3 {
		return false
	}
	for _, t := range tokens {
		n := utf8.RuneCountInString(t)
		switch {
		case n < 3:
		case w == t:
			return true
		case n >= 8 && abs(utf8.RuneCountInString(w)-n) <= 2 && distance(w, t) <= 2:
			return true
		case n >= 6 && abs(utf8.RuneCountInString(w)-n) <= 1 && distance(w, t) <= 1:
			return true
		}
	}
	return false
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
