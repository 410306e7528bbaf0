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
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/runops/runops/internal/ocr"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// redact is the privacy pass (stage redacting). Every picture the
// screenshots are taken from is read by OCR once, as many at once as there
// are cores, and the rules run on what it shows; then every text of the SOP
// has its sensitive values — found by the rules, the operator's patterns,
// marked by the model, or read on a screenshot — replaced by variables,
// each described in public.variables; then each picture has the words of
// every value found on either side, and the boxes the model gave, covered
// once — filled with the colour around them and outlined (paint) — before
// it is copied to every step shown at that second (each with its own
// highlight). metadata.privacy counts them per kind and
// per source, never a value, and describes this run alone. With
// RUNOPS_REDACT off it does nothing but forget an earlier run's counts.
func (p *Pipeline) redact(ctx context.Context, job queue.Job, r queue.Reporter, a answer, shots *shotSet) error {
	if job.Metadata["privacy"] != nil {
		// Replaced, never merged: an earlier run's counts go first.
		if err := r.Merge(ctx, map[string]any{"privacy": nil}); err != nil {
			return err
		}
	}
	if p.cfg.Privacy == nil {
		return nil
	}
	if err := r.Stage(ctx, "redacting"); err != nil {
		return err
	}
	red := privacy.NewRedactor(p.cfg.Privacy, a.marks)
	pics := pictures(shots.pending, a.boxes)
	if err := p.readPictures(ctx, red, pics); err != nil {
		return err
	}
	red.Document(a.doc)
	if err := p.paintPictures(ctx, red, pics); err != nil {
		return err
	}
	return r.Merge(ctx, map[string]any{"privacy": red.Report()})
}

// picture is one picture the screenshots are taken from: the frame of a
// second, shown by one step or more, or a screenshot kept from an earlier
// run. It is read, and painted, once.
type picture struct {
	second int
	shots  []pendingShot // the steps it is the screenshot of; the first's file is read
	model  []box2d       // the boxes the model gave on its second, for any step
	screen *privacy.Screen
}

// pictures groups the pending screenshots by the picture they are copies
// of, in the order of their seconds. Every box the model gave for a step
// shown at a second is painted on every picture of that second: a kept
// screenshot (its own picture, its highlight drawn) as well as the copies.
func pictures(pending []pendingShot, boxes map[string][]box2d) []*picture {
	pending = slices.Clone(pending)
	slices.SortStableFunc(pending, func(x, y pendingShot) int { return x.second - y.second })
	var out []*picture
	at := map[string]*picture{}
	model := map[int][]box2d{} // second → the boxes of its steps
	for _, ps := range pending {
		model[ps.second] = append(model[ps.second], boxes[ps.node.ID]...)
		key := fmt.Sprint("second ", ps.second)
		if ps.kept {
			key = "kept " + ps.node.ID
		}
		pic := at[key]
		if pic == nil {
			pic = &picture{second: ps.second}
			at[key] = pic
			out = append(out, pic)
		}
		pic.shots = append(pic.shots, ps)
	}
	for _, pic := range out {
		pic.model = model[pic.second]
	}
	return out
}

// readPictures reads every picture with OCR, as many at once as there are
// cores, and has red find the values on it. The earliest and the latest
// are read whole; each other one is read against whichever of them it
// shares most rows with, so that the parts of a screen that stayed as they
// were are not read again (ocr.ReadAgainst).
func (p *Pipeline) readPictures(ctx context.Context, red *privacy.Redactor, pics []*picture) error {
	var first, rest []*picture
	for i, pic := range pics {
		if i == 0 || i == len(pics)-1 {
			first = append(first, pic)
		} else {
			rest = append(rest, pic)
		}
	}
	refs := make([]*ocr.Page, len(first))
	run := func(batch []*picture, read func(context.Context, int, *image.Gray) (*ocr.Page, error)) error {
		return eachPicture(ctx, batch, func(ctx context.Context, i int, pic *picture, img image.Image) error {
			page, err := read(ctx, i, luma(img))
			if err != nil {
				return fmt.Errorf("read the screenshot of %s: %w", pic.shots[0].node.ID, err)
			}
			pic.screen = red.ReadScreen(page.Lines)
			return nil
		})
	}
	dir := func(pic *picture) string { return filepath.Dir(pic.shots[0].file) }
	if err := run(first, func(ctx context.Context, i int, gray *image.Gray) (*ocr.Page, error) {
		page, err := ocr.ReadPage(ctx, gray, dir(first[i]))
		refs[i] = page // the references for the others
		return page, err
	}); err != nil {
		return err
	}
	return run(rest, func(ctx context.Context, i int, gray *image.Gray) (*ocr.Page, error) {
		page, reused, err := ocr.ReadAgainst(ctx, gray, refs, dir(rest[i]))
		if err == nil && reused > 0 {
			p.cfg.Logger.DebugContext(ctx, "screenshot read against another", "node", rest[i].shots[0].node.ID, "lines_reused", reused)
		}
		return page, err
	})
}

// paintPictures covers (paint), on every picture, the boxes of what red
// knows now (the text's values too) and the model's, then writes it as the
// screenshot of each of its steps, with that step's highlight (none on a
// kept screenshot, which has it already).
func (p *Pipeline) paintPictures(ctx context.Context, red *privacy.Redactor, pics []*picture) error {
	return eachPicture(ctx, pics, func(_ context.Context, _ int, pic *picture, img image.Image) error {
		img = paint(img, red.Cover(pic.screen), pic.model, nil)
		for i, ps := range pic.shots {
			out := img
			if ps.node.Highlight != nil && !ps.kept && i < len(pic.shots)-1 {
				out = clone(img) // the others' copies stay without this outline
			}
			if !ps.kept {
				out = paint(out, nil, nil, ps.node.Highlight)
			}
			if err := writeJPEG(ps.file, out); err != nil {
				return err
			}
		}
		return nil
	})
}

// eachPicture decodes each picture and hands it to do (with its index in
// pics), as many at once as the CPUs the process may use (GOMAXPROCS: a
// container's CPU limit, not the node's cores: each runs a Tesseract);
// the first error cancels the context the others are given.
func eachPicture(ctx context.Context, pics []*picture, do func(ctx context.Context, i int, pic *picture, img image.Image) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, pic := range pics {
		g.Go(func() error {
			img, err := readJPEG(pic.shots[0].file)
			if err != nil {
				return err
			}
			return do(gctx, i, pic, img)
		})
	}
	return g.Wait()
}

// clone copies a decoded picture (painted in place: see paint).
func clone(img image.Image) image.Image {
	if ycc, ok := img.(*image.YCbCr); ok {
		c := *ycc
		c.Y, c.Cb, c.Cr = slices.Clone(ycc.Y), slices.Clone(ycc.Cb), slices.Clone(ycc.Cr)
		return &c
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	return rgba
}

// luma is the picture's brightness alone, what OCR reads: a sixth less
// work for tesseract than the colour JPEG, and the same words.
func luma(img image.Image) *image.Gray {
	b := img.Bounds()
	g := image.NewGray(b)
	if ycc, ok := img.(*image.YCbCr); ok {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			copy(g.Pix[g.PixOffset(b.Min.X, y):][:b.Dx()], ycc.Y[ycc.YOffset(b.Min.X, y):])
		}
		return g
	}
	draw.Draw(g, b, img, b.Min, draw.Src)
	return g
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

// paint returns img with boxes (in pixels) and the model's boxes covered —
// destroyed, not blurred: boxes that touch are one, filled with the
// commonest colour just around it (around) and outlined (cover) — then,
// when the step has a highlight, an outline around it. A decoded JPEG
// (YCbCr) is painted in place: no RGBA copy, four times its size, is made.
func paint(img image.Image, boxes []image.Rectangle, model []box2d, highlight *sop.Highlight) image.Image {
	for _, b := range model {
		boxes = append(boxes, b.pixels(img.Bounds()))
	}
	padded := make([]image.Rectangle, 0, len(boxes))
	for _, b := range boxes {
		if b = b.Inset(-boxPadding).Intersect(img.Bounds()); !b.Empty() {
			padded = append(padded, b)
		}
	}
	covers := merged(padded)
	backgrounds := make([]color.Color, len(covers))
	for i, b := range covers {
		backgrounds[i] = around(img, b) // all read before anything is painted
	}
	fill := canvas(&img)
	for i, b := range covers {
		cover(fill, b, backgrounds[i], img.Bounds().Dy())
	}
	if highlight != nil {
		outline(img.Bounds(), fill, *highlight)
	}
	return img
}

// merged joins the rectangles that overlap or touch until none do: the
// words of one value are one cover.
func merged(rs []image.Rectangle) []image.Rectangle {
	out := slices.Clone(rs)
	for changed := true; changed; {
		changed = false
		for i := 0; i < len(out); i++ {
			for j := i + 1; j < len(out); j++ {
				if out[i].Inset(-1).Overlaps(out[j]) {
					out[i] = out[i].Union(out[j])
					out = slices.Delete(out, j, j+1)
					changed = true
					j--
				}
			}
		}
	}
	return out
}

// around is the commonest colour of the ring of pixels just outside r:
// the page, the field or the terminal the value was written on.
func around(img image.Image, r image.Rectangle) color.Color {
	ring := r.Inset(-3).Intersect(img.Bounds())
	counts := map[uint32]int{}
	colours := map[uint32]color.Color{}
	best, bestN := uint32(0), -1
	for y := ring.Min.Y; y < ring.Max.Y; y++ {
		for x := ring.Min.X; x < ring.Max.X; x++ {
			if image.Pt(x, y).In(r) {
				x = r.Max.X - 1 // the inside is not the ring
				continue
			}
			c := img.At(x, y)
			cr, cg, cb, _ := c.RGBA()
			key := cr>>11<<10 | cg>>11<<5 | cb>>11 // 5 bits a channel: JPEG's noise is one colour
			counts[key]++
			if counts[key] > bestN {
				best, bestN = key, counts[key]
			}
			if _, ok := colours[key]; !ok {
				colours[key] = c
			}
		}
	}
	if bestN < 0 {
		return color.Gray{0x80}
	}
	return colours[best]
}

// cover fills r with bg and outlines it, a line (a pixel at 720p, more
// above) lighter on a dark page and darker on a light one: a person sees
// that something was there, and OCR reads the words beside it (a solid
// black block, which OCR takes for a picture, cost a tenth of them on the
// corpus's forms).
func cover(fill func(image.Rectangle, color.Color), r image.Rectangle, bg color.Color, height int) {
	fill(r, bg)
	y := color.GrayModel.Convert(bg).(color.Gray).Y
	line := color.Gray{y - 0x58}
	if y < 0x80 {
		line = color.Gray{y + 0x58}
	}
	w := max(1, height/720)
	for _, side := range []image.Rectangle{
		image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+w), image.Rect(r.Min.X, r.Max.Y-w, r.Max.X, r.Max.Y),
		image.Rect(r.Min.X, r.Min.Y, r.Min.X+w, r.Max.Y), image.Rect(r.Max.X-w, r.Min.Y, r.Max.X, r.Max.Y),
	} {
		fill(side, line)
	}
}

// canvas returns what fills a rectangle of *img with a colour: in place on
// a YCbCr picture (its chroma samples, shared by 2×2 pixels, take the
// colour where the rectangle touches them), or on an RGBA copy that
// replaces *img.
func canvas(img *image.Image) func(image.Rectangle, color.Color) {
	if ycc, ok := (*img).(*image.YCbCr); ok {
		return func(r image.Rectangle, c color.Color) {
			r8, g8, b8, _ := c.RGBA()
			yy, cb, cr := color.RGBToYCbCr(uint8(r8>>8), uint8(g8>>8), uint8(b8>>8))
			r = r.Intersect(ycc.Rect)
			for y := r.Min.Y; y < r.Max.Y; y++ {
				for x := r.Min.X; x < r.Max.X; x++ {
					ycc.Y[ycc.YOffset(x, y)] = yy
					ci := ycc.COffset(x, y)
					ycc.Cb[ci], ycc.Cr[ci] = cb, cr
				}
			}
		}
	}
	rgba := image.NewRGBA((*img).Bounds())
	draw.Draw(rgba, rgba.Bounds(), *img, (*img).Bounds().Min, draw.Src)
	*img = rgba
	return func(r image.Rectangle, c color.Color) {
		draw.Draw(rgba, r.Intersect(rgba.Bounds()), image.NewUniform(c), image.Point{}, draw.Src)
	}
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

// outline draws rings around h on a picture of bounds b, outside it: the
// element itself stays as the recording shows it.
func outline(b image.Rectangle, fill func(image.Rectangle, color.Color), h sop.Highlight) {
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
		out, in := box.Inset(-outer), box.Inset(-inner)
		for _, part := range []image.Rectangle{
			image.Rect(out.Min.X, out.Min.Y, out.Max.X, in.Min.Y), // top
			image.Rect(out.Min.X, in.Max.Y, out.Max.X, out.Max.Y), // bottom
			image.Rect(out.Min.X, in.Min.Y, in.Min.X, in.Max.Y),   // left
			image.Rect(in.Max.X, in.Min.Y, out.Max.X, in.Max.Y),   // right
		} {
			fill(part, r.c)
		}
		outer = inner
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
