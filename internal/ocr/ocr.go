// Package ocr reads the words on a picture with the tesseract CLI (Debian's
// tesseract-ocr and tesseract-ocr-eng; no cgo: the binary stays static),
// each with its box, grouped in lines. It knows nothing of what the words
// mean.
package ocr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"os/exec"
	"strconv"
	"strings"

	"github.com/runops/runops/internal/child"
)

// Word is a word read, with its box in the picture's pixels.
type Word struct {
	Text string
	Box  image.Rectangle
	Conf float64 // tesseract's confidence, 0–100
}

// Line is the words tesseract put on one line, in order. Text is them
// joined by single spaces; Starts[i] is where word i begins in Text.
type Line struct {
	Words  []Word
	Text   string
	Starts []int
}

// ErrMissing means tesseract or its English data is not installed.
var ErrMissing = errors.New("tesseract OCR is not installed (Debian packages tesseract-ocr and tesseract-ocr-eng)")

// Check tells whether tesseract runs and reads English.
func Check(ctx context.Context) error {
	if _, err := exec.LookPath("tesseract"); err != nil {
		return ErrMissing
	}
	out, err := child.Command(ctx, "tesseract", "--list-langs").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\neng") {
		return fmt.Errorf("%w: %s", ErrMissing, strings.TrimSpace(string(out)))
	}
	return nil
}

// Read returns the lines of words tesseract reads on the picture file at
// path. It runs one thread: callers read several pictures at once.
func Read(ctx context.Context, path string) ([]Line, error) {
	cmd := child.Command(ctx, "tesseract", path, "-", "-l", "eng", "tsv")
	cmd.Env = append(cmd.Environ(), "OMP_THREAD_LIMIT=1")
	var stdout bytes.Buffer
	stderr := &child.Tail{Max: 2048}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("tesseract: %w: %s", err, stderr)
	}
	return parseTSV(stdout.Bytes())
}

// parseTSV reads tesseract's TSV: one row per element, level 5 a word, with
// its block, paragraph and line numbers, left, top, width, height,
// confidence and text.
func parseTSV(b []byte) ([]Line, error) {
	var lines []Line
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 0; sc.Scan(); n++ {
		f := strings.Split(sc.Text(), "\t")
		if n == 0 || len(f) < 12 || f[0] != "5" {
			continue
		}
		text := strings.TrimSpace(f[11])
		if text == "" {
			continue
		}
		var v [4]int
		for i := range v {
			x, err := strconv.Atoi(f[6+i])
			if err != nil {
				return nil, fmt.Errorf("tesseract tsv: %q is not a number", f[6+i])
			}
			v[i] = x
		}
		conf, _ := strconv.ParseFloat(f[10], 64)
		w := Word{Text: text, Box: image.Rect(v[0], v[1], v[0]+v[2], v[1]+v[3]), Conf: conf}
		key := f[1] + "/" + f[2] + "/" + f[3] + "/" + f[4] // page/block/paragraph/line
		if key != last || len(lines) == 0 {
			lines = append(lines, Line{})
			last = key
		}
		l := &lines[len(lines)-1]
		if l.Text != "" {
			l.Text += " "
		}
		l.Starts = append(l.Starts, len(l.Text))
		l.Text += text
		l.Words = append(l.Words, w)
	}
	return lines, sc.Err()
}
