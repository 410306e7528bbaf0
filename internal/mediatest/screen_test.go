package mediatest

import (
	"image/color"
	"path/filepath"
	"testing"
)

// A recording of two screens shows each in its theme for its seconds, and
// the text drawn ends where TextWidth says (its last glyph's side bearing
// short of it), in both fonts.
func TestScreensAndTextWidth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	line := func(f Font, size, y int) Line {
		return Line{Text: "Card number 4739 6833 Chloé Dupré AKIAZBMEZ2PHIHW5C3PC", X: 20, Y: y, Size: size, Font: f}
	}
	s := Screens{Width: 1280, Height: 720, Seconds: 1, Screens: []Screen{
		{Theme: Light, Lines: []Line{line(Sans, 18, 20), line(Mono, 24, 120), line(Sans, 34, 220)}},
		{Theme: Dark, Font: Mono, Lines: []Line{line("", 22, 20), line(Sans, 30, 120)}},
	}}
	video := MakeScreens(t, dir, "screens.mp4", s)
	for i, sc := range s.Screens {
		frame := Frame(t, video, s.Start(i)+0.5, filepath.Join(dir, "frame.jpg"))
		if luma := MeanLuma(t, frame); (sc.Theme == Dark) != (luma < 100) {
			t.Errorf("screen %d (theme %d) has a mean luma of %.0f", i, sc.Theme, luma)
		}
		img := DecodeJPEG(t, frame)
		for _, l := range sc.Lines {
			right := 0
			for y := l.Y; y < l.Y+l.Size*6/5; y++ {
				for x := range s.Width {
					luma := color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y
					if (sc.Theme == Light && luma < 128) || (sc.Theme == Dark && luma > 128) {
						right = max(right, x)
					}
				}
			}
			font := l.Font
			if font == "" {
				font = sc.Font
			}
			if want := l.X + TextWidth(font, l.Size, l.Text); right > want || right < want-8 {
				t.Errorf("screen %d, %s at %d: the ink ends at %d, TextWidth says %d", i, font, l.Size, right, want)
			}
		}
	}
}
