package pipeline_test

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/supabasetest"
)

// withNodes is the sample answer with other nodes (and edges to match).
func withNodes(nodes, edges string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(geminitest.SampleSOP), &m); err != nil {
		panic(err)
	}
	var n, e any
	_ = json.Unmarshal([]byte(nodes), &n)
	_ = json.Unmarshal([]byte(edges), &e)
	m["nodes"], m["edges"], m["steps"] = n, e, []any{}
	b, _ := json.Marshal(m)
	return string(b)
}

// Four steps: two shown (at 1 s and 4 s), one narrated, one inferred; the
// recording's picture changes every second and has one keyframe.
var clockAnswer = withNodes(`[
  {"id": "login", "type": "task", "label": "Log in", "intent": "i", "context": "00:00:01", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"},
  {"id": "say", "type": "task", "label": "Tell the team", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "narrated"},
  {"id": "save", "type": "task", "label": "Save", "intent": "i", "context": "00:00:04", "parent_id": "", "timestamp": "00:00:04", "evidence": "shown"},
  {"id": "done", "type": "end", "label": "Done", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred"}
]`, `[
  {"source": "login", "target": "say", "condition": "start"},
  {"source": "say", "target": "save", "condition": ""},
  {"source": "save", "target": "done", "condition": ""}
]`)

func TestAScreenshotOfEveryShownStep(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Answer(geminitest.JSON(clockAnswer))
	id := r.submit(mediatest.Make(t, r.dir, "clock.mp4", mediatest.Spec{Width: 1280, Height: 720, Seconds: 6, Clock: true}), nil)
	j := r.finished(id)
	if outcome(j) != done {
		t.Fatalf("%s", deref(j.Error))
	}
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
	second := map[string]int{"login": 1, "save": 4}
	for _, n := range doc.Public.Nodes {
		node := n["id"].(string)
		path := "frames/" + string(id) + "/" + node + ".jpg" // exactly this: no bucket prefix, no URL
		obj, stored := r.fake.Object("videos/" + path)
		want, shown := second[node]
		switch {
		case !shown && (stored || n["screenshot"] != nil):
			t.Errorf("%s is %s and has a screenshot", node, n["evidence"])
		case !shown:
		case n["screenshot"] != path || !stored || obj.ContentType != "image/jpeg":
			t.Errorf("%s: screenshot %v, stored %v (%s)", node, n["screenshot"], stored, obj.ContentType)
		default:
			if got := mediatest.ClockSecond(t, obj.File); got != want {
				t.Errorf("%s is shown at second %d; its screenshot is of second %d", node, want, got)
			}
		}
	}
	if frames, _ := json.Marshal(j.Metadata["frames"]); string(frames) != `{"count":2,"missing":[]}` {
		t.Errorf("metadata.frames %s", frames)
	}
	if timings, _ := j.Metadata["timings"].(map[string]any); timings["frames_ms"] == nil {
		t.Errorf("no frames stage in %v", timings)
	}
}

func TestATimestampPastTheEndIsAskedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	late := strings.Replace(geminitest.SampleSOP, `"timestamp": "00:00:01"`, `"timestamp": "00:00:09"`, 1)
	unshown := strings.Replace(geminitest.SampleSOP, `"timestamp": "00:00:00"`, `"timestamp": ""`, 1)
	r.ai.Script(geminitest.JSON(late), geminitest.JSON(unshown), geminitest.JSON(geminitest.SampleSOP))
	id := r.submit(r.video(), nil) // 2 seconds
	j := r.finished(id)
	if outcome(j) != done {
		t.Fatalf("%s", deref(j.Error))
	}
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
	r.ai.Answer(geminitest.JSON(answer))
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3}), nil)
	j := r.finished(id)
	if outcome(j) != done {
		t.Fatalf("%s", deref(j.Error))
	}
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
	id := r.submit(r.video(), nil)
	if j := r.finished(id); outcome(j) != done {
		t.Fatalf("%s", deref(j.Error))
	}
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
