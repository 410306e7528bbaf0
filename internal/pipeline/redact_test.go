package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/logtest"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/wait"
)

// An answer that repeats what the recording showed: an e-mail address, a
// live-looking key, a card number, and a name the model marks.
var leakyAnswer = chain(
	`{"id": "login", "type": "task", "label": "Sign in as jane.doe@acme-corp.com", "intent": "i", "context": "00:00:01 Jane Doe signs in", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown",
		"sensitive": [{"value": "Jane Doe", "kind": "name"}, {"value": "jane.doe@acme-corp.com", "kind": "email"}]}`,
	`{"id": "key", "type": "task", "label": "Paste the key", "intent": "Use sk_live_51HxYzAbCdEfGhIjKlMn0123", "context": "card 4242 4242 4242 4242 on file for Jane Doe", "parent_id": "", "timestamp": "", "evidence": "narrated"}`,
)

// withPrivacy turns the privacy pass on, with the built-in detectors.
func withPrivacy(c *pipeline.Config) {
	det, err := privacy.NewDetector(nil)
	if err != nil {
		panic(err)
	}
	c.Privacy = det
}

var leakedValues = []string{"jane.doe", "acme-corp", "Jane Doe", "sk_live", "51HxYz", "4242"}

// Nothing of the four values is stored: not in the SOP, not in its
// Markdown, not in metadata; each is a described variable, and the SOP
// still validates (the stand-in's OnStore checks every stored SOP).
func TestNoValueIsStored(t *testing.T) {
	t.Parallel()
	r := newRig(t, withPrivacy)
	id, j := r.complete(r.video(), leakyAnswer)
	obj, ok := r.fake.Object("videos/" + id.SOPPath())
	if !ok {
		t.Fatal("no SOP")
	}
	stored, _ := os.ReadFile(obj.File)
	doc, err := sop.Load(stored, string(id))
	if err != nil {
		t.Fatal(err)
	}
	md := sop.Markdown(doc, func(sop.Node) string { return "" })
	meta, _ := json.Marshal(j.Metadata)
	for _, v := range leakedValues {
		for what, text := range map[string]string{"SOP": string(stored), "Markdown": string(md), "metadata": string(meta)} {
			if strings.Contains(strings.ToLower(text), strings.ToLower(v)) {
				t.Errorf("%q is in the %s", v, what)
			}
		}
	}
	for _, name := range []string{"EMAIL_1", "NAME_1", "API_KEY_1", "CARD_NUMBER_1"} {
		if doc.Public.Variables[name] == "" {
			t.Errorf("no variable %s: %v", name, doc.Public.Variables)
		}
	}
	if got := doc.Public.Nodes[0].Label; got != "Sign in as {{EMAIL_1}}" {
		t.Errorf("label %q", got)
	}
	privacyMD, _ := json.Marshal(j.Metadata["privacy"])
	if string(privacyMD) != `{"counts":{"api_key":1,"card_number":1,"email":1,"name":1},"sources":{"model":2,"text":2}}` {
		t.Errorf("metadata.privacy %s", privacyMD)
	}
	if timings, _ := j.Metadata["timings"].(map[string]any); timings["redacting_ms"] == nil {
		t.Errorf("no redacting stage in %v", timings)
	}
}

// With RUNOPS_REDACT off the SOP keeps the model's text.
func TestRedactionOff(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Answer(geminitest.JSON(leakyAnswer))
	id := r.submit(r.video(), nil)
	j := r.finished(id)
	obj, _ := r.fake.Object("videos/" + id.SOPPath())
	stored, _ := os.ReadFile(obj.File)
	if outcome(j) != done || !strings.Contains(string(stored), "jane.doe@acme-corp.com") || j.Metadata["privacy"] != nil {
		t.Fatalf("%s; privacy %v", outcome(j), j.Metadata["privacy"])
	}
}

// A screen showing an e-mail address, a live-looking key, a card number, a
// name the model marks and a PIN it gives the box of: OCR reads none of
// them from the stored screenshot, and still reads the rest of the screen.
func TestScreenshotsKeepNoSecret(t *testing.T) {
	t.Parallel()
	r := newRig(t, withPrivacy)
	screen := mediatest.Spec{Width: 1280, Height: 720, Seconds: 3, FPS: 5, Texts: []mediatest.Text{
		{Text: "Account settings", X: 60, Y: 60, Size: 34},
		{Text: "Signed in as jane.doe@acme-corp.com", X: 60, Y: 130, Size: 30},
		{Text: "API key sk_live_51HxYzAbCdEfGhIjKlMn0123", X: 60, Y: 200, Size: 30},
		{Text: "Card on file 4242 4242 4242 4242", X: 60, Y: 270, Size: 30},
		{Text: "Customer Jane Doe", X: 60, Y: 340, Size: 30},
		{Text: "Billing Invoices Export Reports", X: 60, Y: 410, Size: 30},
		{Text: "PIN 8812", X: 900, Y: 600, Size: 40},
	}}
	video := mediatest.Make(t, r.dir, "screen.mp4", screen)
	secrets := []string{"jane", "acme", "sk_live", "51HxYz", "4242", "Doe", "8812"}
	// Read from the recording itself, they are all there: the test can fail.
	raw := mediatest.Frame(t, video, 1, filepath.Join(r.dir, "raw.jpg"))
	if seen := mediatest.ScreenText(t, raw); !containsAll(seen, secrets) {
		t.Fatalf("OCR does not read every value from the recording itself:\n%s", seen)
	}
	id, j := r.complete(video, chain(
		`{"id": "open", "type": "task", "label": "Open the settings of jane.doe@acme-corp.com", "intent": "i", "context": "00:00:01", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown",
		"sensitive": [{"value": "Jane Doe", "kind": "name"}, {"value": "8812", "kind": "password", "box_2d": [820, 690, 930, 900]}]}`,
	))
	obj, ok := r.fake.Object("videos/" + id.FramePath("open"))
	if !ok {
		t.Fatalf("no screenshot; frames %v", j.Metadata["frames"])
	}
	seen := mediatest.ScreenText(t, obj.File)
	for _, v := range secrets {
		if strings.Contains(strings.ToLower(seen), strings.ToLower(v)) {
			t.Errorf("OCR reads %q from the stored screenshot:\n%s", v, seen)
		}
	}
	if !containsAll(seen, []string{"Account", "settings", "Billing", "Invoices", "Reports", "Customer"}) {
		t.Errorf("the rest of the screen is no longer legible:\n%s", seen)
	}
	// The model's box is filled whole.
	if spread := lumaSpread(t, obj.File, pinBox); spread > 24 {
		t.Errorf("the box the model gave has luma from darkest to brightest %d apart: something is drawn in it", spread)
	}
	privacyMD, _ := json.Marshal(j.Metadata["privacy"])
	if !strings.Contains(string(privacyMD), `"ocr":`) {
		t.Errorf("metadata.privacy %s: the key and the card, read only on screen, are not counted", privacyMD)
	}
}

// pinBox is where the screens' PIN is, in pixels: the box the model gives
// for it, [820, 690, 930, 900] of 1280×720.
var pinBox = image.Rect(690*1280/1000, 820*720/1000, 900*1280/1000, 930*720/1000)

func containsAll(text string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(strings.ToLower(text), strings.ToLower(w)) {
			return false
		}
	}
	return true
}

// lumaSpread is how far apart (0–255) the darkest and the brightest pixel
// of the JPEG at path are inside r: a filled box is one flat colour (up to
// JPEG's noise), a glyph in it is a hundred levels and more from the page.
func lumaSpread(t *testing.T, path string, r image.Rectangle) int {
	t.Helper()
	img := mediatest.DecodeJPEG(t, path)
	lo, hi := 255, 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			v := int(color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	return hi - lo
}

// meanLuma is the mean brightness (0–255) of the JPEG at path inside r.
func meanLuma(t *testing.T, path string, r image.Rectangle) float64 {
	t.Helper()
	img := mediatest.DecodeJPEG(t, path)
	sum, n := 0.0, 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			sum += float64(color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
			n++
		}
	}
	return sum / float64(n)
}

// Pointing: the box the model gives for a shown step becomes the node's
// highlight, outlined on its screenshot (dark, bright and light rings
// outside the box, the element itself untouched); an inverted box is
// dropped, not drawn. With the privacy pass on or off.
func TestTheScreenshotShowsWhereToClick(t *testing.T) {
	t.Parallel()
	det, _ := privacy.NewDetector(nil)
	for name, d := range map[string]*privacy.Detector{"redaction on": det, "redaction off": nil} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, func(c *pipeline.Config) { c.Privacy = d })
			page := mediatest.Make(t, r.dir, "page.mp4", mediatest.Spec{Width: 1280, Height: 720, Seconds: 3, FPS: 5,
				Texts: []mediatest.Text{{Text: "Settings", X: 40, Y: 20, Size: 30}}})
			id, _ := r.complete(page, chain(
				`{"id": "save", "type": "task", "label": "Click Save", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown", "box_2d": [400, 300, 500, 600]}`,
				`{"id": "check", "type": "task", "label": "Check", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:02", "evidence": "shown", "box_2d": [500, 600, 400, 300]}`,
			))
			obj, _ := r.fake.Object("videos/" + id.SOPPath())
			stored, _ := os.ReadFile(obj.File)
			doc, err := sop.Load(stored, string(id))
			if err != nil {
				t.Fatal(err)
			}
			if h := doc.Public.Nodes[0].Highlight; h == nil || *h != (sop.Highlight{X: 0.3, Y: 0.4, W: 0.3, H: 0.1}) {
				t.Errorf("save's highlight %+v", h)
			}
			if h := doc.Public.Nodes[1].Highlight; h != nil {
				t.Errorf("an inverted box became a highlight: %+v", h)
			}
			save, _ := r.fake.Object("videos/" + id.FramePath("save"))
			check, _ := r.fake.Object("videos/" + id.FramePath("check"))
			// The box is x 384–768, y 288–360 of 1280×720; the bright ring
			// lies 3 to 6 pixels outside it (a unit is 2 pixels at 720p).
			if c := pixel(t, save.File, 576, 283); c.R < 200 || c.G > 140 || c.B > 80 {
				t.Errorf("no bright ring above the box: %v", c)
			}
			if c := pixel(t, save.File, 772, 324); c.R < 200 || c.G > 140 || c.B > 80 {
				t.Errorf("no bright ring right of the box: %v", c)
			}
			if mean := meanLuma(t, save.File, image.Rect(392, 296, 760, 352)); mean < 230 {
				t.Errorf("inside the box, mean luma %.1f: the element is covered", mean)
			}
			if mean := meanLuma(t, check.File, image.Rect(370, 270, 780, 380)); mean < 230 {
				t.Errorf("the inverted box was drawn: mean luma %.1f", mean)
			}
		})
	}
}

// pixel is the colour of the JPEG at path at x, y.
func pixel(t *testing.T, path string, x, y int) color.RGBA {
	t.Helper()
	return color.RGBAModel.Convert(mediatest.DecodeJPEG(t, path).At(x, y)).(color.RGBA)
}

// Two steps shown at one second are two copies of one picture: what is
// found on it, and the box the model gives on one step, are covered on
// both; each copy has its own step's highlight, and only that.
func TestEveryCopyOfAPictureIsCovered(t *testing.T) {
	t.Parallel()
	r := newRig(t, withPrivacy)
	video := r.screen([]mediatest.Text{
		{Text: "Account settings", X: 60, Y: 60, Size: 34},
		{Text: "API key sk_live_HjgzWt6VY7cXRHfkDTjqIdl9", X: 60, Y: 200, Size: 30},
		{Text: "Billing Invoices Export Reports", X: 60, Y: 410, Size: 30},
		{Text: "PIN 8812", X: 900, Y: 600, Size: 40},
	})
	id, j := r.complete(video, chain(
		`{"id": "open", "type": "task", "label": "Open the settings", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown",
		"sensitive": [{"value": "8812", "kind": "password", "box_2d": [820, 690, 930, 900]}]}`,
		`{"id": "copy", "type": "task", "label": "Copy the key", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown", "box_2d": [550, 40, 620, 500]}`,
	))
	for _, node := range []string{"open", "copy"} {
		obj, ok := r.fake.Object("videos/" + id.FramePath(node))
		if !ok {
			t.Fatalf("no screenshot of %s; frames %v", node, j.Metadata["frames"])
		}
		seen := mediatest.ScreenText(t, obj.File)
		for _, v := range []string{"sk_live", "HjgzWt", "8812"} {
			if strings.Contains(seen, v) {
				t.Errorf("%s: OCR reads %q:\n%s", node, v, seen)
			}
		}
		if !containsAll(seen, []string{"Account", "Billing", "Reports"}) {
			t.Errorf("%s: the rest of the screen is no longer legible:\n%s", node, seen)
		}
		if spread := lumaSpread(t, obj.File, pinBox); spread > 24 {
			t.Errorf("%s: the box the model gave on open has luma %d apart: something is drawn in it", node, spread)
		}
		// copy's highlight: x 51–640, y 396–446; its bright ring 3 to 6
		// pixels above.
		c := pixel(t, obj.File, 300, 391)
		if ring := c.R > 200 && c.G < 140 && c.B < 80; ring != (node == "copy") {
			t.Errorf("%s: the pixel on copy's outline is %v", node, c)
		}
	}
}

// A requeue after the retention deleted the raw upload keeps the
// screenshots of unchanged steps, passed through this run's privacy pass:
// a name the model marks only now is covered on them; metadata.privacy
// counts this run alone.
func TestARerunPassesKeptScreenshotsAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t, withPrivacy)
	video := r.screen([]mediatest.Text{
		{Text: "Customer Margarethe Vandersloot", X: 60, Y: 100, Size: 34},
		{Text: "Billing Invoices Export Reports", X: 60, Y: 300, Size: 30},
	})
	answer := func(context, marks string) string {
		return chain(
			`{"id": "open", "type": "task", "label": "Open the customer", "intent": "i", "context": "` + context + `", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown", "sensitive": [` + marks + `]}`,
		)
	}
	id, j := rerunAfterRetention(t, r, video, answer("uses key sk_live_HjgzWt6VY7cXRHfkDTjqIdl9", ""), func(id jobs.ID) {
		obj, _ := r.fake.Object("videos/" + id.FramePath("open"))
		if seen := mediatest.ScreenText(t, obj.File); !strings.Contains(seen, "Vandersloot") {
			t.Fatalf("the first run's screenshot does not show the name (the test proves nothing):\n%s", seen)
		}
	}, answer("", `{"value": "Margarethe Vandersloot", "kind": "name"}`))
	checkFrames(t, j, `{"count":1,"missing":[]}`)
	obj, _ := r.fake.Object("videos/" + id.FramePath("open"))
	seen := mediatest.ScreenText(t, obj.File)
	if strings.Contains(seen, "Vandersloot") || strings.Contains(seen, "Margarethe") || !containsAll(seen, []string{"Customer", "Billing", "Reports"}) {
		t.Errorf("the kept screenshot after the rerun reads:\n%s", seen)
	}
	if b, _ := json.Marshal(j.Metadata["privacy"]); string(b) != `{"counts":{"name":1},"sources":{"model":1}}` {
		t.Errorf("metadata.privacy %s: want this run's name alone (the first run's key is not this SOP's)", b)
	}
}

// No value leaves the worker anywhere else: not in its logs (at debug
// level, the model's rejected answer included), not in the job's row
// (error, metadata, every column), not in a webhook event's payload.
func TestNoValueInLogsRowOrEvents(t *testing.T) {
	t.Parallel()
	var logs logtest.Logs
	logger := slog.New(queue.JobLogs(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	r := newRigWith(t, logger, []string{"https://hooks.example.com/runops"}, withPrivacy, func(c *pipeline.Config) { c.Logger = logger })
	video := r.screen([]mediatest.Text{
		{Text: "Signed in as jane.doe@acme-corp.com", X: 60, Y: 130, Size: 30},
		{Text: "API key sk_live_HjgzWt6VY7cXRHfkDTjqIdl9", X: 60, Y: 200, Size: 30},
	})
	// A first answer the validator rejects, naming values in its problems
	// (edges to nodes that do not exist: an e-mail address, and a name
	// only that answer marks), then the leaky one.
	rejected := strings.Replace(leakyAnswer, `"target":"done"`, `"target":"jane.doe@acme-corp.com"`, 1)
	rejected = strings.Replace(rejected, `"target":"key"`, `"target":"Jane Doe"`, 1)
	r.ai.Script(geminitest.JSON(rejected), geminitest.JSON(leakyAnswer))
	id := r.submit(video, nil)
	mustComplete(t, r.finished(id))
	if len(r.ai.Requests()) != 2 {
		t.Fatalf("%d requests: the rejected answer was not rejected (the test proves less)", len(r.ai.Requests()))
	}
	var row, events string
	if err := r.pool.QueryRow(context.Background(), `SELECT to_jsonb(j)::text FROM jobs j WHERE job_id = $1`, string(id)).Scan(&row); err != nil {
		t.Fatal(err)
	}
	if err := r.pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(body::text, ' '), '') FROM runops_webhooks WHERE job_id = $1`, string(id)).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events == "" || !strings.Contains(logs.String(), "[email]") || !strings.Contains(logs.String(), "[name]") {
		t.Fatalf("no event (%q) or no scrubbed problem in the logs: the test proves less", events)
	}
	for _, v := range append(leakedValues, "HjgzWt6VY7c") {
		for what, text := range map[string]string{"logs": logs.String(), "job row": row, "webhook events": events} {
			if strings.Contains(strings.ToLower(text), strings.ToLower(v)) {
				t.Errorf("%q is in the %s", v, what)
			}
		}
	}
}

// After the retention, two steps of one second keep their screenshots as
// two pictures: the box the model gives on one step covers both.
func TestARerunCoversEveryKeptCopy(t *testing.T) {
	t.Parallel()
	r := newRig(t, withPrivacy)
	video := r.screen([]mediatest.Text{
		{Text: "Account settings", X: 60, Y: 60, Size: 34},
		{Text: "PIN 8812", X: 900, Y: 600, Size: 40},
	})
	answer := func(sensitive string) string {
		return chain(
			`{"id": "open", "type": "task", "label": "Open the settings", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown", "sensitive": [`+sensitive+`]}`,
			`{"id": "copy", "type": "task", "label": "Read the code", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"}`,
		)
	}
	id, _ := rerunAfterRetention(t, r, video, answer(""), func(jobs.ID) {},
		answer(`{"value": "the door code", "kind": "password", "box_2d": [820, 690, 930, 900]}`))
	for _, node := range []string{"open", "copy"} {
		obj, _ := r.fake.Object("videos/" + id.FramePath(node))
		if seen := mediatest.ScreenText(t, obj.File); strings.Contains(seen, "8812") || !strings.Contains(seen, "Account") {
			t.Errorf("%s's kept screenshot after the rerun reads:\n%s", node, seen)
		}
	}
}

// rerunAfterRetention runs a job of video with the first answer, has check
// look at what it stored, deletes the raw upload as the retention does, and
// runs the job again with the second answer; both runs must complete.
func rerunAfterRetention(t *testing.T, r *rig, video, first string, check func(jobs.ID), second string) (jobs.ID, jobs.Job) {
	t.Helper()
	id, _ := r.complete(video, first)
	check(id)
	removeObject(t, r, id.RawPath())
	r.ai.Answer(geminitest.JSON(second))
	j := r.rerun(id)
	mustComplete(t, j)
	return id, j
}

// screen makes a 3-second 720p recording of a light page with texts on it.
func (r *rig) screen(texts []mediatest.Text) string {
	r.t.Helper()
	return mediatest.Make(r.t, r.dir, "screen.mp4", mediatest.Spec{Width: 1280, Height: 720, Seconds: 3, FPS: 5, Texts: texts})
}

// A kept screenshot larger than any the worker writes (an object replaced
// by hand) is left out, not cut short: its step has none after the rerun,
// no part of it stays in the work directory, and the job completes.
func TestAnOversizedKeptScreenshotIsLeftOut(t *testing.T) {
	t.Parallel()
	left := make(chan []string, 1)
	r := newRigOf(t, rigOptions{logger: quiet, wrap: func(p queue.Handler) queue.Handler {
		return queue.HandlerFunc(func(ctx context.Context, job queue.Job, rep queue.Reporter) error {
			err := p.Run(ctx, job, rep)
			shots, _ := filepath.Glob(filepath.Join(job.TempDir, "shot-*"))
			select {
			case left <- shots:
			default:
			}
			return err
		})
	}}, withPrivacy)
	video, answer := r.screen(settingsPage), openTheSettings
	_, j := rerunAfterRetention(t, r, video, answer, func(id jobs.ID) {
		obj, ok := r.fake.Object("videos/" + id.FramePath("open"))
		if !ok {
			t.Fatal("the first run stored no screenshot (the test proves nothing)")
		}
		if err := os.WriteFile(obj.File, bytes.Repeat([]byte{0xff}, 17<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		wait.Recv(t, left, "the first run's end") // it took its screenshot from the recording
	}, answer)
	checkFrames(t, j, `{"count":0,"missing":[{"node":"open","reason":"the recording is no longer in storage"}]}`)
	if shots := wait.Recv(t, left, "the rerun's end"); len(shots) != 0 {
		t.Errorf("files left in the work directory: %v", shots)
	}
}

// settingsPage is a page the first second of which openTheSettings shows,
// as its one step, "open".
var (
	settingsPage    = []mediatest.Text{{Text: "Account settings", X: 60, Y: 60, Size: 34}}
	openTheSettings = chain(`{"id": "open", "type": "task", "label": "Open the settings", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"}`)
)

// fullDiskRig is a rig with the privacy pass on whose next runs, as many
// as full holds, find every write of step "open"'s screenshot failing for
// want of room (ENOSPC) while the disk's free space says there is room.
func fullDiskRig(t *testing.T, full *atomic.Int32) *rig {
	return newRigOf(t, rigOptions{logger: quiet, wrap: func(p queue.Handler) queue.Handler {
		return queue.HandlerFunc(func(ctx context.Context, job queue.Job, rep queue.Reporter) error {
			if full.Add(-1) >= 0 {
				if err := os.MkdirAll(job.TempDir, 0o700); err != nil {
					return err
				}
				if err := os.Symlink("/dev/full", filepath.Join(job.TempDir, "shot-open.jpg")); err != nil {
					return err
				}
			}
			return p.Run(ctx, job, rep)
		})
	}}, withPrivacy)
}

// handedBack counts a job's attempts that were handed back.
func handedBack(j jobs.Job) int {
	attempts, _ := j.Metadata["attempts"].([]any)
	n := 0
	for _, a := range attempts {
		if m, _ := a.(map[string]any); m["outcome"] == "handed_back" {
			n++
		}
	}
	return n
}

// A disk that fills while a kept screenshot downloads hands the job back,
// as a full disk anywhere else does, instead of failing it: the rerun
// completes once there is room.
func TestAFullDiskWhileKeepingAScreenshotHandsTheJobBack(t *testing.T) {
	t.Parallel()
	var full atomic.Int32
	r := fullDiskRig(t, &full)
	video, answer := r.screen(settingsPage), openTheSettings
	_, j := rerunAfterRetention(t, r, video, answer, func(jobs.ID) { full.Store(1) }, answer)
	if full.Load() > 0 {
		t.Fatal("the full disk was never met (the test proves nothing)")
	}
	if n, _ := j.Metadata["disk_handbacks"].(float64); n != 0 || handedBack(j) != 1 {
		t.Errorf("disk_handbacks %v, %d attempts handed back; want 0 after the run that had room, and one", j.Metadata["disk_handbacks"], handedBack(j))
	}
	checkFrames(t, j, `{"count":1,"missing":[]}`)
}

// A disk whose writes fail on every run while its free space says there
// is room (a quota, no inodes left) hands the job back three times, then
// ends it with the sentence for a disk without room: each run finds room
// at first, and that does not start the count of hand-backs again.
func TestADiskFullOnEveryRunEndsTheJob(t *testing.T) {
	t.Parallel()
	var full atomic.Int32
	r := fullDiskRig(t, &full)
	video, answer := r.screen(settingsPage), openTheSettings
	id, _ := r.complete(video, answer)
	removeObject(t, r, id.RawPath())
	r.ai.Answer(geminitest.JSON(answer))
	full.Store(1000)
	j := r.rerun(id)
	if j.Status != jobs.StatusError || !strings.Contains(deref(j.Error), "has not had room") || handedBack(j) != 3 {
		t.Fatalf("%s %q after %d hand-backs and %d runs", j.Status, deref(j.Error), handedBack(j), 1000-full.Load())
	}
}
