package pipeline_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/api/apitest"
	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/gemini"
	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/logtest"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/retention"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// The SOP API this package's tests read is held to its OpenAPI document
// (apitest.Run): a document the pipeline makes is served as the document says.
func TestMain(m *testing.M) { os.Exit(apitest.Run(m, pgtest.Run)) }

var quiet = slog.New(slog.DiscardHandler)

// rig is the whole worker side: real Postgres, the real queue engine, the
// pipeline, real ffmpeg, and the storage stand-in behind the real client.
type rig struct {
	t     *testing.T
	pool  *pgxpool.Pool
	fake  *supabasetest.Server
	ai    *geminitest.Server
	store *postgres.JobStore
	dir   string

	model   *gemini.Client
	handler *pipeline.Pipeline
	mu      sync.Mutex
	sleeps  []time.Duration
}

func newRig(t *testing.T, tweak ...func(*pipeline.Config)) *rig {
	t.Helper()
	return newRigWith(t, quiet, nil, tweak...)
}

// newRigWith is newRig with the engine logging to logger and recording a
// webhook event for each of hooks.
func newRigWith(t *testing.T, logger *slog.Logger, hooks []string, tweak ...func(*pipeline.Config)) *rig {
	t.Helper()
	return newRigOf(t, rigOptions{logger: logger, hooks: hooks, listen: true}, tweak...)
}

// rigOptions: how the engine logs, the webhook events it records, whether
// its worker listens or polls, and what wraps the pipeline it runs.
type rigOptions struct {
	logger *slog.Logger
	hooks  []string
	listen bool
	wrap   func(queue.Handler) queue.Handler
}

func newRigOf(t *testing.T, o rigOptions, tweak ...func(*pipeline.Config)) *rig {
	t.Helper()
	pool, dsn := pgtest.Pool(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	objects, err := storage.New(storage.Config{URL: fake.URL, ServiceKey: fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	ai := geminitest.New(t, "test-key")
	good := geminitest.JSON(goodSOP)
	ai.Answer(good)
	model, err := gemini.New(context.Background(), gemini.Config{APIKey: "test-key", Model: "gemini-test", BaseURL: ai.URL})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, pool: pool, fake: fake, ai: ai, store: postgres.NewJobStore(pool), dir: t.TempDir()}
	cfg := pipeline.Config{Logger: quiet, Sleep: func(ctx context.Context, d time.Duration) error {
		r.mu.Lock()
		r.sleeps = append(r.sleeps, d)
		r.mu.Unlock()
		return nil
	}}
	for _, f := range tweak {
		f(&cfg)
	}
	r.model = model
	r.handler = pipeline.New(objects, model, postgres.NewSOPLocker(pool), cfg)
	var h queue.Handler = r.handler
	if o.wrap != nil {
		h = o.wrap(h)
	}
	queuetest.Start(t, dsn, postgres.NewQueueStore(pool).SendEvents(o.hooks), h,
		queue.Config{Concurrency: 2, LeaseTTL: 30 * time.Second, Heartbeat: time.Second, Sweep: time.Second, Logger: o.logger}, o.listen)
	return r
}

// submit uploads file as the browser would have and queues a job for it.
func (r *rig) submit(file string, metadata map[string]any) jobs.ID {
	r.t.Helper()
	id := jobs.ID(uuid.NewString())
	b, err := os.ReadFile(file)
	if err != nil {
		r.t.Fatal(err)
	}
	r.fake.Put("videos/"+id.RawPath(), b, "video/mp4")
	if metadata == nil {
		metadata = map[string]any{}
	}
	if metadata["upload"] == nil { // a test may write its own (a person's edit)
		metadata["upload"] = map[string]any{"size_bytes": len(b), "content_type": "video/mp4"}
	}
	if _, _, err := r.store.Enqueue(context.Background(), id, metadata); err != nil {
		r.t.Fatal(err)
	}
	return id
}

// complete runs a job of file whose model answers answer; the job must
// complete.
func (r *rig) complete(file, answer string) (jobs.ID, jobs.Job) {
	r.t.Helper()
	r.ai.Answer(geminitest.JSON(answer))
	return r.completed(file)
}

// completed runs a job of file with the model's answer as it stands; the
// job must complete.
func (r *rig) completed(file string) (jobs.ID, jobs.Job) {
	r.t.Helper()
	id := r.submit(file, nil)
	j := r.finished(id)
	mustComplete(r.t, j)
	return id, j
}

func (r *rig) job(id jobs.ID) jobs.Job {
	r.t.Helper()
	j, err := r.store.Get(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return j
}

// waitFor polls until cond holds (a generous deadline, never a duration
// assertion).
func (r *rig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	wait.For(r.t, what, 2*time.Minute, cond)
}

func (r *rig) finished(id jobs.ID) jobs.Job {
	r.t.Helper()
	var j jobs.Job
	r.waitFor("job "+string(id)+" to end", func() bool {
		j = r.job(id)
		return j.Status == jobs.StatusCompleted || j.Status == jobs.StatusError
	})
	return j
}

// done means the job ended well.
const done = "<completed>"

func outcome(j jobs.Job) string {
	if j.Status == jobs.StatusCompleted {
		return done
	}
	return deref(j.Error)
}

// mustComplete stops the test unless the job completed.
func mustComplete(t *testing.T, j jobs.Job) {
	t.Helper()
	if j.Status != jobs.StatusCompleted {
		t.Fatalf("the job ended %s: %s", j.Status, deref(j.Error))
	}
}

func TestGoodRecordingBecomesASlimCopy(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	in := mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 1920, Height: 1080, Seconds: 5, Audio: true, Tags: true})
	id := r.submit(in, nil)
	j := r.finished(id)
	if outcome(j) != done {
		t.Fatalf("ended %s: %v", j.Status, deref(j.Error))
	}
	probe, _ := j.Metadata["probe"].(map[string]any)
	slim, _ := j.Metadata["slim"].(map[string]any)
	timings, _ := j.Metadata["timings"].(map[string]any)
	if probe["width"] != float64(1920) || probe["height"] != float64(1080) || probe["has_audio"] != true || probe["duration_s"] == float64(0) {
		t.Fatalf("probe %v", probe)
	}
	for _, stage := range []string{"downloading_ms", "probing_ms", "transcoding_ms", "uploading_slim_ms"} {
		if _, ok := timings[stage]; !ok {
			t.Errorf("no %s in timings %v", stage, timings)
		}
	}
	obj, ok := r.fake.Object("videos/" + id.SlimPath())
	if !ok || obj.ContentType != "video/mp4" || float64(obj.Size) != slim["size_bytes"] || slim["path"] != id.SlimPath() {
		t.Fatalf("slim object %+v, metadata %v", obj, slim)
	}
	b, _ := os.ReadFile(obj.File)
	sum := sha256.Sum256(b)
	if slim["sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatal("recorded sha256 is not the stored object's")
	}
	p, err := ffmpeg.ProbeFile(context.Background(), obj.File)
	if err != nil || p.Height != 720 || !p.HasAudio || p.FPS != 1 || slim["frames"] != float64(p.Frames) {
		t.Fatalf("slim copy %+v %v", p, err)
	}
	if _, ok := r.fake.Object("videos/" + id.RawPath()); !ok {
		t.Fatal("raw upload removed")
	}
}

func TestBadRecordingsEndWithASentence(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	random := make([]byte, 200000)
	rand.Read(random)
	unreadable := "The file could not be read as a video"
	cases := map[string]struct {
		file string
		says string
	}{
		"21 minutes":     {mediatest.Make(t, r.dir, "long.mp4", mediatest.Spec{Width: 64, Height: 64, FPS: 2, Seconds: 21 * 60}), "The video is 21 minutes long; the limit is 20 minutes."},
		"truncated":      {mediatest.Truncated(t, r.dir, "cut.mp4"), unreadable},
		"random bytes":   {mediatest.File(t, r.dir, "rand.mp4", random), unreadable},
		"pdf as mp4":     {mediatest.File(t, r.dir, "doc.mp4", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n")), unreadable},
		"zero bytes":     {mediatest.File(t, r.dir, "empty.mp4", nil), "The uploaded file is empty."},
		"audio only":     {mediatest.AudioOnly(t, r.dir, "a.mp4", 3), "The file has no picture"},
		"tiny picture":   {mediatest.Make(t, r.dir, "tiny.mp4", mediatest.Spec{Width: 8, Height: 8, Seconds: 1}), "picture size (8×8 pixels) is not supported"},
		"20 min 30 sec":  {mediatest.Make(t, r.dir, "long2.mp4", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: 20*60 + 30}), "The video is 20 minutes 30 seconds long"},
		"webm too long":  {mediatest.Make(t, r.dir, "live.mp4", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: 20*60 + 5, Format: "webm-live"}), "longer than 20 minutes"},
		"webm, no sound": {mediatest.Make(t, r.dir, "ok.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3, Format: "webm-live"}), done},
		// A playlist naming another file on the worker's disk: refused, never its slim copy.
		"hls playlist": {mediatest.Playlist(t, r.dir, "hls.mp4", mediatest.Make(t, r.dir, "local.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})), unreadable},
		"cover first":  {mediatest.CoverFirst(t, r.dir, "cover.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3}), done},
	}
	ids := map[string]jobs.ID{}
	for name, c := range cases {
		ids[name] = r.submit(c.file, nil)
	}
	for name, c := range cases {
		j := r.finished(ids[name])
		if !strings.Contains(outcome(j), c.says) {
			t.Errorf("%s: %s %v; want %q", name, j.Status, deref(j.Error), c.says)
		}
		for _, leak := range []string{"/", "ffmpeg", "exit status", "moov"} {
			if j.Error != nil && strings.Contains(*j.Error, leak) {
				t.Errorf("%s: error shows %q: %s", name, leak, *j.Error)
			}
		}
		if _, ok := r.fake.Object("videos/" + ids[name].RawPath()); !ok {
			t.Errorf("%s: raw upload removed", name)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func TestOversizedUploadIsRefusedWithoutReadingIt(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	id := jobs.ID(uuid.NewString())
	r.fake.Seed("videos/"+id.RawPath(), jobs.MaxUploadBytes+1, "video/mp4") // slipped past the bucket (chunked)
	if _, _, err := r.store.Enqueue(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	j := r.finished(id)
	if j.Error == nil || !strings.Contains(*j.Error, "larger than 750 MB") {
		t.Fatalf("%v", deref(j.Error))
	}
}

func TestTransientStorageFailuresAreRetried(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.fake.FailNext(supabasetest.OpDownload, 2, 503)
	r.fake.FailNext(supabasetest.OpUpload, 1, 500)
	r.completed(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2, Audio: true}))
	r.mu.Lock()
	defer r.mu.Unlock()
	// Then 2 s: polling the Gemini file.
	if len(r.sleeps) < 3 || r.sleeps[0] != time.Second || r.sleeps[1] != 2*time.Second || r.sleeps[2] != time.Second {
		t.Fatalf("waits %v; want 1s, 2s (download) and 1s (upload) first", r.sleeps)
	}
}

func TestStorageDownTooLongEndsTheJob(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.fake.FailNext(supabasetest.OpDownload, 5, 500)
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2}), nil)
	j := r.finished(id)
	if j.Error == nil || !strings.Contains(*j.Error, "File storage could not be reached") || r.fake.Calls(supabasetest.OpDownload) != 5 {
		t.Fatalf("%s after %d downloads", deref(j.Error), r.fake.Calls(supabasetest.OpDownload))
	}
}

// A full work directory is the worker's problem, never the video's: the job
// goes back to the queue uncounted, the worker claims nothing (and says it is
// not ready) until there is room, then the job completes.
func TestNoDiskSpace(t *testing.T) {
	t.Parallel()
	var free atomic.Uint64
	free.Store(1 << 20)
	var checks atomic.Int64
	r := newRig(t, func(c *pipeline.Config) {
		// As statfs does, a directory that is gone is an error: the room is
		// asked of a directory that outlives the claim that found none.
		c.FreeSpace = func(dir string) (uint64, error) {
			checks.Add(1)
			if _, err := os.Stat(dir); err != nil {
				return 0, err
			}
			return free.Load(), nil
		}
	})
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2}), nil)
	handedBack := func(j jobs.Job) bool {
		attempts, _ := j.Metadata["attempts"].([]any)
		for _, a := range attempts {
			if a.(map[string]any)["outcome"] != "handed_back" {
				return false
			}
		}
		return j.Status == jobs.StatusQueued && len(attempts) > 0
	}
	r.waitFor("the job handed back", func() bool { return handedBack(r.job(id)) })
	if j := r.job(id); j.Error != nil || j.Metadata["attempt"] != float64(0) || r.fake.Calls(supabasetest.OpDownload) != 0 {
		t.Fatalf("handed back: error %v, attempt %v, %d downloads", deref(j.Error), j.Metadata["attempt"], r.fake.Calls(supabasetest.OpDownload))
	}
	// Not run again while the disk stays full (a claim already on its way
	// may hand it back once more): the worker keeps asking.
	seen := checks.Load()
	r.waitFor("the worker to check the disk again", func() bool { return checks.Load() >= seen+3 })
	if j := r.job(id); !handedBack(j) || r.fake.Calls(supabasetest.OpDownload) != 0 {
		t.Fatalf("run while the disk is full: %s %v", j.Status, j.Metadata["attempts"])
	}
	free.Store(100 << 30)
	if j := r.finished(id); outcome(j) != done || j.Metadata["attempt"] != float64(1) {
		t.Fatalf("after room was made: %s, attempt %v", outcome(j), j.Metadata["attempt"])
	}
}

// A recording that needs more working space than the worker's whole disk
// ends in error with a sentence: handed back, it would pause every worker
// that claims it, forever.
func TestRecordingLargerThanTheDisk(t *testing.T) {
	t.Parallel()
	r := newRig(t, withDisk(32<<20, 32<<20))
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2}), nil)
	j := r.finished(id)
	if j.Status != jobs.StatusError || !strings.Contains(deref(j.Error), "more than the worker's disk holds") {
		t.Fatalf("%s: %s", j.Status, deref(j.Error))
	}
	if err := r.handler.Ready(); err != nil {
		t.Fatalf("the worker stays paused after a recording too large for its disk: %v", err)
	}
}

// A job is handed back for want of room at most 3 times in a row (counted
// in metadata.disk_handbacks), then ends in error; once it fits, the count
// starts again.
func TestHandedBackForRoomAtMostThreeTimes(t *testing.T) {
	t.Parallel()
	run := func(free uint64, before int) jobs.Job {
		r := newRig(t, withDisk(0, free))
		video := mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
		id := r.submit(video, map[string]any{"disk_handbacks": before})
		if free < 1<<30 && before < 3 {
			r.waitFor("the hand-back", func() bool { return r.job(id).Metadata["disk_handbacks"] == float64(before+1) })
			return r.job(id)
		}
		return r.finished(id)
	}
	if j := run(1<<20, 2); j.Status == jobs.StatusError {
		t.Fatalf("failed at its third hand-back: %s", deref(j.Error))
	}
	if j := run(1<<20, 3); j.Status != jobs.StatusError || !strings.Contains(deref(j.Error), "has not had room for this recording") {
		t.Fatalf("a fourth time: %s: %s", j.Status, deref(j.Error))
	}
	if j := run(100<<30, 2); outcome(j) != done || j.Metadata["disk_handbacks"] != float64(0) {
		t.Fatalf("once it fits: %s, count %v", outcome(j), j.Metadata["disk_handbacks"])
	}
}

// An upload size a person wrote that no upload may have (50 GB; the limit
// is 750 MiB) asks for no more room than the largest upload: the job runs
// on a disk with room for that, and the worker does not wait for 60 GB to
// free for good.
func TestAnEditedUploadSizeAsksForNoMoreThanTheLimit(t *testing.T) {
	t.Parallel()
	r := newRig(t, withDisk(100<<30, 10<<30))
	video := mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	// Handed back three times already: one more, and it ends in error.
	id := r.submit(video, map[string]any{"upload": map[string]any{"size_bytes": 5e10, "content_type": "video/mp4"}, "disk_handbacks": 3})
	if j := r.finished(id); outcome(j) != done {
		t.Fatalf("the job: %s: %s", j.Status, deref(j.Error))
	}
	if err := r.handler.Ready(); err != nil {
		t.Fatalf("the worker is paused after the job: %v", err)
	}
}

// withDisk gives the worker a disk of size bytes (0: the real one's) with
// free bytes free.
func withDisk(size, free uint64) func(*pipeline.Config) {
	return func(c *pipeline.Config) {
		if size > 0 {
			c.DiskSize = func(string) (uint64, error) { return size, nil }
		}
		c.FreeSpace = func(string) (uint64, error) { return free, nil }
	}
}

func TestFFmpegTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *pipeline.Config) { c.FFmpegTimeout = 50 * time.Millisecond })
	id := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 1920, Height: 1080, Seconds: 20, FPS: 30}), nil)
	if j := r.finished(id); j.Error == nil || !strings.Contains(*j.Error, "Converting the video took longer than") {
		t.Fatalf("%s", deref(j.Error))
	}
}

func TestSlimOfAPreviousAttemptIsReused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	first := r.submit(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 3, Audio: true}), nil)
	j := r.finished(first)
	slim := j.Metadata["slim"].(map[string]any)

	// The raw upload is gone: only the checkpoint can get this job past the media stages.
	removeObject(t, r, first.RawPath())
	downloads := r.fake.Calls(supabasetest.OpDownload)
	if _, err := r.pool.Exec(context.Background(), `UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(first)); err != nil {
		t.Fatal(err)
	}
	j = r.finished(first)
	if outcome(j) != done || j.Metadata["slim"].(map[string]any)["sha256"] != slim["sha256"] {
		t.Fatalf("rerun: %s %v", deref(j.Error), j.Metadata["slim"])
	}
	if got := r.fake.Calls(supabasetest.OpDownload) - downloads; got != 3 {
		t.Fatalf("%d downloads on the rerun; want 3 (the slim copy; for the screenshots, the raw upload and then the previous SOP)", got)
	}
	// Without the raw upload the SOP still completes; its steps, unchanged,
	// keep their screenshots.
	if frames, _ := json.Marshal(j.Metadata["frames"]); string(frames) != `{"count":2,"missing":[]}` {
		t.Fatalf("frames %s", frames)
	}

	// A recorded checksum that does not match the stored copy: made again from the raw upload.
	second := r.submit(mediatest.Make(t, r.dir, "in2.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 2}),
		map[string]any{"slim": map[string]any{"sha256": "0000"}})
	r.fake.Put("videos/"+second.SlimPath(), []byte("stale"), "video/mp4")
	j = r.finished(second)
	if outcome(j) != done || j.Metadata["slim"].(map[string]any)["sha256"] == "0000" {
		t.Fatalf("stale checkpoint: %s %v", deref(j.Error), j.Metadata["slim"])
	}
}

func removeObject(t *testing.T, r *rig, path string) {
	t.Helper()
	c, err := storage.New(storage.Config{URL: r.fake.URL, ServiceKey: r.fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(context.Background(), path); err != nil {
		t.Fatal(err)
	}
}

// Every line the pipeline logs about a job names the job and the attempt,
// wherever it is logged (here: a retry deep in a stage).
func TestJobLogLinesCarryTheJob(t *testing.T) {
	t.Parallel()
	var logs logtest.Logs
	r := newRig(t, func(c *pipeline.Config) { c.Logger = slog.New(queue.JobLogs(slog.NewJSONHandler(&logs, nil))) })
	r.fake.FailNext(supabasetest.OpDownload, 1, 503)
	id, _ := r.completed(mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2}))
	var retry map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "transient failure; trying again" {
			retry = m
		}
	}
	if retry == nil || retry["job_id"] != string(id) || retry["attempt"] != float64(1) {
		t.Fatalf("retry line %v in:\n%s", retry, logs.String())
	}
}

// A slim copy the janitor deleted comes back when the job runs again (a
// re-queue), and expires in its turn: the run that stores it takes the
// janitor's mark off. Before, slim_deleted_at stayed, and the janitor never
// looked at the job again: the new copy was kept for good.
func TestARerunsSlimCopyExpiresInItsTurn(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	video := mediatest.Make(t, r.dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 3})
	id, _ := r.complete(video, geminitest.SampleSOP)
	store := postgres.NewJobStore(r.pool)
	expire := func() int {
		t.Helper()
		n, err := store.Expire(context.Background(), retention.Slim, 0, 10, func(_ context.Context, ids []jobs.ID) error {
			for _, id := range ids {
				removeObject(t, r, id.SlimPath())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := expire(); n != 1 {
		t.Fatalf("the first run's slim copy: %d expired", n)
	}
	r.ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	mustComplete(t, r.rerun(id))
	if _, ok := r.fake.Object("videos/" + id.SlimPath()); !ok {
		t.Fatal("the rerun stored no slim copy (the test proves nothing)")
	}
	if n := expire(); n != 1 {
		t.Errorf("the rerun's slim copy: %d expired; want it deleted in its turn", n)
	}
	if _, ok := r.fake.Object("videos/" + id.SlimPath()); ok {
		t.Error("the rerun's slim copy is still in storage")
	}
}
