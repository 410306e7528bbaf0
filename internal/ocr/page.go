package ocr

import (
	"bufio"
	"context"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"slices"
)

// Page is a picture's luma and the lines OCR read on it.
type Page struct {
	Gray  *image.Gray
	Lines []Line
}

// ReadPage reads every line of text on gray (written as a PGM file in
// tmpDir for tesseract, and removed).
func ReadPage(ctx context.Context, gray *image.Gray, tmpDir string) (*Page, error) {
	lines, err := readGray(ctx, gray, tmpDir)
	if err != nil {
		return nil, err
	}
	return &Page{Gray: gray, Lines: lines}, nil
}

// Tolerance is how far (in luma levels) a pixel may be from the reference's
// for its row to count as unchanged: the re-encoding of a video at a
// keyframe moves pixels by a few levels, while a glyph that appears or goes
// moves them by a hundred and more.
const Tolerance = 32

// margin widens the rows read again: a glyph's anti-aliased edge, or a
// descender, can reach a row that compares as unchanged.
const margin = 6

// ReadAgainst reads gray as ReadPage does, reusing what the one of refs it
// shares most rows with read where the two pictures are the same: only the
// rows that changed (with a margin, and widened to whole lines of the
// reference's that they touch) are given to tesseract, the rest blanked;
// the reference's lines entirely outside them are taken as they are — the
// same pixels, to within Tolerance, read the same. It returns the page and
// how many lines it reused. With no refs it reads the whole picture.
func ReadAgainst(ctx context.Context, gray *image.Gray, refs []*Page, tmpDir string) (*Page, int, error) {
	b := gray.Bounds()
	var ref *Page
	var same []bool // rows of gray that are the same in ref
	best := -1
	for _, r := range refs {
		if r.Gray.Bounds() != b {
			continue
		}
		rows, n := sameRows(gray, r.Gray)
		if n > best {
			ref, same, best = r, rows, n
		}
	}
	if ref == nil {
		p, err := ReadPage(ctx, gray, tmpDir)
		return p, 0, err
	}
	read := make([]bool, b.Dy()) // rows given to tesseract
	for y, ok := range same {
		if !ok {
			for d := max(0, y-margin); d <= min(b.Dy()-1, y+margin); d++ {
				read[d] = true
			}
		}
	}
	// A line of ref that touches a changed row is read again whole; one
	// that does not is reused (when it overlaps a line read again, the new
	// reading may see it too: its boxes come twice, which covers no less).
	changed := slices.Clone(read)
	var reused []Line
	for _, l := range ref.Lines {
		box := lineBox(l).Inset(-2).Intersect(b)
		touched := false
		for y := box.Min.Y; y < box.Max.Y; y++ {
			touched = touched || changed[y-b.Min.Y]
		}
		if !touched {
			reused = append(reused, l)
			continue
		}
		for y := box.Min.Y; y < box.Max.Y; y++ {
			read[y-b.Min.Y] = true
		}
	}
	some := false
	for _, r := range read {
		some = some || r
	}
	if !some {
		return &Page{Gray: gray, Lines: reused}, len(reused), nil
	}
	blank := image.NewGray(b)
	copy(blank.Pix, gray.Pix)
	bg := background(gray)
	for y := range b.Dy() {
		if !read[y] {
			row := blank.Pix[y*blank.Stride : y*blank.Stride+b.Dx()]
			for i := range row {
				row[i] = bg
			}
		}
	}
	lines, err := readGray(ctx, blank, tmpDir)
	if err != nil {
		return nil, 0, err
	}
	return &Page{Gray: gray, Lines: interleave(reused, lines)}, len(reused), nil
}

// interleave puts the lines read again among the reused ones where a whole
// reading would have them, so that a label stays just above its value (the
// form rules read a line and the next): each new line goes after the reused
// line nearest above it in its column (one it overlaps across: the lowest
// top not below its own), or, with none, before the highest one below it in
// its column, or, with no line in its column, after the nearest above it of
// all. New lines keep their order.
func interleave(reused, fresh []Line) []Line {
	if len(reused) == 0 {
		return fresh
	}
	boxes := make([]image.Rectangle, len(reused))
	for i, l := range reused {
		boxes[i] = lineBox(l)
	}
	// after[i]: the new lines that go after reused line i; after[-1 → 0]
	// are those before every reused line.
	after := make([][]Line, len(reused)+1)
	for _, l := range fresh {
		nb := lineBox(l)
		above, below, anyAbove := -1, -1, -1
		for i, rb := range boxes {
			if rb.Min.Y <= nb.Min.Y && (anyAbove < 0 || rb.Min.Y >= boxes[anyAbove].Min.Y) {
				anyAbove = i
			}
			if rb.Max.X <= nb.Min.X || nb.Max.X <= rb.Min.X {
				continue // another column
			}
			switch {
			case rb.Min.Y <= nb.Min.Y:
				if above < 0 || rb.Min.Y >= boxes[above].Min.Y {
					above = i
				}
			case below < 0 || rb.Min.Y < boxes[below].Min.Y:
				below = i
			}
		}
		at := above // after this reused line; -1: before the first
		switch {
		case above >= 0:
		case below >= 0:
			at = below - 1
		default:
			at = anyAbove
		}
		after[at+1] = append(after[at+1], l)
	}
	out := make([]Line, 0, len(reused)+len(fresh))
	out = append(out, after[0]...)
	for i, l := range reused {
		out = append(out, l)
		out = append(out, after[i+1]...)
	}
	return out
}

// sameRows tells, row by row, whether a and b (of the same bounds) are the
// same to within Tolerance, and how many rows are.
func sameRows(a, b *image.Gray) ([]bool, int) {
	rows := make([]bool, a.Rect.Dy())
	n := 0
	for y := range rows {
		if sameRow(a, b, a.Rect.Min.Y+y) {
			rows[y] = true
			n++
		}
	}
	return rows, n
}

// sameRow tells whether row y of a and b is the same to within Tolerance.
func sameRow(a, b *image.Gray, y int) bool {
	ra := a.Pix[a.PixOffset(a.Rect.Min.X, y):][:a.Rect.Dx()]
	rb := b.Pix[b.PixOffset(b.Rect.Min.X, y):][:b.Rect.Dx()]
	for i, v := range ra {
		d := int(v) - int(rb[i])
		if d > Tolerance || d < -Tolerance {
			return false
		}
	}
	return true
}

func lineBox(l Line) image.Rectangle {
	var r image.Rectangle
	for _, w := range l.Words {
		r = r.Union(w.Box)
	}
	return r
}

// background is the picture's most common luma: what blanked rows are
// painted with, so that they read as empty page.
func background(g *image.Gray) uint8 {
	var hist [256]int
	for _, v := range g.Pix {
		hist[v]++
	}
	best := 0
	for v, n := range hist {
		if n > hist[best] {
			best = v
		}
	}
	return uint8(best)
}

// readGray writes gray as a PGM file in dir, has tesseract read it, and
// removes it.
func readGray(ctx context.Context, gray *image.Gray, dir string) ([]Line, error) {
	b := gray.Bounds()
	f, err := os.CreateTemp(dir, "ocr-*.pgm")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "P5\n%d %d\n255\n", b.Dx(), b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		_, _ = w.Write(gray.Pix[gray.PixOffset(b.Min.X, y):][:b.Dx()])
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return Read(ctx, filepath.Clean(f.Name()))
}
