package pipeline_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// goodSOP is a model answer in the flat response schema.
const goodSOP = geminitest.SampleSOP

// brokenSOP parses but fails validation: the decision has no "no" branch.
var brokenSOP = strings.Replace(goodSOP, `"condition": "no"`, `"condition": ""`, 1)

func (r *rig) video() string {
	return mediatest.Make(r.t, r.dir, "v.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2, Audio: true})
}

func TestWholePathToTheSOPAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id := r.submit(r.video(), nil)
	j := r.finished(id)
	mustComplete(t, j)
	g, _ := j.Metadata["gemini"].(map[string]any)
	usage, _ := g["usage"].(map[string]any)
	sopMeta, _ := j.Metadata["sop"].(map[string]any)
	slimSHA := j.Metadata["slim"].(map[string]any)["sha256"]
	if g["model"] != "gemini-test" || g["prompt_version"] != "sop-v4" || g["calls"] != float64(1) ||
		g["file_name"] == nil || g["file_expires_at"] == nil || g["slim_sha256"] != slimSHA || usage["video_tokens"] != float64(774) ||
		usage["total_tokens"] != float64(1200) || sopMeta["nodes"] != float64(5) || sopMeta["path"] != id.SOPPath() {
		t.Fatalf("metadata %v", j.Metadata)
	}
	if _, ok := r.fake.Object("videos/" + id.SOPPath()); !ok {
		t.Fatal("no SOP in storage")
	}
	if len(r.ai.Files()) != 0 || len(r.ai.Deleted()) != 1 {
		t.Fatalf("the Gemini file was not deleted on completion: %v", r.ai.Files())
	}
	req := r.ai.Requests()[0]
	if req.FPS != 1 || !req.HasSchema || req.System == "" || !strings.Contains(req.Prompt, "Invent nothing") {
		t.Fatalf("request %+v", req)
	}
	// Triggers as the viewer types them (docs/frontend-contract.md): the
	// schema allows its four types and asks for config as text; the prompt
	// says what each type means.
	var sent struct {
		Properties struct {
			Triggers struct {
				Items struct {
					Properties struct {
						Type   struct{ Enum []string }
						Config struct{ Type string }
					}
					Required []string
				}
			}
		}
	}
	if err := json.Unmarshal(req.Schema, &sent); err != nil {
		t.Fatal(err)
	}
	trig := sent.Properties.Triggers.Items
	if strings.Join(trig.Properties.Type.Enum, ",") != "cron,manual,webhook,event" || trig.Properties.Config.Type != "string" ||
		!slices.Contains(trig.Required, "config") {
		t.Fatalf("trigger schema %s", req.Schema)
	}
	for _, typ := range []string{`"cron"`, `"manual"`, `"webhook"`, `"event"`} {
		if !strings.Contains(req.Prompt, typ) {
			t.Errorf("the prompt does not explain trigger type %s", typ)
		}
	}

	// What the viewer then loads.
	objects, _ := storage.New(storage.Config{URL: r.fake.URL, ServiceKey: r.fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	srv := httptest.NewServer(api.Handler(api.Options{Jobs: r.store, Objects: objects, SOPs: postgres.NewSOPLocker(r.pool),
		Logger: quiet}))
	defer srv.Close()
	for path, want := range map[string]string{"/api/job-status/" + string(id): `"status":"completed"`, "/api/sop/" + string(id): `"title": "Refund a duplicate charge"`} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(strings.ReplaceAll(string(b), `":"`, `": "`), strings.ReplaceAll(want, `":"`, `": "`)) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
	}
	resp, _ := http.Get(srv.URL + "/api/sop/" + string(id))
	var got struct {
		Data struct {
			Meta struct {
				ID string `json:"id"`
			} `json:"meta"`
			Public struct {
				Nodes []struct {
					ID       string   `json:"id"`
					IDPath   string   `json:"id_path"`
					Children []string `json:"children"`
				} `json:"nodes"`
				Variables map[string]string `json:"variables"`
			} `json:"public"`
		} `json:"data"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Data.Meta.ID != string(id) || got.Data.Public.Nodes[2].ID != "each" || got.Data.Public.Nodes[2].Children[0] != "refund" ||
		got.Data.Public.Nodes[3].IDPath != "3.1" || got.Data.Public.Variables["order_id"] != "The order" {
		t.Fatalf("document %+v", got.Data)
	}
}

func TestAskAgainUntilValid(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Script(geminitest.JSON("this is not json"), geminitest.JSON(brokenSOP), geminitest.JSON(goodSOP))
	j := r.finished(r.submit(r.video(), nil))
	if outcome(j) != done || j.Metadata["gemini"].(map[string]any)["calls"] != float64(3) {
		t.Fatalf("%s %v", deref(j.Error), j.Metadata["gemini"])
	}
	reqs := r.ai.Requests()
	if strings.Contains(reqs[0].Prompt, "rejected") || !strings.Contains(reqs[1].Prompt, "not the JSON") ||
		!strings.Contains(reqs[2].Prompt, `decision "check" needs a yes and a no edge`) {
		t.Fatalf("the problems were not sent back:\n%s\n---\n%s", reqs[1].Prompt, reqs[2].Prompt)
	}
}

// Answers the job could not store as they are go back to the model with
// what is wrong: a step id with a control character (the job's metadata
// names steps by id, and PostgreSQL refuses a NUL: the job failed with the
// generic sentence), more after the JSON object (it was ignored), and a
// document too large to read back (it was stored, and could not be read).
func TestAnswersTheJobCannotStoreAreAskedAgain(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ answer, problem string }{
		"control character in an id": {chain(`{"id": "a\u0000b", "type": "task", "label": "L", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"}`),
			"holds a control character"},
		"more after the object": {goodSOP + "\n{}", "more follows the JSON object"},
		"too large":             {chain(`{"id": "a", "type": "task", "label": "L", "intent": "i", "context": "` + strings.Repeat("word ", 1100_000) + `", "parent_id": "", "timestamp": "", "evidence": "narrated"}`), "bytes long; it must stay under"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.ai.Script(geminitest.JSON(c.answer), geminitest.JSON(goodSOP))
			j := r.finished(r.submit(r.video(), nil))
			reqs := r.ai.Requests()
			if outcome(j) != done || len(reqs) != 2 || !strings.Contains(reqs[1].Prompt, c.problem) {
				t.Fatalf("%s after %d calls; the second prompt says %q: %.300s", outcome(j), len(reqs), c.problem, reqs[len(reqs)-1].Prompt)
			}
		})
	}
}

func TestThreeBadAnswersEndTheJob(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Script(geminitest.JSON(brokenSOP), geminitest.JSON(brokenSOP), geminitest.JSON(brokenSOP))
	j := r.finished(r.submit(r.video(), nil))
	if !strings.Contains(outcome(j), "could not describe this video as a valid SOP after 3 tries") || len(r.ai.Requests()) != 3 {
		t.Fatalf("%s after %d calls", outcome(j), len(r.ai.Requests()))
	}
	if len(r.ai.Files()) != 0 {
		t.Fatal("Gemini file kept after a permanent error")
	}
	cut := newRig(t)
	cut.ai.Script(geminitest.Text(goodSOP[:200], "MAX_TOKENS"), geminitest.Text(goodSOP[:200], "MAX_TOKENS"), geminitest.Text(goodSOP[:300], "MAX_TOKENS"))
	if j := cut.finished(cut.submit(cut.video(), nil)); !strings.Contains(outcome(j), "too long to describe in one SOP") {
		t.Fatalf("max tokens: %s", outcome(j))
	}
}

func TestRateLimitHonoursRetryDelay(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Script(geminitest.Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "7s"), geminitest.Error(503, "UNAVAILABLE", "overloaded", ""))
	j := r.finished(r.submit(r.video(), nil))
	if outcome(j) != done {
		t.Fatalf("%s", outcome(j))
	}
	r.mu.Lock()
	sleeps := append([]time.Duration(nil), r.sleeps...)
	r.mu.Unlock()
	// Polling the file (2 s), then the waits asked for: 7 s (RetryInfo), then 2 s (second try's backoff).
	if !containsRun(sleeps, 7*time.Second, 2*time.Second) {
		t.Fatalf("waits %v", sleeps)
	}

	over := newRig(t)
	over.ai.Script(geminitest.Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "300s"))
	if j := over.finished(over.submit(over.video(), nil)); outcome(j) != "Gemini quota exhausted; try again later." {
		t.Fatalf("long retry delay: %s", outcome(j))
	}

	// The longest delay a Duration holds, after a second already waited:
	// the waits' sum must not wrap and pass for a short one (a fresh-eye
	// attack's finding: the step slept for centuries).
	wraps := newRig(t)
	wraps.ai.Script(geminitest.Error(503, "UNAVAILABLE", "overloaded", ""), geminitest.Error(429, "RESOURCE_EXHAUSTED", "Quota exceeded", "9223372036s"))
	if j := wraps.finished(wraps.submit(wraps.video(), nil)); outcome(j) != "Gemini quota exhausted; try again later." {
		t.Fatalf("a retry delay past what a Duration holds: %s", outcome(j))
	}
}

func TestGeminiDownKeepsTheFileForARerun(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for range 5 {
		r.ai.Script(geminitest.Error(503, "UNAVAILABLE", "The model is overloaded.", ""))
	}
	id := r.submit(r.video(), nil)
	if j := r.finished(id); outcome(j) != "The AI service is unavailable right now; please try again in a few minutes." {
		t.Fatalf("%s", outcome(j))
	}
	if len(r.ai.Files()) != 1 || len(r.ai.Requests()) != 5 {
		t.Fatalf("files %v after %d calls: the file must be kept for a rerun", r.ai.Files(), len(r.ai.Requests()))
	}
	// A person re-queues it: the file is reused, then deleted on completion.
	uploads := r.ai.Uploads()
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	if j := r.finished(id); outcome(j) != done || r.ai.Uploads() != uploads || len(r.ai.Files()) != 0 {
		t.Fatalf("rerun: %s, uploads %d→%d, files %v", outcome(j), uploads, r.ai.Uploads(), r.ai.Files())
	}
}

// A storage outage after the model answered (the SOP cannot be stored) is as
// transient as one before: the Gemini file is kept, and the rerun a person
// asks for reuses it.
func TestStorageDownAfterTheAnswerKeepsTheFile(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var shots atomic.Int32
	r.fake.OnRequest(func(op supabasetest.Op, path string) {
		// Once both screenshots' uploads have arrived (uploaded together),
		// every upload after them (the SOP's) fails.
		if op == supabasetest.OpUpload && strings.HasSuffix(path, ".jpg") && shots.Add(1) == 2 {
			r.fake.FailNext(supabasetest.OpUpload, 5, 503)
		}
	})
	id := r.submit(r.video(), nil)
	if j := r.finished(id); outcome(j) != "File storage could not be reached for too long; please try again in a few minutes." {
		t.Fatalf("%s", outcome(j))
	}
	if len(r.ai.Files()) != 1 || len(r.ai.Deleted()) != 0 {
		t.Fatalf("files %v, deleted %v: the file must be kept for a rerun", r.ai.Files(), r.ai.Deleted())
	}
	uploads := r.ai.Uploads()
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	if j := r.finished(id); outcome(j) != done || r.ai.Uploads() != uploads || len(r.ai.Files()) != 0 {
		t.Fatalf("rerun: %s, uploads %d→%d, files %v", outcome(j), uploads, r.ai.Uploads(), r.ai.Files())
	}
}

func containsRun(s []time.Duration, run ...time.Duration) bool {
	for i := 0; i+len(run) <= len(s); i++ {
		ok := true
		for k := range run {
			ok = ok && s[i+k] == run[k]
		}
		if ok {
			return true
		}
	}
	return false
}

func TestPermanentGeminiFailures(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		setup func(r *rig)
		says  string
	}{
		"safety block": {func(r *rig) { r.ai.Script(geminitest.Blocked()) }, "safety filter"},
		"file failed":  {func(r *rig) { r.ai.FileOutcome = "FAILED" }, "could not process the video file"},
		"file stuck":   {func(r *rig) { r.ai.FileOutcome = "STUCK" }, "took too long to prepare the video"},
		"bad key":      {func(r *rig) { r.ai.APIKey = "another-key" }, "refused our credentials"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			c.setup(r)
			j := r.finished(r.submit(r.video(), nil))
			if !strings.Contains(outcome(j), c.says) {
				t.Fatalf("%s", outcome(j))
			}
			if len(r.ai.Files()) != 0 {
				t.Fatalf("Gemini file kept after a permanent error: %v", r.ai.Files())
			}
		})
	}
}

func TestPersonCancelsDuringTheGeminiCall(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	entered, release := r.ai.BlockGenerate()
	defer release()
	id := r.submit(r.video(), nil)
	<-entered
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'error', error = 'Stopped by hand' WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the Gemini file deleted after the person stopped the job", time.Minute, func() bool { return len(r.ai.Deleted()) > 0 })
	j, _ := r.store.Get(context.Background(), id)
	if deref(j.Error) != "Stopped by hand" || j.Status != jobs.StatusError {
		t.Fatalf("the worker overwrote the person's edit: %s %s", j.Status, deref(j.Error))
	}
	if _, ok := r.fake.Object("videos/" + id.SOPPath()); ok {
		t.Fatal("an SOP was written after the cancellation")
	}
}

// A later attempt (after a lost lease, say) reuses the Gemini file of the
// previous one when it is ACTIVE, from the same slim copy, and not about to expire.
func TestGeminiFileIsReused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	first, slim, f := r.previousAttempt()
	obj, _ := r.fake.Object("videos/" + first.SlimPath())
	f, err := r.model.File(context.Background(), f.Name) // made ACTIVE
	if err != nil || f.State != "ACTIVE" {
		t.Fatalf("%+v %v", f, err)
	}
	prev := map[string]any{"slim": slim, "gemini": map[string]any{"file_name": f.Name, "slim_sha256": slim["sha256"],
		"file_expires_at": f.ExpiresAt.Format(time.RFC3339Nano)}}
	uploads := r.ai.Uploads()
	second := r.submitWithSlimOf(first, prev)
	if j := r.finished(second); outcome(j) != done {
		t.Fatalf("%s", outcome(j))
	}
	if r.ai.Uploads() != uploads || r.ai.Requests()[len(r.ai.Requests())-1].FileURI != f.URI {
		t.Fatal("the previous attempt's file was not reused")
	}

	// One about to expire is not reused.
	g, _ := r.model.Upload(context.Background(), obj.File, "video/mp4", "old")
	_, _ = r.model.File(context.Background(), g.Name)
	r.ai.Expire(g.Name, time.Now().Add(10*time.Minute))
	prev["gemini"] = map[string]any{"file_name": g.Name, "slim_sha256": slim["sha256"], "file_expires_at": time.Now().Add(10 * time.Minute).Format(time.RFC3339Nano)}
	uploads = r.ai.Uploads()
	if j := r.finished(r.submitWithSlimOf(first, prev)); outcome(j) != done || r.ai.Uploads() != uploads+1 {
		t.Fatalf("expiring file reused: %s", outcome(j))
	}
}

// previousAttempt runs a first job and uploads a Gemini file of its slim
// copy, as a previous attempt of a job with that copy would have: it
// returns the job, its slim copy's metadata and the file.
func (r *rig) previousAttempt() (jobs.ID, map[string]any, pipeline.ModelFile) {
	r.t.Helper()
	first := r.submit(r.video(), nil)
	r.finished(first)
	slim := r.store2(first).Metadata["slim"].(map[string]any)
	obj, _ := r.fake.Object("videos/" + first.SlimPath())
	f, err := r.model.Upload(context.Background(), obj.File, "video/mp4", "previous")
	if err != nil {
		r.t.Fatal(err)
	}
	return first, slim, f
}

func (r *rig) store2(id jobs.ID) jobs.Job {
	j, err := r.store.Get(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return j
}

// submitWithSlimOf queues a new job whose slim copy (and metadata) is that of from.
func (r *rig) submitWithSlimOf(from jobs.ID, metadata map[string]any) jobs.ID {
	obj, _ := r.fake.Object("videos/" + from.SlimPath())
	id := jobs.ID(uuid.NewString())
	r.fake.PutFile("videos/"+id.SlimPath(), obj.File, "video/mp4") // before the job exists
	r.fake.PutFile("videos/"+id.RawPath(), obj.File, "video/mp4")
	if _, _, err := r.store.Enqueue(context.Background(), id, metadata); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// A generateContent call that outlives its own deadline is a timeout like
// any other: retried (the file kept), not the end of the job.
func TestGenerateDeadlineIsRetried(t *testing.T) {
	t.Parallel()
	type gate struct {
		entered <-chan struct{}
		release func()
	}
	var blocked atomic.Value // gate
	r := newRig(t, func(c *pipeline.Config) {
		c.GenerateTimeout = 200 * time.Millisecond
		sleep := c.Sleep
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			if g, ok := blocked.Load().(gate); ok {
				select {
				case <-g.entered:
					g.release() // a wait after the blocked call: it was classified transient
				default: // a wait before it (file polling)
				}
			}
			return sleep(ctx, d)
		}
	})
	entered, free := r.ai.BlockGenerate()
	blocked.Store(gate{entered, free})
	t.Cleanup(free)
	j := r.finished(r.submit(r.video(), nil))
	if outcome(j) != done || len(r.ai.Requests()) < 2 || j.Metadata["attempt"] != float64(1) {
		t.Fatalf("%s after %d calls", outcome(j), len(r.ai.Requests()))
	}
}

// File polling starts fast and backs off to every 2 s.
func TestFilePollingBacksOff(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.ActivateAfter = 6
	if j := r.finished(r.submit(r.video(), nil)); outcome(j) != done {
		t.Fatal(outcome(j))
	}
	r.mu.Lock()
	sleeps := append([]time.Duration(nil), r.sleeps...)
	r.mu.Unlock()
	if !containsRun(sleeps, 250*time.Millisecond, 500*time.Millisecond, time.Second, 2*time.Second, 2*time.Second) {
		t.Fatalf("waits %v", sleeps)
	}
}

// edgeRuleProblems are the rules of docs/frontend-contract.md's SOP document that d
// breaks, of those about its flow and its contexts (the rig's video is 2 s
// long).
func edgeRuleProblems(d *sop.Document) []string {
	var out []string
	p := d.Public
	var firstTask string
	for _, n := range p.Nodes {
		if n.Type == "task" && n.ParentID == "" {
			firstTask = n.ID
			break
		}
	}
	if len(p.Edges) == 0 || p.Edges[0].Condition != "start" || p.Edges[0].Source != firstTask {
		out = append(out, "the first edge is not a start edge from the first real task "+firstTask)
	}
	byID := map[string]sop.Node{}
	for _, n := range p.Nodes {
		byID[n.ID] = n
	}
	for _, n := range p.Nodes {
		if n.Type == "loop" && len(n.Children) > 0 {
			last := n.Children[len(n.Children)-1]
			if !slices.ContainsFunc(p.Edges, func(e sop.Edge) bool { return e.Source == last && e.Condition == "next" }) {
				out = append(out, "loop "+n.ID+": its last child "+last+" has no next edge")
			}
		}
		if n.Evidence == sop.EvidenceShown && !strings.Contains(n.Context, n.Timestamp) {
			out = append(out, "shown step "+n.ID+" at "+n.Timestamp+": its context "+`"`+n.Context+`"`+" does not cite it")
		}
		// The moment a context begins with (a time later in it may be a
		// time of day, as sop.CheckRecorded reads it).
		if ts := leadingTime.FindString(n.Context); ts != "" {
			if d, ok := sop.ParseTimestamp(strings.TrimSpace(ts)); ok && d.Seconds() >= 2 { // the rig's video is 2 s long
				out = append(out, "step "+n.ID+": its context cites "+ts+", past the end of the 2 s video")
			}
		}
	}
	return out
}

// leadingTime is the timestamp a context begins with.
var leadingTime = regexp.MustCompile(`^\s*\d\d:\d\d:\d\d`)

// A model's answer that leaves out what the viewer's flow needs
// (docs/frontend-contract.md: "the first edge, from the first real task,
// is start", "a loop's last child goes back with next", "Context fields
// cite the video's timestamps") is repaired, or asked again when a context
// cites a moment past the end: the stored SOP keeps the rules (a
// reviewer's finding: each was stored as answered).
func TestSloppyFlowsAreRepairedOrAskedAgain(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]string{
		"control: the good answer":          goodSOP,
		"no start edge":                     strings.Replace(goodSOP, `"condition": "start"`, `"condition": ""`, 1),
		"start edge listed last":            moveFirstEdgeLast(goodSOP),
		"loop's last child without next":    strings.Replace(goodSOP, `"condition": "next"`, `"condition": ""`, 1),
		"shown step's context without time": strings.Replace(goodSOP, `"context": "00:00:01 Refund button"`, `"context": "Refund button"`, 1),
		"context cites a time past the end": strings.Replace(goodSOP, `"context": "00:00:01 Refund button"`, `"context": "00:09:59 Refund button"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if answer == goodSOP && name != "control: the good answer" {
				t.Fatal("mutation did not apply")
			}
			r := newRig(t)
			r.ai.Script(geminitest.JSON(answer), geminitest.JSON(goodSOP))
			id := r.submit(r.video(), nil)
			mustComplete(t, r.finished(id))
			o, ok := r.fake.Object("videos/" + id.SOPPath())
			if !ok {
				t.Fatal("no SOP stored")
			}
			b, err := os.ReadFile(o.File)
			if err != nil {
				t.Fatal(err)
			}
			d, err := sop.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if p := edgeRuleProblems(d); len(p) > 0 {
				t.Errorf("stored after %d model call(s), against docs/frontend-contract.md: %v", len(r.ai.Requests()), p)
			}
		})
	}
}

// moveFirstEdgeLast lists the sample's start edge last.
func moveFirstEdgeLast(answer string) string {
	first := `  {"source": "open", "target": "check", "condition": "start"},` + "\n"
	last := `  {"source": "each", "target": "close", "condition": "all_processed"}`
	return strings.Replace(strings.Replace(answer, first, "", 1), last, last+",\n"+strings.TrimSuffix(strings.TrimSpace(first), ","), 1)
}
