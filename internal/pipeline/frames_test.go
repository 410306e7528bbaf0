package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/supabasetest"
)

// chain is the sample answer with other nodes: the tasks given, each a JSON
// object, one after the other from a "start" edge, then an end node "done".
func chain(tasks ...string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(geminitest.SampleSOP), &m); err != nil {
		panic(err)
	}
	nodes, edges := []map[string]any{}, []map[string]any{}
	for i, task := range append(tasks[:len(tasks):len(tasks)], `{"id": "done", "type": "end", "label": "Done", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred"}`) {
		var n map[string]any
		if err := json.Unmarshal([]byte(task), &n); err != nil {
			panic(fmt.Sprintf("task %d: %v", i, err))
		}
		if i > 0 {
			condition := ""
			if i == 1 {
				condition = "start"
			}
			edges = append(edges, map[string]any{"source": nodes[i-1]["id"], "target": n["id"], "condition": condition})
		}
		nodes = append(nodes, n)
	}
	m["nodes"], m["edges"], m["steps"] = nodes, edges, []any{}
	b, _ := json.Marshal(m)
	return string(b)
}

// Four steps: two shown (at 1 s and 4 s), one narrated, one inferred; the
// recording's picture changes every second and has one keyframe.
var clockAnswer = chain(
	`{"id": "login", "type": "task", "label": "Log in", "intent": "i", "context": "00:00:01", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"}`,
	`{"id": "say", "type": "task", "label": "Tell the team", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "narrated"}`,
	`{"id": "save", "type": "task", "label": "Save", "intent": "i", "context": "00:00:04", "parent_id": "", "timestamp": "00:00:04", "evidence": "shown"}`,
)

// Each shown step's screenshot is the picture of its own second, from the
// frames the transcode decoded anyway, as high as the recording up to 1080
// pixels; the raw upload has left the work directory before the slim copy
// is uploaded.
func TestAScreenshotOfEveryShownStep(t *testing.T) {
	t.Parallel()
	kinds := map[string]mediatest.Spec{
		"one keyframe, 720p":  {Width: 1280, Height: 720, Seconds: 6, Clock: true},
		"browser webm":        {Width: 640, Height: 480, Seconds: 6, Clock: true, Format: "webm-live", OneKeyframe: true},
		"b-frames, 1080p obs": {Width: 1920, Height: 1080, Seconds: 6, Clock: true, Preset: "veryfast", FPS: 25},
	}
	for name, spec := range kinds {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.ai.Answer(geminitest.JSON(clockAnswer))
			var rawLeft atomic.Int32 // 1: gone when the slim copy was stored; 2: still there
			r.fake.OnRequest(func(op supabasetest.Op, path string) {
				if op == supabasetest.OpUpload && strings.Contains(path, "/slim/") {
					id := strings.TrimSuffix(path[strings.LastIndex(path, "/")+1:], ".mp4")
					raws, _ := filepath.Glob(filepath.Join(os.TempDir(), "*"+id+"-*", "raw"))
					rawLeft.Store(int32(1 + len(raws)))
				}
			})
			id := r.submit(mediatest.Make(t, r.dir, "clock.mp4", spec), nil)
			j := r.finished(id)
			mustComplete(t, j)
			if rawLeft.Load() != 1 {
				t.Errorf("raw upload in the work directory when the slim copy was stored: %v", rawLeft.Load() == 2)
			}
			checkScreenshots(t, r, id, map[string]int{"login": 1, "save": 4}, min(spec.Height, 1080))
			checkFrames(t, j, `{"count":2,"missing":[]}`)
			if timings, _ := j.Metadata["timings"].(map[string]any); timings["frames_ms"] == nil {
				t.Errorf("no frames stage in %v", timings)
			}
		})
	}
}

// checkScreenshots checks the stored SOP of job id: the steps of second
// (node → second shown) have their screenshot, of that second and height
// pixels high; no other step has one.
func checkScreenshots(t *testing.T, r *rig, id jobs.ID, second map[string]int, height int) {
	t.Helper()
	stored, ok := r.fake.Object("videos/" + id.SOPPath())
	if !ok {
		t.Fatal("no SOP")
	}
	b, _ := os.ReadFile(stored.File)
	var doc struct {
		Public struct {
			Nodes []map[string]any `json:"nodes"`
		} `json:"public"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, n := range doc.Public.Nodes {
		node := n["id"].(string)
		path := "frames/" + string(id) + "/" + node + ".jpg" // exactly this: no bucket prefix, no URL
		obj, stored := r.fake.Object("videos/" + path)
		want, shown := second[node]
		switch {
		case !shown && n["screenshot"] != nil:
			t.Errorf("%s is %s and has a screenshot", node, n["evidence"])
		case !shown:
		case n["screenshot"] != path || !stored || obj.ContentType != "image/jpeg":
			t.Errorf("%s: screenshot %v, stored %v (%s)", node, n["screenshot"], stored, obj.ContentType)
		default:
			if got := mediatest.ClockSecond(t, obj.File); got != want {
				t.Errorf("%s is shown at second %d; its screenshot is of second %d", node, want, got)
			}
			f, _ := os.Open(obj.File)
			cfg, err := jpeg.DecodeConfig(f)
			f.Close()
			if err != nil || cfg.Height != height {
				t.Errorf("%s: a picture %d pixels high, want %d (%v)", node, cfg.Height, height, err)
			}
		}
	}
}

// rerun puts a finished job back in the queue, as a person does from the
// dashboard, and waits for its end.
func (r *rig) rerun(id jobs.ID) jobs.Job {
	r.t.Helper()
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id)); err != nil {
		r.t.Fatal(err)
	}
	return r.finished(id)
}

// clockAnswerAt is clockAnswer with its shown steps at other seconds.
func clockAnswerAt(login, save string) string {
	a := strings.Replace(clockAnswer, `"00:00:01"`, login, 2)
	return strings.Replace(a, `"00:00:04"`, save, 2)
}

// A rerun reuses the slim copy, whose frames are gone: one more download of
// the raw upload, one pass over it, and each screenshot of its own second.
func TestARerunTakesTheScreenshotsAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id, _ := r.complete(mediatest.Make(t, r.dir, "clock.webm", mediatest.Spec{Width: 640, Height: 480, Seconds: 6, Clock: true, Format: "webm-live", OneKeyframe: true}), clockAnswer)
	r.ai.Answer(geminitest.JSON(clockAnswerAt(`"00:00:02"`, `"00:00:05"`)))
	downloads := r.fake.Calls(supabasetest.OpDownload)
	j := r.rerun(id)
	mustComplete(t, j)
	if got := r.fake.Calls(supabasetest.OpDownload) - downloads; got != 2 {
		t.Errorf("%d downloads on the rerun; want 2 (the slim copy, the raw upload once)", got)
	}
	checkScreenshots(t, r, id, map[string]int{"login": 2, "save": 5}, 480)
	checkFrames(t, j, `{"count":2,"missing":[]}`)
}

// An outage while the rerun reads the raw upload again is an outage: the
// job ends with storage's sentence, and the previous screenshots stay.
func TestAnOutageOnTheRerunIsNotAMissingPicture(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id, _ := r.completed(r.video())
	r.fake.OnRequest(func(op supabasetest.Op, path string) {
		if op == supabasetest.OpDownload && strings.Contains(path, "/slim/") {
			r.fake.FailNext(supabasetest.OpDownload, 10, 503) // every download after the slim copy's
		}
	})
	j := r.rerun(id)
	if outcome(j) != "File storage could not be reached for too long; please try again in a few minutes." {
		t.Fatalf("rerun: %s (frames %v)", outcome(j), j.Metadata["frames"])
	}
	for _, node := range []string{"open", "refund"} {
		if _, ok := r.fake.Object("videos/" + id.FramePath(node)); !ok {
			t.Errorf("the screenshot of %s was deleted", node)
		}
	}
}

// A requeue after the retention deleted the raw upload: a step unchanged
// since the previous SOP keeps its screenshot; a step moved to another
// second, or new, has none (noted), and only the moved step's old picture
// is deleted.
func TestARerunWithoutTheRecordingKeepsUnchangedScreenshots(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id, _ := r.complete(mediatest.Make(t, r.dir, "clock.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 6, Clock: true}), clockAnswer)
	removeObject(t, r, id.RawPath())
	// login unchanged; say now shown; save moved from 4 s to 3 s.
	moved := chain(
		`{"id": "login", "type": "task", "label": "Log in", "intent": "i", "context": "00:00:01", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"}`,
		`{"id": "say", "type": "task", "label": "Tell the team", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:02", "evidence": "shown"}`,
		`{"id": "save", "type": "task", "label": "Save", "intent": "i", "context": "00:00:03", "parent_id": "", "timestamp": "00:00:03", "evidence": "shown"}`,
	)
	r.ai.Answer(geminitest.JSON(moved))
	j := r.rerun(id)
	mustComplete(t, j)
	want := `{"count":1,"missing":[{"node":"say","reason":"the recording is no longer in storage"},` +
		`{"node":"save","reason":"the recording is no longer in storage"}]}`
	checkFrames(t, j, want)
	checkScreenshots(t, r, id, map[string]int{"login": 1}, 240)
	if _, ok := r.fake.Object("videos/" + id.FramePath("save")); ok {
		t.Error("the screenshot of save, of a second it is no longer shown at, is still stored")
	}
}

// At most MaxScreenshots shown steps get a screenshot; the others are
// noted, in the order of the nodes.
func TestScreenshotsAreBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var nodes []string
	const steps = pipeline.MaxScreenshots + 3
	for i := range steps {
		nodes = append(nodes, fmt.Sprintf(`{"id": "s%d", "type": "task", "label": "Step %d", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:0%d", "evidence": "shown"}`, i, i, i%3))
	}
	r.ai.Answer(geminitest.JSON(chain(nodes...)))
	uploads := r.fake.Calls(supabasetest.OpUpload)
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3}), nil)
	j := r.finished(id)
	mustComplete(t, j)
	var frames struct {
		Count   int            `json:"count"`
		Missing []missingFrame `json:"missing"`
	}
	b, _ := json.Marshal(j.Metadata["frames"])
	_ = json.Unmarshal(b, &frames)
	if frames.Count != pipeline.MaxScreenshots || len(frames.Missing) != 3 || frames.Missing[0].Node != "s100" ||
		frames.Missing[0].Reason != "only the first 100 shown steps get a screenshot" {
		t.Fatalf("metadata.frames %s", b)
	}
	// The slim copy, the screenshots, the SOP.
	if got := r.fake.Calls(supabasetest.OpUpload) - uploads; got != 1+pipeline.MaxScreenshots+1 {
		t.Errorf("%d uploads", got)
	}
}

type missingFrame struct{ Node, Reason string }

func TestATimestampPastTheEndIsAskedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	late := strings.Replace(geminitest.SampleSOP, `"timestamp": "00:00:01"`, `"timestamp": "00:00:09"`, 1)
	unshown := strings.Replace(geminitest.SampleSOP, `"timestamp": "00:00:00"`, `"timestamp": ""`, 1)
	r.ai.Script(geminitest.JSON(late), geminitest.JSON(unshown), geminitest.JSON(geminitest.SampleSOP))
	id := r.submit(r.video(), nil) // 2 seconds
	j := r.finished(id)
	mustComplete(t, j)
	reqs := r.ai.Requests()
	if len(reqs) != 3 || !strings.Contains(reqs[1].Prompt, "00:00:09 is past the end of the video") ||
		!strings.Contains(reqs[2].Prompt, "a shown step needs the moment it is shown") {
		t.Fatalf("%d requests; the second and third prompts end with:\n%s", len(reqs), tails(reqs[1:]))
	}
}

func tails(reqs []geminitest.GenerateRequest) string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.Prompt[max(len(r.Prompt)-400, 0):])
	}
	return strings.Join(out, "\n---\n")
}

// A step whose picture cannot be taken keeps its place, noted.
func TestAStepWithoutAPictureKeepsItsPlace(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// "Weird.id" cannot name an object; the recording is 3 s long, so
	// 00:00:02 is inside it.
	answer := strings.ReplaceAll(geminitest.SampleSOP, `"refund"`, `"Weird.id"`)
	answer = strings.Replace(answer, `"timestamp": "00:00:01"`, `"timestamp": "00:00:02"`, 1)
	id, j := r.complete(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3}), answer)
	frames, _ := json.Marshal(j.Metadata["frames"])
	if !strings.Contains(string(frames), `"count":1`) || !strings.Contains(string(frames), `{"node":"Weird.id","reason":"the step's id cannot name a file`) {
		t.Fatalf("frames %s", frames)
	}
	obj, _ := r.fake.Object("videos/" + id.SOPPath())
	b, _ := os.ReadFile(obj.File)
	d, err := sop.Load(b, string(id))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range d.Public.Nodes {
		if want := map[string]string{"open": id.FramePath("open")}[n.ID]; n.Screenshot != want {
			t.Errorf("%s: screenshot %q; want %q", n.ID, n.Screenshot, want)
		}
	}
}

// A rerun whose steps differ leaves no screenshot behind that its SOP does
// not name.
func TestARerunLeavesNoStaleScreenshot(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id, _ := r.completed(r.video())
	if _, ok := r.fake.Object("videos/" + id.FramePath("refund")); !ok {
		t.Fatal("no screenshot of refund after the first run")
	}
	if n := r.fake.Calls(supabasetest.OpList); n != 0 {
		t.Fatalf("the first claim listed the screenshots %d times; nothing can be stale yet", n)
	}
	r.ai.Answer(geminitest.JSON(strings.ReplaceAll(geminitest.SampleSOP, `"refund"`, `"refund-it"`)))
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	if j := r.finished(id); outcome(j) != done {
		t.Fatalf("rerun: %s", deref(j.Error))
	}
	for node, want := range map[string]bool{"open": true, "refund-it": true, "refund": false} {
		if _, ok := r.fake.Object("videos/" + id.FramePath(node)); ok != want {
			t.Errorf("screenshot of %s stored: %v, want %v", node, ok, want)
		}
	}
}

// The screenshots the transcode writes are booked in the work directory
// with the rest: room for the upload and its slim copy only is not enough,
// and the job is handed back once its length is known.
func TestScreenshotsAreBookedOnDisk(t *testing.T) {
	t.Parallel()
	var free atomic.Uint64
	r := newRig(t, func(c *pipeline.Config) {
		c.FreeSpace = func(string) (uint64, error) { return free.Load(), nil }
	})
	video := mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 1920, Height: 1080, Seconds: 20, FPS: 5})
	st, err := os.Stat(video)
	if err != nil {
		t.Fatal(err)
	}
	// The upload, its slim copy and the 64 MiB to spare, plus 2 MiB: 21
	// screenshots of 1080p need about 13 MB.
	free.Store(uint64(st.Size())*12/10 + 64<<20 + 2<<20)
	id := r.submit(video, nil)
	r.waitFor("the hand-back", func() bool { return r.job(id).Metadata["disk_handbacks"] == float64(1) })
	if j := r.job(id); j.Metadata["probe"] == nil {
		t.Fatalf("handed back before the probe: %v", j.Metadata)
	}
}

// Storing the screenshots is bounded in time: past it, the steps not yet
// stored are noted and the SOP is written.
func TestScreenshotsWithinTheirTimeLimit(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *pipeline.Config) { c.FramesTimeout = 500 * time.Millisecond })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	r.fake.OnRequest(func(op supabasetest.Op, path string) {
		if op == supabasetest.OpUpload && strings.HasSuffix(path, ".jpg") {
			<-release // storage takes the screenshots' uploads in and never answers
		}
	})
	id := r.submit(r.video(), nil)
	j := r.finished(id)
	mustComplete(t, j)
	want := `{"count":0,"missing":[{"node":"open","reason":"taking and storing the screenshots took longer than 1 second"},` +
		`{"node":"refund","reason":"taking and storing the screenshots took longer than 1 second"}]}`
	checkFrames(t, j, want)
}

// checkFrames checks the job's metadata.frames, as JSON.
func checkFrames(t *testing.T, j jobs.Job, want string) {
	t.Helper()
	if b, _ := json.Marshal(j.Metadata["frames"]); string(b) != want {
		t.Errorf("metadata.frames %s; want %s", b, want)
	}
}
