package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/wait"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var quiet = slog.New(slog.DiscardHandler)

type bench struct {
	t     *testing.T
	pool  *pgxpool.Pool
	dsn   string
	store *postgres.QueueStore
}

func newBench(t *testing.T) *bench {
	t.Helper()
	pool, dsn := pgtest.Pool(t)
	b := &bench{t: t, pool: pool, dsn: dsn, store: postgres.NewQueueStore(pool)}
	b.exec(queuetest.RunsTable)
	return b
}

func (b *bench) exec(sql string, args ...any) {
	b.t.Helper()
	if _, err := b.pool.Exec(context.Background(), sql, args...); err != nil {
		b.t.Fatal(err)
	}
}

// unannounced runs an edit of jobs with the notifying trigger off: no
// worker hears of it but by its own reads.
func (b *bench) unannounced(sql string, args ...any) {
	b.t.Helper()
	b.exec(`ALTER TABLE jobs DISABLE TRIGGER jobs_notify_status`)
	b.exec(sql, args...)
	b.exec(`ALTER TABLE jobs ENABLE TRIGGER jobs_notify_status`)
}

func (b *bench) insert(n int) []jobs.ID {
	b.t.Helper()
	ids := make([]jobs.ID, n)
	for i := range ids {
		ids[i] = jobs.ID(uuid.NewString())
		b.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, string(ids[i]))
	}
	return ids
}

// outcomes are the outcomes of the job's attempts, in order, comma-separated
// ("cancelled,completed").
func (b *bench) outcomes(id jobs.ID) string {
	b.t.Helper()
	attempts, _ := b.job(id).Metadata["attempts"].([]any)
	var out []string
	for _, a := range attempts {
		o, _ := a.(map[string]any)["outcome"].(string)
		out = append(out, o)
	}
	return strings.Join(out, ",")
}

func (b *bench) job(id jobs.ID) jobs.Job {
	b.t.Helper()
	j, err := postgres.NewJobStore(b.pool).Get(context.Background(), id)
	if err != nil {
		b.t.Fatalf("job %s: %v", id, err)
	}
	return j
}

// cancelledThenCompleted waits for the job to complete, and checks that
// it did at its second attempt, the first cancelled.
func (b *bench) cancelledThenCompleted(id jobs.ID) {
	b.t.Helper()
	b.completed(id)
	if o := b.outcomes(id); o != "cancelled,completed" {
		b.t.Fatalf("attempts' outcomes %q; want cancelled,completed", o)
	}
}

// completed waits for the job to complete, and returns it.
func (b *bench) completed(id jobs.ID) jobs.Job {
	b.t.Helper()
	b.waitFor("job "+string(id)+" completed", func() bool { return b.job(id).Status == jobs.StatusCompleted })
	return b.job(id)
}

// waitFor polls the database until cond holds (a generous deadline, never a
// duration assertion).
func (b *bench) waitFor(what string, cond func() bool) {
	b.t.Helper()
	wait.For(b.t, what, time.Minute, cond)
}

func (b *bench) count(sql string, args ...any) int {
	b.t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *bench) advisory(work func(ctx context.Context, j queue.Job) error) queue.Handler {
	return queuetest.Advisory(b.pool, work)
}

// untilStopped is a handler (under the advisory check of overlapping runs)
// that tells each run's start and runs until it is stopped.
func (b *bench) untilStopped() (queue.Handler, <-chan queue.Job) {
	started := make(chan queue.Job, 4)
	return b.advisory(func(ctx context.Context, j queue.Job) error {
		started <- j
		<-ctx.Done()
		return ctx.Err()
	}), started
}

// running is a started worker, with the names the tests below use.
type running struct {
	w      *queue.Worker
	cancel func()
	stop   func()
	conn   chan struct{}
	lost   chan struct{}
}

func (b *bench) start(h queue.Handler, cfg queue.Config, listen bool) *running {
	b.t.Helper()
	cfg.Logger = quiet
	s := queuetest.Start(b.t, b.dsn, b.store, h, cfg, listen)
	return &running{w: s.Worker, cancel: s.Cancel, stop: s.Stop, conn: s.Connected, lost: s.Lost}
}

func fast() queue.Config {
	return queue.Config{Concurrency: 3, LeaseTTL: 3 * time.Second, Heartbeat: 300 * time.Millisecond,
		Sweep: 500 * time.Millisecond, MaxAttempts: 3, ShutdownGrace: 5 * time.Second}
}

func TestManyJobsManyWorkersNeverOverlap(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	var runs atomic.Int64
	h := b.advisory(func(ctx context.Context, j queue.Job) error { runs.Add(1); return nil })
	for range 4 {
		b.start(h, fast(), true)
	}
	const n = 200
	ids := b.insert(n)
	b.waitFor("every job completed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'completed'`) == n
	})
	if o := b.count(`SELECT count(*) FROM test_runs WHERE overlapped`); o != 0 {
		t.Fatalf("%d overlapping runs", o)
	}
	if r := b.count(`SELECT count(*) FROM test_runs`); r != n {
		t.Fatalf("%d runs for %d jobs", r, n)
	}
	j := b.job(ids[0])
	if j.Metadata["lease"] != nil || j.Metadata["attempt"] != float64(1) || j.CompletedAt == nil {
		t.Fatalf("completed job: %+v", j)
	}
	attempts, _ := j.Metadata["attempts"].([]any)
	last, _ := attempts[len(attempts)-1].(map[string]any)
	if last["outcome"] != "completed" || last["ended_at"] == nil {
		t.Fatalf("attempts: %v", attempts)
	}
}

func TestPickupAfterListenerConnectionIsKilled(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	cfg := fast()
	cfg.Sweep = time.Hour // only notifications and the reconnect backlog scan can pick jobs up
	r := b.start(b.advisory(func(context.Context, queue.Job) error { return nil }), cfg, true)
	b.insert(3)
	b.waitFor("jobs before the cut", func() bool { return b.count(`SELECT count(*) FROM jobs WHERE status='completed'`) == 3 })

	if b.count(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'listen%'`) != 1 {
		t.Fatal("listener backend not found")
	}
	select {
	case <-r.lost:
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not notice")
	}
	b.insert(5) // queued during the gap: their notifications are lost
	select {
	case <-r.conn:
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not reconnect")
	}
	b.waitFor("jobs queued during the gap", func() bool { return b.count(`SELECT count(*) FROM jobs WHERE status='completed'`) == 8 })
}

func TestPollingOnly(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	cfg := fast()
	cfg.Sweep = 100 * time.Millisecond
	b.start(b.advisory(func(context.Context, queue.Job) error { return nil }), cfg, false)
	b.insert(10)
	b.waitFor("polled jobs", func() bool { return b.count(`SELECT count(*) FROM jobs WHERE status='completed'`) == 10 })
}

// blocking is a handler that announces each run and holds it until released
// or cancelled.
type blocking struct {
	started chan queue.Job
	release chan struct{}
	ended   chan error
	mu      sync.Mutex
	ctx     context.Context
}

func (h *blocking) lastCtx() context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ctx
}

func newBlocking() *blocking {
	return &blocking{started: make(chan queue.Job, 10), release: make(chan struct{}), ended: make(chan error, 10)}
}

func (h *blocking) Run(ctx context.Context, j queue.Job, _ queue.Reporter) error {
	h.mu.Lock()
	h.ctx = ctx
	h.mu.Unlock()
	h.started <- j
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-h.release:
	}
	h.ended <- err
	return err
}

func TestDashboardEditsWin(t *testing.T) {
	t.Parallel()
	for _, edit := range []string{
		`UPDATE jobs SET status = 'completed' WHERE job_id = $1`,
		`UPDATE jobs SET status = 'error', error = 'stopped by hand' WHERE job_id = $1`,
		`DELETE FROM jobs WHERE job_id = $1`,
	} {
		t.Run(edit[:20], func(t *testing.T) {
			t.Parallel()
			b := newBench(t)
			h := newBlocking()
			cfg := fast()
			// Heartbeats far apart (and the self-stop timer with them): only
			// the notification can stop the run within the test.
			cfg.LeaseTTL, cfg.Heartbeat = 10*time.Minute, 4*time.Minute
			r := b.start(h, cfg, true)
			id := b.insert(1)[0]
			j := wait.Recv(t, h.started, "start")
			b.exec(edit, string(id))
			if err := wait.Recv(t, h.ended, "cancellation"); !errors.Is(err, context.Canceled) || !errors.Is(context.Cause(h.lastCtx()), queue.ErrCancelled) {
				t.Fatalf("handler ended with %v (cause %v)", err, context.Cause(h.lastCtx()))
			}
			b.waitFor("worker let go", func() bool { return len(r.w.Held()) == 0 })
			r.stop()
			if edit[:6] == "DELETE" {
				if b.count(`SELECT count(*) FROM jobs`) != 0 {
					t.Fatal("row came back")
				}
				return
			}
			// The person's edit stays (status, error); the worker only closed
			// its attempt as cancelled and dropped its lease, so that a
			// re-queue later need not wait for it to expire.
			got := b.job(id)
			want := jobs.StatusCompleted
			if strings.Contains(edit, "'error'") {
				want = jobs.StatusError
				if got.Error == nil || *got.Error != "stopped by hand" {
					t.Fatalf("the person's error was overwritten: %v", got.Error)
				}
			}
			attempts, _ := got.Metadata["attempts"].([]any)
			if got.Status != want || got.Metadata["lease"] != nil || len(attempts) != 1 ||
				attempts[0].(map[string]any)["outcome"] != "cancelled" || attempts[0].(map[string]any)["token"] != j.Token {
				t.Fatalf("after the edit: status %s, metadata %v", got.Status, got.Metadata)
			}
		})
	}
}

func TestRequeueWhileRunningRunsAgainWithoutOverlap(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	var n atomic.Int64
	release := make(chan struct{})
	started := make(chan queue.Job, 4)
	h := b.advisory(func(ctx context.Context, j queue.Job) error {
		started <- j
		if n.Add(1) == 1 {
			<-ctx.Done() // the first run is stopped by the edit
			return ctx.Err()
		}
		<-release
		return nil
	})
	b.start(h, fast(), true)
	b.start(h, fast(), true)
	id := b.insert(1)[0]
	first := wait.Recv(t, started, "first run")
	b.exec(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	second := wait.Recv(t, started, "second run")
	close(release)
	b.completed(id)
	if first.Token == second.Token || second.Attempt != 1 {
		t.Fatalf("second run: token reused or attempt %d (want a fresh count)", second.Attempt)
	}
	if o := b.count(`SELECT count(*) FROM test_runs WHERE overlapped`); o != 0 {
		t.Fatal("runs overlapped")
	}
	if o := b.outcomes(id); o != "cancelled,completed" {
		t.Fatalf("attempts: %s", o)
	}
}

func TestRequeueFinishedJobRunsAgain(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	var n atomic.Int64
	b.start(b.advisory(func(context.Context, queue.Job) error {
		if n.Add(1) == 1 {
			return jobs.Fail("The video has no picture.", nil)
		}
		return nil
	}), fast(), true)
	id := b.insert(1)[0]
	b.waitFor("error", func() bool { return b.job(id).Status == jobs.StatusError })
	if e := b.job(id).Error; e == nil || *e != "The video has no picture." {
		t.Fatalf("error %v", e)
	}
	b.exec(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	j := b.completed(id)
	if j.Error != nil || j.Metadata["attempt"] != float64(1) {
		t.Fatalf("rerun: %+v", j)
	}
}

func TestShutdownHandsBackUnfinishedJobs(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	h := newBlocking()
	cfg := fast()
	cfg.ShutdownGrace = 200 * time.Millisecond
	r := b.start(h, cfg, true)
	id := b.insert(1)[0]
	wait.Recv(t, h.started, "start")
	r.stop()
	j := b.job(id)
	attempts, _ := j.Metadata["attempts"].([]any)
	if j.Status != jobs.StatusQueued || j.Metadata["attempt"] != float64(0) || j.Metadata["lease"] != nil ||
		attempts[0].(map[string]any)["outcome"] != "handed_back" {
		t.Fatalf("after shutdown: %+v", j)
	}
}

func TestShutdownLetsRunningJobsFinish(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	h := newBlocking()
	r := b.start(h, fast(), true)
	id := b.insert(1)[0]
	wait.Recv(t, h.started, "start")
	r.cancel()  // SIGTERM
	b.insert(1) // not claimed any more
	close(h.release)
	r.stop()
	if b.job(id).Status != jobs.StatusCompleted {
		t.Fatalf("status %s", b.job(id).Status)
	}
	if b.count(`SELECT count(*) FROM jobs WHERE status='queued'`) != 1 {
		t.Fatal("a job was claimed during shutdown")
	}
}

func TestRescueFencingAndMaxAttempts(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	ctx := context.Background()
	id := b.insert(1)[0]
	expire := func() {
		pgtest.ExpireLeases(t, b.pool, string(id))
	}
	msg := "Processing was interrupted 3 times."
	for attempt := 1; attempt <= 3; attempt++ {
		got, err := b.store.Claim(ctx, "w", 1, time.Minute)
		if err != nil || len(got) != 1 || got[0].Metadata["attempt"] != float64(attempt) || got[0].Token == "" {
			t.Fatalf("claim %d: %v %v", attempt, got, err)
		}
		tok := got[0].Token
		// A live lease is never rescued.
		if rq, f, _ := b.store.Rescue(ctx, 3, msg); len(rq)+len(f) != 0 {
			t.Fatal("rescued a live lease")
		}
		expire()
		requeued, failed, err := b.store.Rescue(ctx, 3, msg)
		if err != nil {
			t.Fatal(err)
		}
		if attempt < 3 && (len(requeued) != 1 || len(failed) != 0) {
			t.Fatalf("attempt %d: requeued %v failed %v", attempt, requeued, failed)
		}
		if attempt == 3 && (len(failed) != 1 || len(requeued) != 0) {
			t.Fatalf("last attempt: requeued %v failed %v", requeued, failed)
		}
		// The stale holder's writes are all rejected.
		for name, write := range map[string]func() (bool, error){
			"renew": func() (bool, error) { return b.store.Renew(ctx, id, tok, time.Minute) },
			"merge": func() (bool, error) { return b.store.Merge(ctx, id, tok, map[string]any{"stage": "x"}) },
			"complete": func() (bool, error) {
				return b.store.Finish(ctx, queue.Outcome{ID: id, Token: tok, Status: jobs.StatusCompleted})
			},
			"fail": func() (bool, error) {
				return b.store.Finish(ctx, queue.Outcome{ID: id, Token: tok, Status: jobs.StatusError, Message: "m", Cause: "c"})
			},
			"hand back": func() (bool, error) { return b.store.HandBack(ctx, id, tok) },
		} {
			if ok, err := write(); ok || err != nil {
				t.Fatalf("stale %s: %v %v", name, ok, err)
			}
		}
	}
	j := b.job(id)
	if j.Status != jobs.StatusError || j.Error == nil || *j.Error != msg {
		t.Fatalf("after 3 lost leases: %s %v", j.Status, j.Error)
	}
	attempts, _ := j.Metadata["attempts"].([]any)
	if len(attempts) != 3 || attempts[2].(map[string]any)["outcome"] != "lost" {
		t.Fatalf("attempts %v", attempts)
	}
}

func TestHeartbeatKeepsTheLease(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	cfg := queue.Config{Concurrency: 1, LeaseTTL: 600 * time.Millisecond, Heartbeat: 100 * time.Millisecond,
		Sweep: 100 * time.Millisecond, MaxAttempts: 3}
	renewals := 0
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, _ queue.Reporter) error {
		// Outlive several lease lifetimes, watching the renewals land.
		var last time.Time
		for renewals < 8 {
			var exp time.Time
			if err := b.pool.QueryRow(ctx, `SELECT (metadata->'lease'->>'expires_at')::timestamptz FROM jobs WHERE job_id=$1`, string(j.ID)).Scan(&exp); err != nil {
				return err
			}
			if exp.After(last) {
				renewals, last = renewals+1, exp
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
		return nil
	})
	b.start(h, cfg, true)
	id := b.insert(1)[0]
	if a := b.completed(id).Metadata["attempt"]; a != float64(1) {
		t.Fatalf("attempt %v: the lease was lost", a)
	}
}

func TestFailuresAndPanics(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	outcomes := map[string]func() error{
		"failure": func() error {
			return jobs.Fail("The video is 24 minutes long; the limit is 20 minutes.", errors.New("duration 1440s"))
		},
		"plain": func() error { return errors.New("exit status 1") },
		"panic": func() error { panic("boom") },
	}
	byJob := map[jobs.ID]string{}
	var mu sync.Mutex
	ids := b.insert(3)
	names := []string{"failure", "plain", "panic"}
	for i, id := range ids {
		byJob[id] = names[i]
	}
	b.start(queue.HandlerFunc(func(ctx context.Context, j queue.Job, _ queue.Reporter) error {
		mu.Lock()
		f := outcomes[byJob[j.ID]]
		mu.Unlock()
		return f()
	}), fast(), true)
	b.waitFor("all failed", func() bool { return b.count(`SELECT count(*) FROM jobs WHERE status='error'`) == 3 })
	want := map[string]string{
		"failure": "The video is 24 minutes long; the limit is 20 minutes.",
		"plain":   "Something went wrong while processing the video; please try again, and contact support if it keeps failing.",
		"panic":   "Something went wrong while processing the video; please try again, and contact support if it keeps failing.",
	}
	for id, name := range byJob {
		j := b.job(id)
		if j.Error == nil || *j.Error != want[name] {
			t.Errorf("%s: %v", name, j.Error)
		}
		attempts := j.Metadata["attempts"].([]any)
		if cause, _ := attempts[0].(map[string]any)["error"].(string); cause == "" {
			t.Errorf("%s: no technical cause recorded", name)
		}
	}
}

func TestReporterAndTempDir(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	id := b.insert(1)[0]
	b.exec(`UPDATE jobs SET metadata = '{"note": "added by a person", "probe": {"width": 1}}' WHERE job_id=$1`, string(id))
	var dir string
	b.start(queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		dir = j.TempDir
		// Named for this claim, made by the handler that needs it.
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return fmt.Errorf("temp dir made before it was needed: %v", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "work"), []byte("x"), 0o600); err != nil {
			return err
		}
		for _, step := range []func() error{
			func() error { return r.Stage(ctx, "probing") },
			func() error { return r.Merge(ctx, map[string]any{"probe": map[string]any{"height": 2}}) },
			func() error { return r.Stage(ctx, "transcoding") },
			func() error { return r.Progress(ctx, 0.5) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	}), fast(), true)
	m := b.completed(id).Metadata
	probe, _ := m["probe"].(map[string]any)
	timings, _ := m["timings"].(map[string]any)
	if m["note"] != "added by a person" || probe["width"] != float64(1) || probe["height"] != float64(2) ||
		m["stage"] != "transcoding" || m["progress"] != 0.5 || timings["probing_ms"] == nil || timings["transcoding_ms"] == nil {
		t.Fatalf("metadata: %v", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s left behind: %v", dir, err)
	}
}

// mergeCounter counts the metadata writes a worker makes.
type mergeCounter struct {
	queue.Store
	merges atomic.Int64
}

func (m *mergeCounter) Merge(ctx context.Context, id jobs.ID, token string, patch map[string]any) (bool, error) {
	m.merges.Add(1)
	return m.Store.Merge(ctx, id, token, patch)
}

// A stage is written with the run's next write, or once it has lasted the
// stage delay: stages that end sooner cost no statement of their own, and
// the outcome still records every stage's time.
func TestQuickStagesAreWrittenWithTheNextWrite(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		delay time.Duration
		lasts bool // the last stage lasts: it is written while it lasts, with no other write
	}{
		{"none lasts the delay", time.Hour, false},
		{"the last lasts", time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := newBench(t)
			counter := &mergeCounter{Store: b.store}
			cfg := fast()
			cfg.Logger, cfg.StageDelay = quiet, c.delay
			release := make(chan struct{})
			queuetest.Start(t, b.dsn, counter, queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
				for _, s := range []string{"downloading", "probing", "transcoding"} {
					if err := r.Stage(ctx, s); err != nil {
						return err
					}
				}
				if c.lasts {
					<-release
				}
				return nil
			}), cfg, true)
			id := b.insert(1)[0]
			if c.lasts {
				b.waitFor("the lasting stage to be written", func() bool { return b.job(id).Metadata["stage"] == "transcoding" })
				close(release)
			}
			b.completed(id)
			if n := counter.merges.Load(); !c.lasts && n != 0 {
				t.Errorf("%d metadata writes besides the outcome; want none", n)
			}
			m := b.job(id).Metadata
			timings, _ := m["timings"].(map[string]any)
			if m["stage"] != "transcoding" || timings["downloading_ms"] == nil || timings["probing_ms"] == nil || timings["transcoding_ms"] == nil {
				t.Errorf("metadata %v", m)
			}
		})
	}
}

// A heartbeat longer than two fifths of the lease is refused (the next
// renewal and its retries must go out well before the run stops itself at
// 0.8 × the lease), not quietly turned into another one; an unset one is a
// third of the lease.
func TestHeartbeatMustFitTwiceInTheStopMargin(t *testing.T) {
	t.Parallel()
	h := queue.HandlerFunc(func(context.Context, queue.Job, queue.Reporter) error { return nil })
	for _, hb := range []time.Duration{time.Second, 850 * time.Millisecond, 401 * time.Millisecond} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("a heartbeat of %s for a lease of 1s was accepted", hb)
				}
			}()
			queue.New(nil, h, queue.Config{LeaseTTL: time.Second, Heartbeat: hb})
		}()
	}
	queue.New(nil, h, queue.Config{LeaseTTL: time.Second, Heartbeat: 400 * time.Millisecond})
	if got := queue.DefaultHeartbeat(queue.DefaultLeaseTTL); got != 10*time.Second {
		t.Errorf("default heartbeat %s", got)
	}
	queue.New(nil, h, queue.Config{LeaseTTL: time.Second})
}

// A person's edit stops a run within a sweep whether or not the worker
// hears of it: a polling worker, and a listening one whose notification was
// lost (the notifying trigger off for the edit), both with heartbeats far
// apart so that only their sweep can notice. A re-queue ends the run's
// attempt as cancelled and runs the job again; a stop ends it the same way,
// its lease dropped.
func TestEditsStopRunsWithoutANotification(t *testing.T) {
	t.Parallel()
	for _, listen := range []bool{false, true} {
		for name, edit := range map[string]string{
			"requeue": `UPDATE jobs SET status = 'queued' WHERE job_id = $1`,
			"stop":    `UPDATE jobs SET status = 'error', error = 'Stopped by a person.' WHERE job_id = $1`,
		} {
			t.Run(fmt.Sprintf("%s/listen=%v", name, listen), func(t *testing.T) {
				t.Parallel()
				b := newBench(t)
				h := newBlocking()
				cfg := fast()
				cfg.LeaseTTL, cfg.Heartbeat = 10*time.Minute, 4*time.Minute
				b.start(h, cfg, listen)
				id := b.insert(1)[0]
				wait.Recv(t, h.started, "start")
				b.unannounced(edit, string(id))
				if err := wait.Recv(t, h.ended, "cancellation"); !errors.Is(err, context.Canceled) || !errors.Is(context.Cause(h.lastCtx()), queue.ErrCancelled) {
					t.Fatalf("handler ended with %v (cause %v)", err, context.Cause(h.lastCtx()))
				}
				if name == "requeue" {
					again := wait.Recv(t, h.started, "the run again")
					close(h.release)
					b.completed(id)
					if o := b.outcomes(id); again.Attempt != 1 || o != "cancelled,completed" {
						t.Fatalf("attempt %d, attempts %s", again.Attempt, o)
					}
					return
				}
				// A stop ends the attempt the same way, and leaves no lease for
				// a later re-queue to wait out.
				b.waitFor("the attempt closed", func() bool {
					return b.outcomes(id) == "cancelled"
				})
				if lease := b.job(id).Metadata["lease"]; lease != nil {
					t.Fatalf("a lease is left after the stop: %v", lease)
				}
			})
		}
	}
}

// writeStep is what a run's write returned, and the cause its context
// ended with by then.
type writeStep struct {
	err   error
	cause error
}

// heldWrite is a run that writes its progress once write is closed, and
// sends wrote what the write returned.
func heldWrite(ctx context.Context, rep queue.Reporter, write <-chan struct{}, wrote chan<- writeStep) error {
	<-write
	err := rep.Progress(ctx, 0.5)
	wrote <- writeStep{err, context.Cause(ctx)}
	return err
}

// A person's edit that the run's own write meets first (no notification,
// heartbeat and sweep far off) stops the run as the heartbeat would:
// ErrCancelled, to the write and as the run's cause, the attempt cancelled,
// and the re-queued job claimed again at once (woken: no sweep comes).
func TestAnEditTheRunsOwnWriteMeetsIsACancellation(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	write, wrote := make(chan struct{}), make(chan writeStep, 2)
	starts := make(chan queue.Job, 2)
	var runs atomic.Int32
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, rep queue.Reporter) error {
		starts <- j
		if runs.Add(1) > 1 {
			return nil
		}
		return heldWrite(ctx, rep, write, wrote)
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat, cfg.Sweep = 10*time.Minute, 4*time.Minute, time.Hour
	id := b.insert(1)[0] // before the worker: its first claim finds it
	b.start(h, cfg, false)
	wait.Recv(t, starts, "start")
	b.unannounced(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	close(write)
	got := wait.Recv(t, wrote, "the write")
	if !errors.Is(got.err, queue.ErrCancelled) || !errors.Is(got.cause, queue.ErrCancelled) {
		t.Fatalf("the write met the edit with %v (the run's cause: %v)", got.err, got.cause)
	}
	if again := wait.Recv(t, starts, "the job again, woken"); again.ID != id {
		t.Fatalf("started %s", again.ID)
	}
	b.cancelledThenCompleted(id)
}

// With an owner cap, a job left queued because its owner was at the cap is
// claimed as soon as a job of that owner ends — woken, not left to the next
// sweep (an hour here, and no notifications: a polling worker).
func TestAnOwnersNextJobStartsWhenItsSlotFrees(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	b.store.CapOwners(1)
	for i := range 3 {
		b.exec(`INSERT INTO jobs (job_id, created_at, metadata) VALUES ($1, now() - make_interval(secs => $2), '{"owner": "alice"}')`,
			uuid.NewString(), 100-i)
	}
	h := newBlocking()
	cfg := fast()
	cfg.Sweep = time.Hour
	b.start(h, cfg, false)
	for i := range 3 {
		j := wait.Recv(t, h.started, fmt.Sprintf("alice's job %d", i+1))
		if n := b.count(`SELECT count(*) FROM jobs WHERE status = 'processing'`); n != 1 {
			t.Fatalf("%d of alice's jobs processing with a cap of 1", n)
		}
		h.release <- struct{}{}
		b.waitFor("the job to complete", func() bool { return b.job(j.ID).Status == jobs.StatusCompleted })
	}
}

// heldStore is the engine's store, held at two points once held is set: a
// renewal's answer waits for renew, and the first readLossCause read (Status),
// its answer read, waits for answer.
type heldStore struct {
	*postgres.QueueStore
	held          atomic.Bool
	first         atomic.Bool
	renew, answer chan struct{}
	read          chan struct{}
}

func (s *heldStore) Renew(ctx context.Context, id jobs.ID, token string, ttl time.Duration) (bool, error) {
	ok, err := s.QueueStore.Renew(ctx, id, token, ttl)
	if s.held.Load() {
		<-s.renew
	}
	return ok, err
}

func (s *heldStore) Status(ctx context.Context, id jobs.ID) (jobs.Status, bool, error) {
	st, found, err := s.QueueStore.Status(ctx, id)
	if s.held.Load() && s.first.CompareAndSwap(false, true) {
		close(s.read)
		<-s.answer
	}
	return st, found, err
}

// A run lost once has one cause: its write that met the loss returns the
// cause the run's context ended with, even when the heartbeat lost the run
// while the write was asking why (the write read a person's re-queue, the
// heartbeat a moment later another worker's claim of the re-queued job).
func TestARunLostTwiceAtOnceHasOneCause(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	store := &heldStore{QueueStore: b.store, renew: make(chan struct{}), answer: make(chan struct{}), read: make(chan struct{})}
	write, wrote := make(chan struct{}), make(chan writeStep, 1)
	started := make(chan context.Context, 1)
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, rep queue.Reporter) error {
		started <- ctx
		return heldWrite(ctx, rep, write, wrote)
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat, cfg.Sweep = 10*time.Minute, 200*time.Millisecond, time.Hour
	id := b.insert(1)[0]
	queuetest.Start(t, b.dsn, store, h, cfg, false)
	runCtx := wait.Recv(t, started, "start")
	store.held.Store(true)
	b.unannounced(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	close(write)
	wait.Recv(t, store.read, "the write asking why") // it read 'queued'
	// Another worker's claim of the re-queued job (as runops_claim leaves it,
	// once the dropped or expired lease lets it): the engine's write, marked
	// as one (a person's edit cannot change a live lease).
	b.exec(`UPDATE jobs SET status = 'processing', metadata = jsonb_set(metadata, '{lease,token}', '"another"')
		WHERE job_id = $1`+pgtest.AsEngine, string(id))
	close(store.renew) // the heartbeat's renewal fails, and it asks why: 'processing'
	wait.Recv(t, runCtx.Done(), "the heartbeat losing the run")
	close(store.answer)
	got := wait.Recv(t, wrote, "the write")
	if !errors.Is(got.err, queue.ErrLost) || errors.Is(got.err, queue.ErrCancelled) != errors.Is(got.cause, queue.ErrCancelled) {
		t.Fatalf("the write returned %v, the run's context ended with %v", got.err, got.cause)
	}
}

// failingStatus is the engine's store whose first read of a job's status
// fails, as in a moment's outage.
type failingStatus struct {
	*postgres.QueueStore
	failed atomic.Bool
}

func (s *failingStatus) Status(ctx context.Context, id jobs.ID) (jobs.Status, bool, error) {
	if s.failed.CompareAndSwap(false, true) {
		return "", false, errors.New("connection reset by peer")
	}
	return s.QueueStore.Status(ctx, id)
}

// A person's re-queue is a cancellation even when the first read of why
// the run lost its job fails: the read is tried again, not taken for a
// lost lease.
func TestAFailedCauseReadIsTriedAgain(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	store := &failingStatus{QueueStore: b.store}
	h := newBlocking()
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat = 10*time.Minute, 4*time.Minute
	queuetest.Start(t, b.dsn, store, h, cfg, false)
	id := b.insert(1)[0]
	wait.Recv(t, h.started, "start")
	b.exec(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(id))
	if err := wait.Recv(t, h.ended, "cancellation"); !errors.Is(context.Cause(h.lastCtx()), queue.ErrCancelled) {
		t.Fatalf("handler ended with %v (cause %v)", err, context.Cause(h.lastCtx()))
	}
	if !store.failed.Load() {
		t.Fatal("the cause was never read")
	}
	wait.Recv(t, h.started, "the run again")
	close(h.release)
	b.cancelledThenCompleted(id)
}

// The longest heartbeat a lease allows renews it before the run stops
// itself (0.8 × the lease after the claim): a run that outlasts that
// margin sees its lease's expiry move. A heartbeat of 1.7 s for a lease of
// 2 s was accepted before, and every such run stopped before its first
// renewal (TestHeartbeatMustFitTwiceInTheStopMargin refuses it now).
func TestTheLongestHeartbeatKeepsTheLease(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	cfg := queue.Config{Concurrency: 1, LeaseTTL: 2 * time.Second, Heartbeat: queue.MaxHeartbeat(2 * time.Second),
		Sweep: 500 * time.Millisecond, MaxAttempts: 3, ShutdownGrace: time.Second}
	renewed := make(chan bool, 8)
	h := b.advisory(func(ctx context.Context, j queue.Job) error {
		lease, _ := j.Metadata["lease"].(map[string]any)
		claimed, _ := lease["expires_at"].(string)
		// Done once the lease has been renewed (its expiry moved), or
		// when the run is stopped.
		for {
			var now string
			if err := b.pool.QueryRow(context.WithoutCancel(ctx), `SELECT coalesce(metadata->'lease'->>'expires_at', '') FROM jobs WHERE job_id = $1`,
				string(j.ID)).Scan(&now); err != nil {
				return err
			}
			if now != claimed && now != "" {
				renewed <- true
				return nil
			}
			select {
			case <-ctx.Done():
				renewed <- false
				return ctx.Err()
			case <-time.After(50 * time.Millisecond): // polling the row
			}
		}
	})
	b.start(h, cfg, true)
	id := b.insert(1)[0]
	if !wait.Recv(t, renewed, "the first run's end") {
		t.Fatalf("the run was stopped before its lease was ever renewed (heartbeat %s, lease %s)", cfg.Heartbeat, cfg.LeaseTTL)
	}
	b.completed(id)
}

// A person who re-queues a running job and, in the same edit, replaces its
// metadata (here with a priority alone) does not run it twice: the lease
// stays as it was until its holder drops it. Before, the edit dropped the
// lease with the metadata, and another worker claimed the job at once while
// its holder still ran. The holder polls, so it learns of the edit at its
// next heartbeat; the other worker claims at once.
func TestAnEditThatDropsALiveLeaseDoesNotRunTheJobTwice(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	h, started := b.untilStopped()
	cfg := queue.Config{Concurrency: 1, LeaseTTL: 30 * time.Second, Heartbeat: 2 * time.Second,
		Sweep: 10 * time.Second, MaxAttempts: 3, ShutdownGrace: 500 * time.Millisecond}
	id := b.insert(1)[0]
	b.start(h, cfg, false)
	first := wait.Recv(t, started, "first run")
	b.exec(`UPDATE jobs SET status = 'queued', metadata = '{"priority": 5}' WHERE job_id = $1`, string(id))
	if tok := b.job(id).Metadata["lease"]; tok == nil {
		t.Fatal("the edit dropped the live lease")
	}
	b.start(h, cfg, false)
	second := wait.Recv(t, started, "second run")
	if first.Token == second.Token {
		t.Fatal("the second run has the first one's lease")
	}
	if o := b.count(`SELECT count(*) FROM test_runs WHERE overlapped`); o != 0 {
		t.Fatalf("the second run started while the first still ran (%d overlapping runs)", o)
	}
	if got := b.job(id).Metadata["priority"]; got != float64(5) {
		t.Errorf("the person's priority: %v", got)
	}
}

// A person who replaces the metadata of a running job without changing its
// status (a note, a null, a list) leaves its lease with it: the rescue does
// not take the job for expired, and its holder's next renewal still holds
// it. Before, the lease went with the metadata, and the next rescue
// re-queued the job under its running holder.
func TestAMetadataEditKeepsTheRunningJobsLease(t *testing.T) {
	t.Parallel()
	for _, meta := range []string{`{"note": "checked by hand"}`, `null`, `[1, 2]`} {
		t.Run(meta, func(t *testing.T) {
			t.Parallel()
			b := newBench(t)
			h, started := b.untilStopped()
			cfg := queue.Config{Concurrency: 1, LeaseTTL: 30 * time.Second, Heartbeat: 300 * time.Millisecond,
				Sweep: time.Hour, MaxAttempts: 3, ShutdownGrace: 500 * time.Millisecond}
			id := b.insert(1)[0]
			b.start(h, cfg, false)
			run := wait.Recv(t, started, "the run")
			b.exec(`UPDATE jobs SET metadata = $2::jsonb WHERE job_id = $1`, string(id), meta)
			if requeued, failed, err := b.store.Rescue(context.Background(), 3, "interrupted"); err != nil || len(requeued)+len(failed) != 0 {
				t.Fatalf("the rescue took the running job: requeued %v, failed %v, %v", requeued, failed, err)
			}
			lease, ok := b.job(id).Metadata["lease"].(map[string]any)
			if !ok {
				t.Fatalf("the edit (metadata = %s) dropped the lease", meta)
			}
			edited := lease["expires_at"]
			b.waitFor("a renewal by the holder", func() bool {
				lease, _ := b.job(id).Metadata["lease"].(map[string]any)
				return lease["token"] == run.Token && lease["expires_at"] != edited
			})
			if j := b.job(id); j.Status != jobs.StatusProcessing {
				t.Errorf("status %s", j.Status)
			}
		})
	}
}

// A person who re-queues a job between its handler's end and its outcome's
// write (the write matches nothing) has it claimed again at once: the run
// drops its lease and closes its attempt as cancelled, as a run stopped by
// the edit does. Before, the lease stayed until it expired (here in ten
// minutes), and the attempt was closed as lost by the next claim.
func TestARequeueBeforeTheOutcomeDropsTheLease(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	starts := make(chan queue.Job, 2)
	var runs atomic.Int32
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, rep queue.Reporter) error {
		starts <- j
		if runs.Add(1) == 1 {
			b.unannounced(`UPDATE jobs SET status = 'queued' WHERE job_id = $1`, string(j.ID))
		}
		return nil
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat, cfg.Sweep = 10*time.Minute, 4*time.Minute, time.Hour
	id := b.insert(1)[0]
	b.start(h, cfg, true)
	first := wait.Recv(t, starts, "the first run")
	second := wait.Recv(t, starts, "the second run, at once")
	if first.Token == second.Token {
		t.Fatal("one claim ran twice")
	}
	b.cancelledThenCompleted(id)
}

// slowClaims is the engine's store whose claims answer late, as a busy
// database does: a claim that took a job returns delay after it was made.
type slowClaims struct {
	*postgres.QueueStore
	delay   time.Duration
	renewed chan struct{}
}

func (s *slowClaims) Claim(ctx context.Context, worker string, n int, ttl time.Duration) ([]queue.Claimed, error) {
	got, err := s.QueueStore.Claim(ctx, worker, n, ttl)
	if len(got) > 0 {
		time.Sleep(s.delay) // the late answer itself, not a wait for anything
	}
	return got, err
}

func (s *slowClaims) Renew(ctx context.Context, id jobs.ID, token string, ttl time.Duration) (bool, error) {
	ok, err := s.QueueStore.Renew(ctx, id, token, ttl)
	if ok && err == nil {
		select {
		case s.renewed <- struct{}{}:
		default:
		}
	}
	return ok, err
}

// A claim that answers late does not cost the run its job: the lease runs
// from the claim's sending, and so does the first renewal. The claim here
// answers after 0.48 × TTL; a first renewal a heartbeat after the run's
// start (0.88 × TTL) would come after the stop (0.8 × TTL).
func TestASlowClaimKeepsItsRun(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat, cfg.Sweep = 5*time.Second, 2*time.Second, time.Hour
	store := &slowClaims{QueueStore: b.store, delay: 2400 * time.Millisecond, renewed: make(chan struct{}, 1)}
	kept := make(chan bool, 1)
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, rep queue.Reporter) error {
		select {
		case <-store.renewed:
			kept <- true
			return nil
		case <-ctx.Done():
			kept <- false
			return ctx.Err()
		}
	})
	id := b.insert(1)[0]
	queuetest.Start(t, b.dsn, store, h, cfg, false)
	if !wait.Recv(t, kept, "the run's end") {
		t.Fatal("the run was stopped before its first renewal")
	}
	b.completed(id)
}

// heldDuty is a duty this test hands out (take) and ends (end).
type heldDuty struct{ take, end chan struct{} }

func (d heldDuty) Run(ctx context.Context, work func(context.Context)) {
	select {
	case <-d.take:
	case <-ctx.Done():
		return
	}
	tenure, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-d.end:
			cancel()
		case <-tenure.Done():
		}
	}()
	work(tenure)
}

// Housekeep rescues expired leases and runs its chores while the worker
// holds the duty, and every one of them stops when its tenure ends.
func TestHousekeepWorksWhileTheDutyIsHeld(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	ctx := context.Background()
	id := b.insert(1)[0]
	if got, err := b.store.Claim(ctx, "dead", 1, time.Minute); err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	pgtest.ExpireLeases(t, b.pool, string(id))
	w := queue.New(b.store, newBlocking(), queue.Config{Sweep: 100 * time.Millisecond, SharedRescue: true, Logger: quiet})
	duty := heldDuty{take: make(chan struct{}), end: make(chan struct{})}
	chore := make(chan context.Context, 1)
	done := make(chan struct{})
	go func() {
		w.Housekeep(ctx, duty, func(ctx context.Context) { chore <- ctx; <-ctx.Done() })
		close(done)
	}()
	close(duty.take)
	choreCtx := wait.Recv(t, chore, "the chore")
	b.waitFor("the rescue of the expired lease", func() bool { return b.job(id).Status == jobs.StatusQueued })
	if choreCtx.Err() != nil {
		t.Errorf("the chore's context ended while the duty was held: %v", choreCtx.Err())
	}
	close(duty.end)
	wait.Recv(t, done, "Housekeep's return once the tenure ended")
}
