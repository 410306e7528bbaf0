package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/logtest"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/wait"
)

// throughProxy is a worker whose every connection (pool and listener) goes
// through a proxy the test can cut.
func (b *bench) throughProxy(h queue.Handler, cfg queue.Config) *pgtest.Proxy {
	b.t.Helper()
	proxy, dsn := pgtest.NewProxy(b.t, b.dsn)
	pool := pgtest.Open(b.t, dsn, 10)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	queuetest.Start(b.t, dsn, postgres.NewQueueStore(pool), h, cfg, true)
	return proxy
}

// A database outage that the lease can ride out costs nothing: renewals and
// the handler's own writes wait for the database, and every job completes on
// its first attempt.
func TestDatabaseOutageCostsNothing(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	entered := make(chan struct{}, 3)
	proceed := make(chan struct{})
	var runs atomic.Int64
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		runs.Add(1)
		entered <- struct{}{}
		<-proceed
		// Written during the outage: it must wait for the database, not fail.
		return r.Stage(ctx, "probing")
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat = 30*time.Second, 500*time.Millisecond
	proxy := b.throughProxy(h, cfg)
	ids := b.insert(3)
	for range ids {
		<-entered
	}
	proxy.SetDown(true)
	close(proceed)
	// Renewals and stage writes keep trying: wait until they have met the
	// outage a few times, then bring the database back.
	b.waitFor("the worker to meet the outage", func() bool { return proxy.Refused() >= 6 })
	proxy.SetDown(false)
	b.waitFor("every job completed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'completed'`) == len(ids)
	})
	for _, id := range ids {
		if j := b.job(id); j.Metadata["attempt"] != float64(1) || j.Error != nil {
			t.Errorf("%s: attempt %v, error %v", id, j.Metadata["attempt"], j.Error)
		}
	}
	if n := runs.Load(); n != int64(len(ids)) {
		t.Fatalf("%d runs for %d jobs", n, len(ids))
	}
}

// A worker that cannot renew its lease stops the run before the lease
// expires, by its own timer, and writes nothing afterwards.
func TestUnrenewableLeaseStopsTheRunBeforeExpiry(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	entered := make(chan struct{}, 1)
	stopped := make(chan time.Time, 1)
	lateWrite := make(chan error, 1)
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		entered <- struct{}{}
		<-ctx.Done()
		stopped <- time.Now()
		lateWrite <- r.Merge(context.WithoutCancel(ctx), map[string]any{"late": true})
		return ctx.Err()
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat = 4*time.Second, 500*time.Millisecond
	proxy := b.throughProxy(h, cfg)
	id := b.insert(1)[0]
	<-entered
	var expires time.Time
	if err := b.pool.QueryRow(context.Background(),
		`SELECT (metadata->'lease'->>'expires_at')::timestamptz FROM jobs WHERE job_id = $1`, string(id)).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	proxy.SetDown(true)
	var at time.Time
	select {
	case at = <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("the run was never stopped")
	}
	// Every renewal failed, so the lease still ends where it ended before the cut.
	if !at.Before(expires) {
		t.Fatalf("stopped at %s, after the lease expired at %s", at, expires)
	}
	proxy.SetDown(false)
	if err := <-lateWrite; err == nil {
		t.Fatal("a write after the stop succeeded")
	}
	b.waitFor("the job rescued", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status <> 'processing'`, string(id)) == 1 ||
			b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND (metadata->>'attempt')::int > 1`, string(id)) == 1
	})
	if b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND metadata ? 'late'`, string(id)) != 0 {
		t.Fatal("the stopped run wrote to the job")
	}
}

// A failure cause that would be cut through a character, or that holds a
// NUL byte, is stored on the first attempt (PostgreSQL refuses invalid text,
// and retrying such a write only loses the lease and runs the job again).
func TestFailureCausesAreStorable(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	var runs atomic.Int64
	// The stored cause is "<sentence>: <cause>" cut at 300 bytes: put the
	// two bytes of "é" across that cut, and a NUL before it.
	const sentence = "The video could not be converted."
	head := "the tool said \x00: "
	cause := head + strings.Repeat("a", 299-len(sentence+": ")-len(head)) + "é and more"
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		runs.Add(1)
		return jobs.Fail(sentence, errors.New(cause))
	})
	b.start(h, fast(), true)
	id := b.insert(1)[0]
	b.waitFor("the job failed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status = 'error'`, string(id)) == 1
	})
	j := b.job(id)
	attempts, _ := j.Metadata["attempts"].([]any)
	last, _ := attempts[len(attempts)-1].(map[string]any)
	stored, _ := last["error"].(string)
	if *j.Error != sentence || j.Metadata["attempt"] != float64(1) || len(attempts) != 1 ||
		!utf8.ValidString(stored) || len(stored) > 300 || !strings.HasPrefix(stored, sentence) || strings.Contains(stored, "\x00") {
		t.Fatalf("error %q, attempts %v", deref(j.Error), attempts)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs", n)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// gated is a handler that can be unready, and hands a job back once.
type gated struct {
	ready    atomic.Bool
	asked    atomic.Int64
	handBack atomic.Bool
	runs     atomic.Int64
}

func (g *gated) Ready() error {
	g.asked.Add(1)
	if !g.ready.Load() {
		return errors.New("disk full")
	}
	return nil
}

// Run is what the pipeline does with a full disk: the first run finds it
// full (and says so from then on); any run while it is full hands back.
func (g *gated) Run(ctx context.Context, j queue.Job, r queue.Reporter) error {
	g.runs.Add(1)
	if g.handBack.CompareAndSwap(true, false) {
		g.ready.Store(false)
	}
	if !g.ready.Load() {
		return fmt.Errorf("no room: %w", queue.ErrHandBack)
	}
	return nil
}

// A handler that cannot take work (its Gate says so) gets no claims, and a
// job it hands back returns to the queue uncounted.
func TestGateAndHandBack(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	g := &gated{}
	g.ready.Store(true)
	g.handBack.Store(true)
	b.start(g, fast(), true)
	id := b.insert(1)[0]
	b.waitFor("the job handed back", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status = 'queued' AND metadata->'attempts'->0->>'outcome' = 'handed_back'`, string(id)) == 1
	})
	// Nothing runs while the gate is closed, not even a claim that was on
	// its way when the handler found the disk full (the gate is asked again
	// once a claim returns, and its jobs go straight back).
	asked := g.asked.Load()
	b.waitFor("the worker to ask its handler again", func() bool { return g.asked.Load() >= asked+3 })
	if n := g.runs.Load(); n != 1 || b.job(id).Status != jobs.StatusQueued {
		t.Fatalf("%d runs, one of them while not ready; status %s", n, b.job(id).Status)
	}
	g.ready.Store(true)
	if a := b.completed(id).Metadata["attempt"]; a != float64(1) {
		t.Fatalf("attempt %v: the hand-back was counted", a)
	}
}

// At start a worker removes the work directories that ended claims left
// behind, and keeps the one of a claim that still holds its job.
func TestStaleWorkDirectoriesAreSwept(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	ids := b.insert(2)
	live, gone := ids[0], ids[1]
	got, err := b.store.Claim(context.Background(), "another-worker", 1, time.Hour)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	// The claim took the oldest: make sure it is the one called live.
	if got[0].ID != live {
		live, gone = gone, live
	}
	liveToken := got[0].Token
	tmp := t.TempDir()
	dirs := map[string]bool{ // name → must survive
		"runops-" + string(live) + "-" + liveToken: true,
		"runops-" + string(live) + "-old-token":    false, // an earlier claim of the same job
		"runops-" + string(gone) + "-some-token":   false,
		"runops-not-a-job-dir":                     true,
		"elsewhere-" + string(gone) + "-whatever":  true,
	}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, d, "raw"), []byte("upload"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fast()
	cfg.TempDir = tmp
	b.start(queue.HandlerFunc(func(context.Context, queue.Job, queue.Reporter) error { return nil }), cfg, true)
	b.waitFor("the stale directories removed", func() bool {
		for d, keep := range dirs {
			if _, err := os.Stat(filepath.Join(tmp, d)); !keep && err == nil {
				return false
			}
		}
		return true
	})
	for d, keep := range dirs {
		if _, err := os.Stat(filepath.Join(tmp, d)); keep && err != nil {
			t.Errorf("%s removed: %v", d, err)
		}
	}
}

// firstRunWaits is a handler whose first run waits until it is stopped;
// the others end at once. Each run starting is sent on started.
func firstRunWaits(started chan<- struct{}) queue.Handler {
	var first atomic.Bool
	return queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		started <- struct{}{}
		if first.CompareAndSwap(false, true) {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
}

// finished reads runops_jobs_finished_total for each outcome.
func finished() map[string]float64 {
	out := map[string]float64{}
	for _, o := range []string{"completed", "error", "lost", "cancelled", "handed_back"} {
		out[o] = testutil.ToFloat64(metrics.JobsFinished.WithLabelValues(o))
	}
	return out
}

// An attempt is counted once, as it is stored: a run that lost the
// database (its timer stopped it, and the rescue later closed its lease)
// is one lost run, not one for the run and one for the rescue. Every line
// about the job names it and its attempt: the outcome's write that gave up,
// the rescue's. Not parallel: the counters are the process's.
func TestALostAttemptIsCountedOnceAndItsLinesNameIt(t *testing.T) {
	b := newBench(t)
	entered := make(chan struct{}, 4)
	h := firstRunWaits(entered) // the run the outage stops
	var logs logtest.Logs
	cfg := fast()
	cfg.Concurrency = 1
	cfg.LeaseTTL, cfg.Heartbeat = 4*time.Second, 500*time.Millisecond
	cfg.Logger = slog.New(queue.JobLogs(slog.NewJSONHandler(&logs, nil)))
	proxy := b.throughProxy(h, cfg)
	before := finished()
	id := b.insert(1)[0]
	wait.Recv(t, entered, "the first run")
	proxy.SetDown(true)
	b.waitFor("the lease's drop to give up", func() bool { return strings.Contains(logs.String(), "outcome not recorded") })
	proxy.SetDown(false)
	b.completed(id)
	if o := b.outcomes(id); o != "lost,completed" {
		t.Fatalf("the attempts' outcomes %q", o)
	}
	after := finished()
	for o, want := range map[string]float64{"lost": 1, "completed": 1, "cancelled": 0, "error": 0, "handed_back": 0} {
		if d := after[o] - before[o]; d != want {
			t.Errorf("runops_jobs_finished_total{outcome=%q} went up by %v; want %v", o, d, want)
		}
	}
	lines := 0
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		msg, _ := m["msg"].(string)
		if strings.Contains(line, string(id)) || strings.Contains(msg, "outcome") || strings.Contains(msg, "lease") {
			lines++
			if m["job_id"] != string(id) || m["attempt"] == nil {
				t.Errorf("a line about the job without its job_id and attempt: %s", line)
			}
		}
	}
	if !strings.Contains(logs.String(), "lease expired: job back in the queue") || lines < 4 {
		t.Fatalf("%d lines about the job, no rescue among them (the test proves less):\n%s", lines, logs.String())
	}
}

// A run a person's re-queue stopped is one cancelled attempt, not a lost
// one too. Not parallel: the counters are the process's.
func TestACancelledAttemptIsCountedOnce(t *testing.T) {
	b := newBench(t)
	started := make(chan struct{}, 2)
	h := firstRunWaits(started)
	before := finished()
	id := b.insert(1)[0]
	b.start(h, fast(), true)
	wait.Recv(t, started, "the first run")
	b.exec(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	b.completed(id)
	if o := b.outcomes(id); o != "cancelled,completed" {
		t.Fatalf("the attempts' outcomes %q", o)
	}
	after := finished()
	for o, want := range map[string]float64{"lost": 0, "completed": 1, "cancelled": 1} {
		if d := after[o] - before[o]; d != want {
			t.Errorf("runops_jobs_finished_total{outcome=%q} went up by %v; want %v", o, d, want)
		}
	}
}
