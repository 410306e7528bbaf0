package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// The operator CLI, run as a person runs it: every verb, with flags after the
// positional arguments, and each edit heard by a LISTEN connection as a
// dashboard edit would be.
func TestJobsCLI(t *testing.T) {
	d, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	bin := binary(t)
	runops := func(args ...string) (string, error) {
		t.Helper()
		// A guard against a hang (a pipe read for ever), not a timing assertion.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"jobs"}, args...)...)
		cmd.WaitDelay = time.Second
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ctx := context.Background()
	listener, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		t.Fatal(err)
	}
	heard := func(id string, status jobs.Status) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			n, err := listener.WaitForNotification(wctx)
			if err != nil {
				t.Fatalf("no notification of %s → %s: %v", id, status, err)
			}
			var p postgres.Notification
			if json.Unmarshal([]byte(n.Payload), &p) == nil && string(p.JobID) == id && p.Status == status {
				return
			}
		}
	}

	failed, running, fresh := uuid.NewString(), uuid.NewString(), uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, status, error, created_at, metadata) VALUES
	  ($1, 'error', 'The video is 24 minutes long; the limit is 20 minutes.', now() - interval '2 hours', '{"attempt": 1, "timings": {"probing_ms": 120}}'),
	  ($2, 'processing', NULL, now() - interval '1 hour', '{"attempt": 1, "stage": "transcoding", "progress": 0.5}'),
	  ($3, 'queued', NULL, now(), NULL)`, failed, running, fresh)
	heard(fresh, jobs.StatusQueued) // the inserts' notifications, out of the way

	out, err := runops("list", "--json")
	var list []jobs.Job
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 3 || string(list[0].ID) != fresh || string(list[2].ID) != failed {
		t.Fatalf("list --json (newest first): %v\n%s", err, out)
	}
	out, err = runops("list", "--status", "processing")
	if err != nil || !strings.Contains(out, running) || strings.Contains(out, failed) || !strings.Contains(out, "transcoding") || !strings.Contains(out, "50%") {
		t.Fatalf("list --status processing: %v\n%s", err, out)
	}
	// An event for a receiver whose token rides in its URL's path.
	d.exec(`INSERT INTO runops_webhooks (event_id, url, job_id, type, body)
	  VALUES (gen_random_uuid(), 'https://hooks.slack.com/services/T1/B2/SECRETTOKEN', $1, 'job.failed', '{}')`, failed)
	out, err = runops("show", failed, "--json")
	var shown struct {
		Job    jobs.Job
		Events []struct{ URL string }
	}
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || shown.Job.Status != jobs.StatusError || len(shown.Events) != 1 {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	if strings.Contains(out, "SECRETTOKEN") || shown.Events[0].URL != "https://hooks.slack.com/…" {
		t.Errorf("show --json shows the receiver's URL as %q:\n%s", shown.Events[0].URL, out)
	}
	if out, err = runops("show", failed); err != nil || !strings.Contains(out, "24 minutes") || !strings.Contains(out, "probing") ||
		strings.Contains(out, "SECRETTOKEN") {
		t.Fatalf("show: %v\n%s", err, out)
	}

	if out, err = runops("cancel", running); err != nil {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	heard(running, jobs.StatusError)
	if e := d.scalar(`SELECT error FROM jobs WHERE job_id = $1`, running); e != msgCancelled {
		t.Fatalf("cancelled job's error %v", e)
	}
	if _, err = runops("cancel", running); err == nil {
		t.Fatal("cancelling an ended job succeeded")
	}

	if out, err = runops("requeue", "--status", "error", "--since", "2h"); err != nil || !strings.Contains(out, "requeued 2 jobs") {
		t.Fatalf("requeue --status error --since 2h: %v\n%s", err, out)
	}
	heard(running, jobs.StatusQueued)
	if a := d.scalar(`SELECT metadata->>'attempt' FROM jobs WHERE job_id = $1`, failed); a != "0" {
		t.Fatalf("a requeued job's attempt %v; want a fresh count", a)
	}
	if out, err = runops("requeue", failed); err == nil {
		t.Fatalf("requeueing a queued job succeeded: %s", out)
	}

	// A priority: set, shown; a bad one a person typed in the dashboard is
	// read as 0 and show says so; out of range is refused.
	if out, err = runops("priority", failed, "-20"); err != nil || !strings.Contains(out, "given priority -20") {
		t.Fatalf("priority: %v\n%s", err, out)
	}
	if out, err = runops("show", failed); err != nil || !strings.Contains(out, "priority  -20") {
		t.Fatalf("show after priority: %v\n%s", err, out)
	}
	d.exec(`UPDATE jobs SET metadata = metadata || '{"priority": "urgent"}' WHERE job_id = $1`, failed)
	if out, err = runops("show", failed); err != nil || !strings.Contains(out, `priority  0 (metadata.priority is "urgent"`) {
		t.Fatalf("show with a bad priority: %v\n%s", err, out)
	}
	for _, bad := range []string{"101", "-3.5", "first"} {
		if out, err = runops("priority", failed, bad); err == nil {
			t.Fatalf("priority %s accepted: %s", bad, out)
		}
	}
	if out, err = runops("priority", uuid.NewString(), "1"); err == nil {
		t.Fatalf("priority of no job succeeded: %s", out)
	}

	if out, err = runops("complete", fresh, "--sop", "../../docs/sample-sop.json"); err != nil {
		t.Fatalf("complete: %v\n%s", err, out)
	}
	heard(fresh, jobs.StatusCompleted)
	stored, ok := fake.Object("videos/sops/" + fresh + ".json")
	if !ok || d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, fresh) != "completed" {
		t.Fatal("complete did not store the SOP and mark the job")
	}
	// The tag the API revalidates with: that of what was stored.
	b, err := os.ReadFile(stored.File)
	if err != nil {
		t.Fatal(err)
	}
	if tag := d.scalar(`SELECT sop FROM runops_stored_tags WHERE job_id = $1`, fresh); tag != jobs.ETag(b) {
		t.Fatalf("recorded tag %v, want that of the stored SOP %s", tag, jobs.ETag(b))
	}
	bad := t.TempDir() + "/bad.json"
	if err := os.WriteFile(bad, []byte(`{"meta":{"title":"T"},"public":{"nodes":[{"id":"a","type":"step","label":"A"}]}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err = runops("complete", failed, "--sop", bad); err == nil || !strings.Contains(out, "public.nodes[0].type") {
		t.Fatalf("complete with a broken SOP: %v\n%s", err, out)
	}
	if out, err = runops("frobnicate"); err == nil || !strings.Contains(out, "usage: runops jobs") {
		t.Fatalf("unknown verb: %v\n%s", err, out)
	}
	// Arguments that matched nothing, or everything, without a word: an id
	// beside --status (it requeued every job of the status), a limit under
	// 1, a --since in the future; an SOP file that is a pipe or a device, or larger than the
	// API reads back (it was read into all the memory there is).
	fifo := filepath.Join(t.TempDir(), "sop.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(t.TempDir(), "huge.json")
	if err := os.WriteFile(huge, nil, 0o600); err != nil || os.Truncate(huge, 11<<20) != nil {
		t.Fatal("a sparse file of 11 MiB could not be made")
	}
	for args, want := range map[string]string{
		"requeue " + failed + " --status error":   "not both",
		"list --limit -1":                         "--limit must be 1 or more",
		"list --since -5h":                        "--since must be",
		"complete " + failed + " --sop " + fifo:   "is not a file",
		"complete " + failed + " --sop /dev/zero": "is not a file",
		"complete " + failed + " --sop " + huge:   "an SOP may be at most",
	} {
		if out, err := runops(strings.Fields(args)...); err == nil || !strings.Contains(out, want) {
			t.Errorf("jobs %s: %v\n%s", args, err, out)
		}
	}
	if out, err := runops("list", "--status", "cancelled"); err != nil || !strings.Contains(out, `no job has the status "cancelled"`) {
		t.Errorf("a list of a status no job has: %v\n%s", err, out)
	}
	// A status a person wrote by hand can be requeued as a whole: the
	// service tells its callers to set such a job to queued.
	d.exec(`INSERT INTO jobs (job_id, status) VALUES ($1, 'paused')`, uuid.NewString())
	if out, err := runops("requeue", "--status", "paused"); err != nil || !strings.Contains(out, "requeued 1 jobs") {
		t.Errorf("a requeue of a hand-written status: %v\n%s", err, out)
	}
}

// What a person typed in the dashboard reaches the operator's terminal
// shown, not obeyed: an error that clears the screen and retitles the
// window, a stage that hides the rest of its line, are printed as \x1b
// by `runops jobs list` and `show`. --json escapes them as JSON does.
func TestJobsShowsControlCharactersAsText(t *testing.T) {
	d, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	id := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, status, error, metadata) VALUES ($1, 'error', $2, jsonb_build_object('stage', $3::text))`,
		id, "\x1b[2J\x1b]0;pwned\x07Failed\u009b", "probing\x1b[8m hidden")
	for _, args := range [][]string{{"list"}, {"show", id}, {"show", id, "--json"}} {
		cmd := exec.Command(binary(t), append([]string{"jobs"}, args...)...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("jobs %v: %v\n%s", args, err, out)
		}
		if strings.ContainsAny(string(out), "\x1b\x07\u009b") {
			t.Errorf("jobs %v printed control characters:\n%q", args, out)
		}
		if !strings.Contains(string(out), `\x1b`) && !strings.Contains(string(out), `\u001b`) {
			t.Errorf("jobs %v does not show the escape at all (the test proves less):\n%q", args, out)
		}
		var shown struct{ Job struct{ Error string } }
		if args[len(args)-1] == "--json" && (json.Unmarshal(out, &shown) != nil || !strings.HasSuffix(shown.Job.Error, "Failed\u009b")) {
			t.Errorf("jobs %v: not the JSON of the row:\n%s", args, out)
		}
	}
}

// `runops jobs complete` leaves the job the screenshots its SOP shows, and
// no other: an earlier run's, of steps the operator's SOP does not have
// (often why an SOP is replaced by hand), are deleted from storage, and
// metadata.frames counts what is shown. Before, they stayed, readable
// there, and the count was the earlier run's.
func TestCompleteByHandKeepsOnlyTheScreenshotsItShows(t *testing.T) {
	d, _ := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	id := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, status, error, metadata) VALUES ($1, 'error', 'x', '{"frames":{"count":7,"missing":[{"node":"x"}]}}')`, id)
	sample, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "sop.json")
	if err := os.WriteFile(file, bytes.ReplaceAll(sample, []byte("00000000-0000-4000-8000-000000000000"), []byte(id)), 0o600); err != nil {
		t.Fatal(err)
	}
	shown, stale := "videos/frames/"+id+"/open.jpg", "videos/frames/"+id+"/leaky_step.jpg"
	fake.Put(shown, []byte("jpeg"), "image/jpeg")
	fake.Put(stale, []byte("jpeg with a secret on it"), "image/jpeg")
	cfg := config.Config{SupabaseURL: fake.URL, ServiceRoleKey: fake.ServiceRoleKey()}
	if err := completeByHand(context.Background(), cfg, d.pool, postgres.NewJobStore(d.pool), jobs.ID(id), file, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, ok := fake.Object(stale); ok {
		t.Errorf("%s, which the operator's SOP does not show, is still in storage", stale)
	}
	if _, ok := fake.Object(shown); !ok {
		t.Errorf("%s, which the SOP shows, was deleted", shown)
	}
	if f := d.scalar(`SELECT metadata->'frames' FROM jobs WHERE job_id = $1`, id); fmt.Sprint(f) != "map[count:4 missing:[]]" {
		t.Errorf("metadata.frames %v", f)
	}
}

// Two operators' `runops jobs complete` (two processes) behind a
// transaction pooler of two server connections, each inside its SOP lock at
// once, both finish: marking the job completed runs in the lock's
// transaction. Before, it ran on a second connection while the lock's held
// the first, and each process waited for the other until its deadline.
func TestCompletingByHandBehindAPoolerNeedsOneConnection(t *testing.T) {
	d, dsn := newDB(t)
	const conns = 2
	pooler := pgtest.NewBouncer(t, dsn, conns)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	// Each process stores its SOP alone; the uploads wait for each other,
	// so that both hold their lock's server connection, until the test
	// ends (a process that failed first never stores).
	var arrived atomic.Int32
	inside, ended := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(ended) }) // before the stand-in closes, which waits for its handlers
	fake.OnStore(func(string, string) {
		if arrived.Add(1) == conns {
			close(inside)
		}
		select {
		case <-inside:
		case <-ended:
		}
	})
	sample, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Config{SupabaseURL: fake.URL, ServiceRoleKey: fake.ServiceRoleKey()}
	ids := make([]string, conns)
	errs := make(chan error, conns)
	for i := range ids {
		ids[i] = uuid.NewString()
		d.exec(`INSERT INTO jobs (job_id, status, error) VALUES ($1, 'error', 'x')`, ids[i])
		file := filepath.Join(t.TempDir(), "sop.json")
		if err := os.WriteFile(file, bytes.ReplaceAll(sample, []byte("00000000-0000-4000-8000-000000000000"), []byte(ids[i])), 0o600); err != nil {
			t.Fatal(err)
		}
		pool := pgtest.Open(t, pooler.URL, 4) // a process of its own
		go func() {
			// A generous deadline, not a measure: the processes that waited
			// for each other waited until it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			errs <- completeByHand(ctx, cfg, pool, postgres.NewJobStore(pool), jobs.ID(ids[i]), file, io.Discard)
		}()
	}
	for range conns {
		if err := wait.Recv(t, errs, "runops jobs complete"); err != nil {
			t.Error(err)
		}
	}
	for _, id := range ids {
		if status := d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, id); status != "completed" {
			t.Errorf("%s is %v, not completed", id, status)
		}
	}
}
