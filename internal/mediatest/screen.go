package mediatest

import (
	"cmp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Theme is how a screen is painted.
type Theme int

const (
	// Light is dark text on a light page (#f4f4f4), as web pages and
	// editors are.
	Light Theme = iota
	// Dark is light grey text on a near-black background, as terminals are.
	Dark
)

// Colours of a theme: the page, the text, and the rules and fields drawn
// on it.
func (th Theme) colours() (page, text, rule string) {
	if th == Dark {
		return "0x1b1c1f", "0xd4d4d4", "0x3c3f44"
	}
	return "0xf4f4f4", "0x1e1e1e", "0xc8c8c8"
}

// Font is a typeface of Debian's fonts-dejavu-core, which the tests need
// (scripts/test.sh installs it).
type Font string

const (
	Sans Font = "DejaVuSans.ttf"     // web pages, forms
	Mono Font = "DejaVuSansMono.ttf" // terminals, editors
)

// FontFile is the path of f, failing the test (never skipping) when it is
// not installed.
func FontFile(t testing.TB, f Font) string {
	t.Helper()
	path := filepath.Join("/usr/share/fonts/truetype/dejavu", string(f))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("mediatest: font %s is missing (Debian package fonts-dejavu-core): %v", path, err)
	}
	return path
}

// Screen is one picture of a screen recording: a page in a theme with
// lines of text on it and rectangles under them (fields, table rules).
type Screen struct {
	Theme Theme
	Font  Font // of the lines that name none; Sans when empty
	Lines []Line
	Boxes []Box
}

// Line is a line of text on a screen, its top left at X, Y pixels, Size
// pixels high, in Font (the screen's when empty).
type Line struct {
	Text       string
	X, Y, Size int
	Font       Font
}

// Box is a rectangle drawn in the theme's rule colour, its top left at X,
// Y pixels: an outline Thick pixels wide (a field, a table's border; 1
// when 0) or, with Fill, solid (a rule, a button).
type Box struct {
	X, Y, W, H int
	Thick      int
	Fill       bool
}

// Screens is a recording of screens shown one after another, each for
// Seconds (3 when 0), at FPS frames a second (5 when 0).
type Screens struct {
	Width, Height int
	FPS           int
	Seconds       float64
	Screens       []Screen
}

// Start is the second at which screen i begins to show.
func (s Screens) Start(i int) float64 { return float64(i) * s.seconds() }

func (s Screens) seconds() float64 {
	if s.Seconds == 0 {
		return 3
	}
	return s.Seconds
}

// MakeScreens writes the recording of s to dir/name (H.264 in MP4, one
// ffmpeg run: every screen's drawing is enabled for its seconds only) and
// returns its path. It fails the test if ffmpeg or a font is missing.
func MakeScreens(t testing.TB, dir, name string, s Screens) string {
	t.Helper()
	if len(s.Screens) == 0 {
		t.Fatal("mediatest: no screens")
	}
	fps := s.FPS
	if fps == 0 {
		fps = 5
	}
	base, _, _ := s.Screens[0].Theme.colours()
	graph := "color=c=" + base + ":size=" + strconv.Itoa(s.Width) + "x" + strconv.Itoa(s.Height) + ":rate=" + strconv.Itoa(fps)
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }
	for i, sc := range s.Screens {
		enable := ":enable='gte(t\\," + num(s.Start(i)) + ")*lt(t\\," + num(s.Start(i)+s.seconds()) + ")'"
		page, text, rule := sc.Theme.colours()
		if page != base {
			graph += ",drawbox=x=0:y=0:w=iw:h=ih:t=fill:color=" + page + enable
		}
		for _, b := range sc.Boxes {
			thick := "fill"
			if !b.Fill {
				thick = strconv.Itoa(max(b.Thick, 1))
			}
			graph += ",drawbox=x=" + strconv.Itoa(b.X) + ":y=" + strconv.Itoa(b.Y) + ":w=" + strconv.Itoa(b.W) +
				":h=" + strconv.Itoa(b.H) + ":t=" + thick + ":color=" + rule + enable
		}
		for j, tx := range sc.Lines {
			if strings.TrimSpace(tx.Text) == "" {
				continue
			}
			font := cmp.Or(tx.Font, sc.Font, Sans)
			file := filepath.Join(dir, name+".s"+strconv.Itoa(i)+"l"+strconv.Itoa(j))
			if err := os.WriteFile(file, []byte(tx.Text), 0o600); err != nil {
				t.Fatal(err)
			}
			graph += ",drawtext=fontfile='" + FontFile(t, font) + "':expansion=none:textfile='" + file + "':fontcolor=" + text +
				":fontsize=" + strconv.Itoa(tx.Size) + ":x=" + strconv.Itoa(tx.X) + ":y=" + strconv.Itoa(tx.Y) + enable
		}
	}
	out := filepath.Join(dir, name)
	run(t, "-hide_banner", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", graph,
		"-t", num(float64(len(s.Screens))*s.seconds()), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-f", "mp4", out+".tmp")
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Frame writes the picture the recording at path shows at second at to a
// JPEG (best quality) at out and returns out.
func Frame(t testing.TB, path string, at float64, out string) string {
	t.Helper()
	run(t, "-v", "error", "-nostdin", "-y", "-ss", strconv.FormatFloat(at, 'f', 3, 64), "-i", path,
		"-frames:v", "1", "-q:v", "2", out)
	return out
}
