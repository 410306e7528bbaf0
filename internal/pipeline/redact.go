package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/runops/runops/internal/ocr"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// redact is the privacy pass (stage redacting). Every text of the SOP has
// its sensitive values — found by the detectors, the operator's patterns,
// or marked by the model — replaced by variables, each described in
// public.variables. Every pending screenshot is read by OCR, as many at
// once as there are cores; the words of a value found on it, or close to
// one the text had, are destroyed (filled solid), and so are the boxes the
// model gave for the values it marked. metadata.privacy counts them per
// kind and per source, never a value. With RUNOPS_REDACT off it does
// nothing.
func (p *Pipeline) redact(ctx context.Context, r queue.Reporter, a answer, shots *shotSet) error {
	if p.cfg.Privacy == nil {
		return nil
	}
	if err := r.Stage(ctx, "redacting"); err != nil {
		return err
	}
	red := privacy.NewRedactor(p.cfg.Privacy, a.marks)
	red.Document(a.doc)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for _, ps := range shots.pending {
		g.Go(func() error {
			img, err := readJPEG(ps.file)
			if err != nil {
				return err
			}
			lines, err := readText(gctx, img, ps.file+".pgm")
			if err != nil {
				return fmt.Errorf("read the screenshot of %s: %w", ps.node.ID, err)
			}
			return writeJPEG(ps.file, paint(img, red.Boxes(lines), a.boxes[ps.node.ID], ps.node.Highlight))
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return r.Merge(ctx, map[string]any{"privacy": red.Report()})
}

// boxPadding widens each covered box: OCR's boxes hug the letters, and
// the anti-aliased edge of a glyph must go too.
const boxPadding = 3

// editPicture rewrites the JPEG at file with paint's changes, when there
// are any.
func editPicture(file string, boxes []image.Rectangle, model []box2d, highlight *sop.Highlight) error {
	if len(boxes) == 0 && len(model) == 0 && highlight == nil {
		return nil
	}
	img, err := readJPEG(file)
	if err != nil {
		return err
	}
	return writeJPEG(file, paint(img, boxes, model, highlight))
}

func readJPEG(file string) (image.Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := jpeg.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", filepath.Base(file), err)
	}
	return img, nil
}

// readText is what OCR reads on img, given to tesseract as its luma alone
// (a PGM file at tmp, removed after): a sixth less work than the colour
// JPEG, and the same words.
func readText(ctx context.Context, img image.Image, tmp string) ([]ocr.Line, error) {
	b := img.Bounds()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "P5\n%d %d\n255\n", b.Dx(), b.Dy())
	if ycc, ok := img.(*image.YCbCr); ok {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			i := ycc.YOffset(b.Min.X, y)
			buf.Write(ycc.Y[i : i+b.Dx()])
		}
	} else {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				buf.WriteByte(color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
			}
		}
	}
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	return ocr.Read(ctx, tmp)
}

// paint returns img with boxes (in pixels) and the model's boxes filled
// solid black — destroyed, not blurred — then, when the step has a
// highlight, an outline around it.
func paint(src image.Image, boxes []image.Rectangle, model []box2d, highlight *sop.Highlight) *image.RGBA {
	img := image.NewRGBA(src.Bounds())
	draw.Draw(img, img.Bounds(), src, src.Bounds().Min, draw.Src)
	black := image.NewUniform(color.Black)
	for _, b := range model {
		boxes = append(boxes, b.pixels(img.Bounds()))
	}
	for _, b := range boxes {
		draw.Draw(img, b.Inset(-boxPadding).Intersect(img.Bounds()), black, image.Point{}, draw.Src)
	}
	if highlight != nil {
		outline(img, *highlight)
	}
	return img
}

// The outline's rings, from the outside in: dark, bright, light, so that
// it reads on light and dark interfaces alike.
var outlineRings = []struct {
	c     color.Color
	units int
}{{color.RGBA{0x11, 0x11, 0x11, 0xff}, 1}, {color.RGBA{0xff, 0x5a, 0x00, 0xff}, 2}, {color.White, 1}}

// outlineUnit is how thick a unit of the rings is: 3 pixels at 1080p, at
// least 2 (thinner, JPEG's halved colour resolution washes the bright ring
// out).
func outlineUnit(height int) int { return max(2, height/360) }

// outline draws rings around h, outside it: the element itself stays as
// the recording shows it.
func outline(img *image.RGBA, h sop.Highlight) {
	b := img.Bounds()
	box := image.Rect(b.Min.X+int(h.X*float64(b.Dx())), b.Min.Y+int(h.Y*float64(b.Dy())),
		b.Min.X+int((h.X+h.W)*float64(b.Dx())+0.5), b.Min.Y+int((h.Y+h.H)*float64(b.Dy())+0.5))
	u := outlineUnit(b.Dy())
	total := 0
	for _, r := range outlineRings {
		total += r.units * u
	}
	outer := total
	for _, r := range outlineRings {
		inner := outer - r.units*u
		ring(img, box.Inset(-outer), box.Inset(-inner), image.NewUniform(r.c))
		outer = inner
	}
}

// ring fills what is inside out and not inside in.
func ring(img *image.RGBA, out, in image.Rectangle, c image.Image) {
	for _, part := range []image.Rectangle{
		image.Rect(out.Min.X, out.Min.Y, out.Max.X, in.Min.Y), // top
		image.Rect(out.Min.X, in.Max.Y, out.Max.X, out.Max.Y), // bottom
		image.Rect(out.Min.X, in.Min.Y, in.Min.X, in.Max.Y),   // left
		image.Rect(in.Max.X, in.Min.Y, out.Max.X, in.Max.Y),   // right
	} {
		draw.Draw(img, part.Intersect(img.Bounds()), c, image.Point{}, draw.Src)
	}
}

// writeJPEG replaces file with img, at a quality that keeps text sharp.
func writeJPEG(file string, img image.Image) error {
	tmp := file + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := jpeg.Encode(out, img, &jpeg.Options{Quality: 90}); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, file)
}
