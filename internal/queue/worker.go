package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// Config tunes a Worker; zero values take the defaults of docs/operations.md.
type Config struct {
	Name          string // who holds leases, for metadata and logs
	Concurrency   int
	LeaseTTL      time.Duration
	Heartbeat     time.Duration
	Sweep         time.Duration // backstop claim attempt and rescue, jittered
	MaxAttempts   int
	ShutdownGrace time.Duration
	TempDir       string // parent of each claim's work directory
	Logger        *slog.Logger
	// StageDelay is how long a new stage may go unwritten (reporter.go);
	// default 250 ms.
	StageDelay time.Duration
}

// The engine's defaults, which the configuration (RUNOPS_LEASE_TTL and the
// rest, docs/operations.md) uses too: each is written here only.
const (
	DefaultLeaseTTL      = 30 * time.Second
	DefaultSweep         = 15 * time.Second
	DefaultMaxAttempts   = 3
	DefaultShutdownGrace = 30 * time.Second
)

// DefaultHeartbeat renews a lease of ttl three times before it expires.
func DefaultHeartbeat(ttl time.Duration) time.Duration { return ttl / 3 }

// defaults fills what is unset. A heartbeat that is not shorter than the
// lease is a caller's mistake (the configuration refuses it with a
// sentence): it is never quietly changed into another one.
func (c *Config) defaults() {
	if c.Name == "" {
		host, _ := os.Hostname()
		c.Name = fmt.Sprintf("%s:%d:%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	if c.Concurrency < 1 {
		c.Concurrency = 1
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat(c.LeaseTTL)
	}
	if c.Heartbeat >= c.LeaseTTL {
		panic(fmt.Sprintf("queue: the heartbeat (%s) must be shorter than the lease (%s)", c.Heartbeat, c.LeaseTTL))
	}
	if c.Sweep <= 0 {
		c.Sweep = DefaultSweep
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.StageDelay <= 0 {
		c.StageDelay = defaultStageDelay
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.TempDir == "" {
		c.TempDir = os.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Worker claims and runs jobs. Create it with New, give it to a listener as
// its Events (notifications and reconnects), and Run it.
type Worker struct {
	store   Store
	handler Handler
	cfg     Config
	log     *slog.Logger
	wake    chan struct{}

	mu   sync.Mutex
	held map[jobs.ID]*run
}

type run struct {
	job    Job
	cancel context.CancelCauseFunc
	check  chan struct{} // ask the heartbeat to check the lease now
	lost   atomic.Bool   // the job is no longer this run's
}

// lose stops the run for good: the job is no longer its own (cause is
// ErrLeaseLost or ErrEdited), and nothing more is written for it.
func (r *run) lose(cause error) {
	r.lost.Store(true)
	r.cancel(cause)
}

// New returns a worker; nothing runs until Run.
func New(store Store, handler Handler, cfg Config) *Worker {
	cfg.defaults()
	return &Worker{store: store, handler: handler, cfg: cfg, log: cfg.Logger,
		wake: make(chan struct{}, 1), held: map[jobs.ID]*run{}}
}

// Name is the worker's lease holder name.
func (w *Worker) Name() string { return w.cfg.Name }

// Wake makes an idle worker try to claim now (a notification, a reconnect).
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Notify handles a change to a job row. It never blocks: it runs on the
// listener's connection. A change to a job this worker holds makes it check
// its lease at once (the lease check, not the hint, decides: a notification
// can be older than the claim); a queued job wakes the worker.
func (w *Worker) Notify(id jobs.ID, status jobs.Status) {
	w.mu.Lock()
	r, ok := w.held[id]
	w.mu.Unlock()
	if ok {
		select {
		case r.check <- struct{}{}:
		default:
		}
		return
	}
	if status == jobs.StatusQueued {
		w.Wake()
	}
}

// Held lists the jobs running now.
func (w *Worker) Held() []jobs.ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]jobs.ID, 0, len(w.held))
	for id := range w.held {
		out = append(out, id)
	}
	return out
}

// jitter spreads periodic work of many workers over ±20 %.
func jitter(d time.Duration) time.Duration {
	return d*8/10 + time.Duration(rand.Int64N(int64(d)*4/10+1))
}

// Run claims and runs jobs until ctx is done; then it stops claiming, lets
// running jobs finish within the shutdown grace, hands the rest back to the
// queue and returns.
func (w *Worker) Run(ctx context.Context) error {
	// Jobs outlive ctx by up to the grace period.
	jobsCtx, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(nil)
	var wg sync.WaitGroup
	wg.Go(func() { w.rescueLoop(ctx) })
	w.sweepWorkDirs(ctx)
	w.log.Info("worker started", "worker", w.cfg.Name, "concurrency", w.cfg.Concurrency)
	w.claimLoop(ctx, jobsCtx, &wg)
	w.drain(&wg, stopJobs)
	return nil
}

// drain waits for the running jobs to finish within the shutdown grace;
// then it stops them, and hands back those that ignore it.
func (w *Worker) drain(wg *sync.WaitGroup, stopJobs context.CancelCauseFunc) {
	w.log.Info("worker stopping: no new claims", "worker", w.cfg.Name, "running", len(w.Held()), "grace", w.cfg.ShutdownGrace)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(w.cfg.ShutdownGrace):
	}
	stopJobs(errShutdown)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// A handler that ignores cancellation: hand its job back anyway; the
		// process is about to exit, which ends its work.
		for _, id := range w.Held() {
			w.mu.Lock()
			r := w.held[id]
			w.mu.Unlock()
			if r != nil {
				w.record("hand back", func(ctx context.Context) (bool, error) {
					return w.store.HandBack(ctx, id, r.job.Token)
				})
			}
		}
	}
}

// gateErr is the handler's Gate verdict: nil when it can take work.
func (w *Worker) gateErr() error {
	if g, ok := w.handler.(Gate); ok {
		return g.Ready()
	}
	return nil
}

// workDirPrefix names the claims' work directories: runops-<job id>-<token>.
const workDirPrefix = "runops-"

// sweepWorkDirs removes, at start, the work directories that claims of a
// killed worker left behind (each can hold a whole upload). A directory whose
// claim still holds its job — another worker's on this host, sharing
// TempDir — is left alone.
func (w *Worker) sweepWorkDirs(ctx context.Context) {
	entries, err := os.ReadDir(w.cfg.TempDir)
	if err != nil {
		w.log.Warn("cannot list the work directory", "dir", w.cfg.TempDir, "error", err)
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), workDirPrefix)
		if !e.IsDir() || !ok || len(rest) < 38 || rest[36] != '-' {
			continue
		}
		id, err := jobs.ParseID(rest[:36])
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		held, err := w.store.Holds(cctx, id, rest[37:])
		cancel()
		if err != nil || held {
			continue // unknown, or live: keep it
		}
		if err := os.RemoveAll(filepath.Join(w.cfg.TempDir, e.Name())); err != nil {
			w.log.Warn("cannot remove a stale work directory", "dir", e.Name(), "error", err)
			continue
		}
		w.log.Info("removed the work directory of an ended claim", "job_id", id, "dir", e.Name())
	}
}

// claim takes up to n jobs.
func (w *Worker) claim(ctx context.Context, n int) ([]Job, error) {
	// Not cancelled by shutdown half-way: a claim the server made but we never
	// heard of would sit until its lease expired, and cost an attempt.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.LeaseTTL/2)
	defer cancel()
	sent := time.Now()
	claimed, err := w.store.Claim(ctx, w.cfg.Name, n, w.cfg.LeaseTTL)
	if err != nil {
		return nil, err
	}
	out := make([]Job, len(claimed))
	now := time.Now()
	for i, c := range claimed {
		metrics.Pickup.Observe(max(now.Sub(c.QueuedAt), 0).Seconds())
		attempt, _ := c.Metadata["attempt"].(float64)
		out[i] = Job{Job: c.Job, Token: c.Token, Attempt: int(attempt), claimedAt: sent}
	}
	return out, nil
}

func (w *Worker) rescueLoop(ctx context.Context) {
	msg := fmt.Sprintf("Processing was interrupted %d times; please try again later, and contact support if it keeps happening.", w.cfg.MaxAttempts)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(w.cfg.Sweep)):
		}
		requeued, failed, err := w.store.Rescue(ctx, w.cfg.MaxAttempts, msg)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("rescue failed", "error", err)
			}
			continue
		}
		metrics.JobsFinished.WithLabelValues("lost").Add(float64(len(requeued) + len(failed)))
		for _, id := range requeued {
			w.log.Warn("lease expired: job back in the queue", "job_id", id)
		}
		for _, id := range failed {
			w.log.Error("lease expired too often: job failed", "job_id", id, "max_attempts", w.cfg.MaxAttempts)
		}
		if len(requeued) > 0 {
			w.Wake()
		}
	}
}

// execute runs one claimed job to its end and records the outcome.
func (w *Worker) execute(jobsCtx context.Context, job Job) {
	log := w.log.With("job_id", job.ID, "attempt", job.Attempt, "worker", w.cfg.Name)
	runCtx, cancel := context.WithCancelCause(withJobAttrs(jobsCtx, job))
	defer cancel(nil)
	r := &run{job: job, cancel: cancel, check: make(chan struct{}, 1)}
	w.mu.Lock()
	w.held[job.ID] = r
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.held, job.ID)
		w.mu.Unlock()
	}()

	// Named, not made (queue.Job.TempDir): many claims making and removing
	// directories in one parent at once contend for its lock, which cost a
	// burst of short jobs most of the worker's time.
	job.TempDir = filepath.Join(w.cfg.TempDir, workDirPrefix+string(job.ID)+"-"+job.Token)
	defer os.RemoveAll(job.TempDir)

	rep := newReporter(w.store, r, w.cfg.StageDelay)
	var loops sync.WaitGroup // the run's own: its lease and its pending stage, until the run ends
	loops.Go(func() { w.heartbeat(runCtx, r, log) })
	loops.Go(func() { rep.flushStages(runCtx) })
	log.Info("job started")
	err := w.safeRun(runCtx, job, rep)
	cancelled := context.Cause(runCtx)
	cancel(nil)
	loops.Wait()

	switch {
	case errors.Is(cancelled, ErrLeaseLost), errors.Is(err, ErrLeaseLost):
		// Someone else holds it, or a person changed it: write nothing, but
		// give the lease up if the job was re-queued.
		log.Info("job stopped: lease gone or job edited", "error", err)
		outcome := "lost"
		if errors.Is(cancelled, ErrEdited) {
			outcome = "cancelled"
		}
		metrics.JobsFinished.WithLabelValues(outcome).Inc()
		w.record("release", func(ctx context.Context) (bool, error) {
			return true, w.store.Release(ctx, job.ID, job.Token)
		})
	case errors.Is(cancelled, errShutdown) && err != nil, errors.Is(err, ErrHandBack):
		log.Info("job handed back", "reason", cmp.Or(cancelled, err))
		if w.record("hand back", func(ctx context.Context) (bool, error) {
			return w.store.HandBack(ctx, job.ID, job.Token)
		}) {
			metrics.JobsFinished.WithLabelValues("handed_back").Inc()
		}
	default:
		o := Outcome{ID: job.ID, Token: job.Token, Status: jobs.StatusCompleted, Patch: rep.finalTimings()}
		if err != nil {
			o.Status = jobs.StatusError
			o.Message, o.Cause = describe(err)
			log.Warn("job failed", "error", err, "message", o.Message)
		}
		if w.record(string(o.Status), func(ctx context.Context) (bool, error) { return w.store.Finish(ctx, o) }) {
			if err == nil {
				log.Info("job completed")
			}
			metrics.JobsFinished.WithLabelValues(string(o.Status)).Inc()
		}
	}
}

// record writes an outcome, retrying while the database is away (the lease
// will expire meanwhile and the rescuer stands in if it never comes back); a
// write the database refuses for good is not retried. It reports whether
// the write took effect.
func (w *Worker) record(what string, write func(context.Context) (bool, error)) bool {
	deadline := time.Now().Add(w.cfg.LeaseTTL)
	wait := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := write(ctx)
		cancel()
		switch {
		case err == nil:
			if !ok {
				w.log.Warn("outcome not recorded: the lease was gone", "write", what)
			}
			return ok
		case !errors.Is(err, jobs.ErrUnavailable):
			w.log.Error("outcome refused by the database", "write", what, "error", err)
			return false
		case time.Now().After(deadline):
			w.log.Error("outcome not recorded: database unavailable", "write", what, "error", err)
			return false
		}
		time.Sleep(wait) // retry pacing, not synchronisation
		wait = min(2*wait, 2*time.Second)
	}
}

// heartbeat renews the lease every Heartbeat, at once when asked, and every
// second while renewals fail (a database restart costs nothing). A timer set
// at 0.8 × LeaseTTL after the last renewal that succeeded cancels the run
// before its lease can expire: past that point the rescuer may hand the job
// to another worker, and this one must have stopped writing by then.
func (w *Worker) heartbeat(ctx context.Context, r *run, log *slog.Logger) {
	margin := w.cfg.LeaseTTL * 8 / 10
	expiring := time.NewTimer(margin - time.Since(r.job.claimedAt))
	defer expiring.Stop()
	next := time.NewTimer(w.cfg.Heartbeat)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expiring.C:
			log.Error("lease not renewed in time (database unreachable): stopping the job before the lease expires")
			r.lose(ErrLeaseLost)
			return
		case <-next.C:
		case <-r.check:
		}
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, w.cfg.Heartbeat)
		ok, err := w.store.Renew(rctx, r.job.ID, r.job.Token, w.cfg.LeaseTTL)
		cancel()
		switch {
		case err == nil && ok:
			// The lease now runs until at least sent + LeaseTTL.
			expiring.Reset(margin - time.Since(sent))
			next.Reset(w.cfg.Heartbeat)
		case err == nil:
			r.lose(w.whyGone(r.job.ID))
			return
		case ctx.Err() != nil:
			return
		default:
			log.Warn("lease renewal failed; retrying", "error", err)
			next.Reset(min(retryEvery, w.cfg.Heartbeat))
		}
	}
}

// whyGone tells a person's edit (status changed, row deleted) from a lease
// lost to the rescuer, for the handler's sake.
func (w *Worker) whyGone(id jobs.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	status, found, err := w.store.Status(ctx, id)
	if err == nil && (!found || status != jobs.StatusProcessing) {
		return ErrEdited
	}
	return ErrLeaseLost
}

func (w *Worker) safeRun(ctx context.Context, job Job, rep Reporter) (err error) {
	defer func() {
		if v := recover(); v != nil {
			w.log.Error("handler panicked", "job_id", job.ID, "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return w.handler.Run(ctx, job, rep)
}

// describe returns the sentence for the person and a short technical cause,
// both storable as text.
func describe(err error) (message, cause string) {
	message = GenericSentence
	var f *jobs.Failure
	if errors.As(err, &f) {
		message = f.Message
	}
	return storable(message, 1000), storable(err.Error(), 300)
}

// storable makes s text PostgreSQL accepts (valid UTF-8, no NUL byte) of at
// most n bytes, cut on a character boundary: a cut through a character, or a
// NUL from a tool's output, makes the whole write fail.
func storable(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
