// Package privacytest is the yardstick of the privacy pass. New generates
// a corpus of ordinary screens (a billing page, terminals, editors showing
// keys, a sign-in form…) carrying secret and personal values that look
// exactly like real ones, from a seed; Recording.Make renders them with
// ffmpeg (no screenshot is kept in git). Read is what Tesseract reads on a
// picture, Reads whether that still holds a value as a person would read
// it, WordsRead how many of the screen's ordinary words it holds; and
// ModelAnswer is the answer of a careless model that copies every value
// into the SOP's text. It shares nothing with internal/privacy or
// internal/ocr: no pattern, no reader. For tests and benchmarks only.
package privacytest

import (
	"image"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/runops/runops/internal/mediatest"
)

// Value is a secret or personal value a screen shows.
type Value struct {
	// Kind is what it is: github, gitlab, slack, stripe, aws_id,
	// aws_secret, google, openai, anthropic, supabase_jwt, npm, pypi,
	// sendgrid, twilio, pem, openssh, db_url, password, bearer, card,
	// iban, email, phone, name or address.
	Kind string
	// Text is the value exactly: for a database URL, a password or a
	// Bearer header the secret part only; a key block or an address has
	// its lines, joined by \n.
	Text string
	// Pieces are the substantial parts of it (12 characters and more) that
	// the screen shows on lines of their own: the two parts of a key a
	// terminal wrapped, a key block's body lines, an address's street
	// line. Nil when it is shown on one line.
	Pieces []string
	// Mark is the kind the service's model schema gives it (name, email,
	// phone, address, password, card_number, iban, api_key, token,
	// secret); Marked tells whether the model marks it (names, addresses
	// and phones: no pattern finds them).
	Mark   string
	Marked bool
	// Shown is the text it is part of as the screen shows it: its line
	// (a terminal's line before wrapping) or its block.
	Shown string
	// Box is where it is drawn on its screen, in pixels: from its first
	// character's left to its last one's advance, the font's size and a
	// fifth high (a wrapped value's box spans its rows).
	Box image.Rectangle
}

// Screen is one screen of the corpus, as it is drawn and what it holds.
type Screen struct {
	Name          string // what it shows, also its step's id in ModelNodes: billing, terminal…
	Title         string // what the person does there, as a step's label would say
	Second        int    // the second of its recording whose frame shows it
	Width, Height int
	Picture       mediatest.Screen
	Values        []Value
	// Words are the ordinary words on it (menus, headings, labels,
	// sentences; three letters and more, none touching a value), whose
	// legibility after redaction is measured.
	Words []string
}

// ScreenSeconds is how long each screen of a recording shows; screen i is
// shown from second ScreenSeconds*i, and its Second is one in.
const ScreenSeconds = 3

// Recording is screens of one size shown one after another.
type Recording struct {
	Name          string // 720p, 1080p
	Width, Height int
	Screens       []Screen
}

// Spec is what mediatest draws for r.
func (r Recording) Spec() mediatest.Screens {
	s := mediatest.Screens{Width: r.Width, Height: r.Height, Seconds: ScreenSeconds}
	for _, sc := range r.Screens {
		s.Screens = append(s.Screens, sc.Picture)
	}
	return s
}

// Make renders r into dir/<Name>.mp4 and returns its path.
func (r Recording) Make(t testing.TB, dir string) string {
	t.Helper()
	return mediatest.MakeScreens(t, dir, r.Name+".mp4", r.Spec())
}

// Corpus is the generated corpus: a 720p and a 1080p recording.
type Corpus struct {
	Recordings []Recording
}

// Screens are the screens of every recording.
func (c Corpus) Screens() []Screen {
	var out []Screen
	for _, r := range c.Recordings {
		out = append(out, r.Screens...)
	}
	return out
}

// Values are the values of every screen.
func (c Corpus) Values() []Value {
	var out []Value
	for _, s := range c.Screens() {
		out = append(out, s.Values...)
	}
	return out
}

// marks is the model schema's kind of each kind of value.
var marks = map[string]string{
	"github": "token", "gitlab": "token", "slack": "token", "stripe": "api_key", "aws_id": "api_key",
	"aws_secret": "secret", "google": "api_key", "openai": "api_key", "anthropic": "api_key",
	"supabase_jwt": "token", "npm": "token", "pypi": "token", "sendgrid": "api_key", "twilio": "api_key",
	"pem": "secret", "openssh": "secret", "db_url": "password", "password": "password", "bearer": "token",
	"card": "card_number", "iban": "iban", "email": "email", "phone": "phone", "name": "name", "address": "address",
}

// val is a value of kind; names, addresses and phones are marked.
func val(kind, text string) Value {
	mark, ok := marks[kind]
	if !ok {
		panic("privacytest: unknown kind " + kind)
	}
	return Value{Kind: kind, Text: text, Mark: mark, Marked: kind == "name" || kind == "address" || kind == "phone"}
}

// page builds a Screen: lines of ordinary text and values, each value
// recorded with where it is drawn, each ordinary word listed.
type page struct {
	s    Screen
	font mediatest.Font
}

func newPage(name, title string, w, h int, theme mediatest.Theme, font mediatest.Font) *page {
	return &page{s: Screen{Name: name, Title: title, Width: w, Height: h,
		Picture: mediatest.Screen{Theme: theme, Font: font}}, font: font}
}

// line draws parts (strings: ordinary text; Values) on one line at x, y,
// in the page's font.
func (p *page) line(x, y, size int, parts ...any) { p.wrapped(x, y, size, 0, p.font, parts...) }

// sans and mono draw a line in that font, whatever the page's.
func (p *page) sans(x, y, size int, parts ...any) { p.wrapped(x, y, size, 0, mediatest.Sans, parts...) }
func (p *page) mono(x, y, size int, parts ...any) { p.wrapped(x, y, size, 0, mediatest.Mono, parts...) }

// lineHeight is the distance between the rows of a wrapped line or a
// block in a font of size.
func lineHeight(size int) int { return size * 3 / 2 }

// term draws parts as a terminal of cols columns does, in Mono: a line
// longer than cols continues on the next row at x, cut wherever the
// columns end (inside a word or a key). It returns the rows drawn.
func (p *page) term(x, y, size, cols int, parts ...any) int {
	return p.wrapped(x, y, size, cols, mediatest.Mono, parts...)
}

// wrapped draws parts in font at x, y, cut into rows of cols characters
// (all on one row when cols is 0), one under another; it records each
// value with the line it is part of, its box and, when it is cut, its
// pieces, and each ordinary word. It returns the rows drawn (a blank line
// is one).
func (p *page) wrapped(x, y, size, cols int, font mediatest.Font, parts ...any) int {
	// The line's characters, each with the index of its value (-1:
	// ordinary text).
	var line []rune
	var owner []int
	var vals []Value
	for _, part := range parts {
		switch part := part.(type) {
		case string:
			for _, r := range part {
				line, owner = append(line, r), append(owner, -1)
			}
		case Value:
			for _, r := range part.Text {
				line, owner = append(line, r), append(owner, len(vals))
			}
			vals = append(vals, part)
		default:
			panic("privacytest: a line part is a string or a Value")
		}
	}
	if len(line) == 0 {
		return 1 // a blank line
	}
	if cols <= 0 {
		cols = len(line)
	}
	rows := (len(line) + cols - 1) / cols
	rowOf := func(i int) int { return i / cols }
	for r := range rows {
		text := string(line[r*cols : min((r+1)*cols, len(line))])
		p.s.Picture.Lines = append(p.s.Picture.Lines, mediatest.Line{Text: text, X: x, Y: y + r*lineHeight(size), Size: size, Font: font})
	}
	// Each value: its box (the union of its parts' boxes) and, wrapped,
	// its pieces.
	for k, v := range vals {
		v.Shown = strings.TrimSpace(string(line))
		parts := map[int][]rune{} // row: the value's characters on it
		for i, o := range owner {
			if o != k {
				continue
			}
			r := rowOf(i)
			left := x + textWidth(line[r*cols:i], size, font)
			rect := image.Rect(left, y+r*lineHeight(size), left+textWidth(line[i:i+1], size, font), y+r*lineHeight(size)+size*6/5)
			if v.Box.Empty() {
				v.Box = rect
			} else {
				v.Box = v.Box.Union(rect)
			}
			parts[r] = append(parts[r], line[i])
		}
		if len(parts) > 1 {
			for r := range rows {
				if part, ok := parts[r]; ok {
					v.Pieces = appendPiece(v.Pieces, string(part))
				}
			}
		}
		p.s.Values = append(p.s.Values, v)
	}
	// Ordinary words: runs of non-space characters, none of a value's, on
	// one row.
	for i := 0; i < len(line); {
		if unicode.IsSpace(line[i]) {
			i++
			continue
		}
		j, ordinary := i, true
		for ; j < len(line) && !unicode.IsSpace(line[j]); j++ {
			ordinary = ordinary && owner[j] < 0 && rowOf(j) == rowOf(i)
		}
		if w := trimPunct(string(line[i:j])); ordinary && isWord(w) {
			p.s.Words = append(p.s.Words, w)
		}
		i = j
	}
	return rows
}

// appendPiece keeps piece when it is substantial: 12 characters and more.
func appendPiece(pieces []string, piece string) []string {
	if len([]rune(strings.Join(strings.Fields(piece), ""))) >= 12 {
		return append(pieces, piece)
	}
	return pieces
}

// isWord: three letters and more, letters only.
func isWord(w string) bool {
	n := 0
	for _, r := range w {
		if !unicode.IsLetter(r) {
			return false
		}
		n++
	}
	return n >= 3
}

// block draws a value over several lines at x, y (one under another, in
// the page's font); numbered, a gutter of line numbers from first at
// gutterX left of it, as editors show. pieces picks the lines that are
// substantial parts of the value. It returns the y under it.
func (p *page) block(x, y, size int, v Value, gutterX, first int, pieces func(i int, line string) bool) int {
	lines := strings.Split(v.Text, "\n")
	v.Shown = v.Text
	for i, l := range lines {
		ly := y + i*lineHeight(size)
		if first > 0 {
			p.s.Picture.Lines = append(p.s.Picture.Lines, mediatest.Line{Text: strconv.Itoa(first + i), X: gutterX, Y: ly, Size: size, Font: p.font})
		}
		p.s.Picture.Lines = append(p.s.Picture.Lines, mediatest.Line{Text: l, X: x, Y: ly, Size: size, Font: p.font})
		rect := image.Rect(x, ly, x+textWidth([]rune(l), size, p.font), ly+size*6/5)
		if i == 0 {
			v.Box = rect
		} else {
			v.Box = v.Box.Union(rect)
		}
		if pieces(i, l) {
			v.Pieces = appendPiece(v.Pieces, l)
		}
	}
	p.s.Values = append(p.s.Values, v)
	return y + len(lines)*lineHeight(size)
}

// keyBody: the body lines of a key block, not its BEGIN and END lines
// (the same in every key).
func keyBody(_ int, line string) bool { return !strings.HasPrefix(line, "-----") }

// street: an address's first line (its others, a postcode and city or a
// country, are shared by many).
func street(i int, _ string) bool { return i == 0 }

// rule draws a filled rectangle (a rule, a button); frame an outline.
func (p *page) rule(x, y, w, h int) {
	p.s.Picture.Boxes = append(p.s.Picture.Boxes, mediatest.Box{X: x, Y: y, W: w, H: h, Fill: true})
}

func (p *page) frame(x, y, w, h int) {
	p.s.Picture.Boxes = append(p.s.Picture.Boxes, mediatest.Box{X: x, Y: y, W: w, H: h, Thick: 2})
}

// textWidth is how wide s is drawn in font at size, in pixels.
func textWidth(s []rune, size int, font mediatest.Font) int {
	return mediatest.TextWidth(font, size, string(s))
}
