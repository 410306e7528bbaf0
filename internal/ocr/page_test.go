package ocr

import (
	"image"
	"slices"
	"testing"
)

// line is a one-word line at x, y (20 pixels high, w wide).
func line(text string, x, y, w int) Line {
	return Line{Text: text, Words: []Word{{Text: text, Box: image.Rect(x, y, x+w, y+20)}}}
}

// Lines read again go among the reused ones where a whole reading has
// them: after the nearest reused line above them in their column, before
// the highest below when none is above, after the nearest above of all when
// their column has none.
// Before, they all went after every reused line, and a label reused from
// the reference was no longer just above the value read again below it.
func TestLinesReadAgainGoWhereTheyStand(t *testing.T) {
	reused := []Line{
		line("Email", 0, 0, 100), line("Password", 0, 100, 100), line("Keep me signed in", 0, 300, 300), // left column
		line("Help", 600, 0, 100), line("Contact", 600, 200, 100), // right column
	}
	fresh := []Line{
		line("title", 0, -60, 300),            // above everything, left
		line("Vq7#kP2m!xL9wR4z", 0, 150, 200), // under Password
		line("Hide", 220, 150, 60),            // same row, past Password's width but within Keep me signed in's
		line("status", 600, 100, 100),         // right column, between Help and Contact
		line("footer", 400, 500, 50),          // no column: by its top, last
	}
	var got []string
	for _, l := range interleave(reused, fresh) {
		got = append(got, l.Text)
	}
	want := []string{"title", "Email", "Password", "Vq7#kP2m!xL9wR4z", "Hide", "Keep me signed in", "footer", "Help", "status", "Contact"}
	if !slices.Equal(got, want) {
		t.Errorf("order %q\nwant  %q", got, want)
	}
}

// A wide line above a label that comes later in Tesseract's order (a
// banner read after the form) is not the line a value goes under: the line
// nearest above the value is, by height on the picture.
func TestALineReadAgainGoesUnderTheNearestLineAbove(t *testing.T) {
	reused := []Line{line("Password", 0, 100, 100), line("Banner", 0, 0, 1000)}
	var got []string
	for _, l := range interleave(reused, []Line{line("Vq7#kP2m!xL9wR4z", 0, 150, 200)}) {
		got = append(got, l.Text)
	}
	if want := []string{"Password", "Vq7#kP2m!xL9wR4z", "Banner"}; !slices.Equal(got, want) {
		t.Errorf("order %q; want %q", got, want)
	}
}
