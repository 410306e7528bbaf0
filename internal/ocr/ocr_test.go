package ocr_test

import (
	"context"
	"image"
	"image/draw"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/ocr"
)

// screen draws lines of text (one per entry, "" for none) on a light page,
// as ffmpeg's drawtext does on the recordings, and returns its luma.
func screen(t *testing.T, lines ...string) *image.Gray {
	t.Helper()
	dir := t.TempDir()
	graph := "color=c=0xf4f4f4:size=1280x720"
	for i, l := range lines {
		if l == "" {
			continue
		}
		file := filepath.Join(dir, "line"+string(rune('a'+i)))
		if err := os.WriteFile(file, []byte(l), 0o600); err != nil {
			t.Fatal(err)
		}
		graph += ",drawtext=textfile='" + file + "':fontcolor=0x1e1e1e:fontsize=28:x=60:y=" + itoa(40+i*60)
	}
	out := filepath.Join(dir, "screen.jpg")
	if b, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-frames:v", "1", "-q:v", "2", out).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	img := mediatest.DecodeJPEG(t, out)
	g := image.NewGray(img.Bounds())
	draw.Draw(g, g.Bounds(), img, img.Bounds().Min, draw.Src)
	return g
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func text(p *ocr.Page) string {
	var out []string
	for _, l := range p.Lines {
		out = append(out, l.Text)
	}
	return strings.Join(out, "\n")
}

// Read against an earlier picture of the same screen, a changed line and a
// new one are read, and the lines that stayed are taken from the earlier
// reading, not read again.
func TestReadAgainstAnEarlierScreen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if err := ocr.Check(ctx); err != nil {
		t.Fatal(err)
	}
	before := screen(t, "Account settings", "Display name Alice Example", "Time zone Europe Paris", "Plan Business yearly", "")
	after := screen(t, "Account settings", "Display name Bob Sample", "Time zone Europe Paris", "Plan Business yearly", "Invoices sent monthly")
	ref, err := ocr.ReadPage(ctx, before, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := text(ref); !strings.Contains(got, "Alice") || !strings.Contains(got, "Business") {
		t.Fatalf("the first screen reads:\n%s", got)
	}
	// Offered an unrelated screen too, it reads against the one it shares
	// most rows with.
	other, err := ocr.ReadPage(ctx, screen(t, "", "", "", "", "", "", "Nothing alike here"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	page, reused, err := ocr.ReadAgainst(ctx, after, []*ocr.Page{other, ref}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := text(page)
	for _, want := range []string{"Account", "Bob", "Sample", "Europe", "Business", "Invoices"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q is not read on the second screen:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Alice") || reused < 2 {
		t.Errorf("reused %d lines; reads:\n%s", reused, got)
	}
	// The same screen again: nothing to read, everything reused.
	if same, reused, err := ocr.ReadAgainst(ctx, before, []*ocr.Page{ref}, t.TempDir()); err != nil || reused != len(ref.Lines) || text(same) != text(ref) {
		t.Errorf("the same screen: %d of %d lines reused (%v)", reused, len(ref.Lines), err)
	}
}
