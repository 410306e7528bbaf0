package pipeline

import (
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
			lines, err := ocr.Read(gctx, ps.file)
			if err != nil {
				return fmt.Errorf("read the screenshot of %s: %w", ps.node.ID, err)
			}
			return coverPicture(ps.file, red.Boxes(lines), a.boxes[ps.node.ID])
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

// coverPicture rewrites the JPEG at file with boxes (in pixels) and
// model's boxes filled solid black: destroyed, not blurred.
func coverPicture(file string, boxes []image.Rectangle, model []box2d) error {
	if len(boxes) == 0 && len(model) == 0 {
		return nil
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	src, err := jpeg.Decode(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("decode %s: %w", filepath.Base(file), err)
	}
	img := image.NewRGBA(src.Bounds())
	draw.Draw(img, img.Bounds(), src, src.Bounds().Min, draw.Src)
	black := image.NewUniform(color.Black)
	for _, b := range model {
		boxes = append(boxes, b.pixels(img.Bounds()))
	}
	for _, b := range boxes {
		draw.Draw(img, b.Inset(-boxPadding).Intersect(img.Bounds()), black, image.Point{}, draw.Src)
	}
	return writeJPEG(file, img)
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
