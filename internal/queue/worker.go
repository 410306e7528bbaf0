package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
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
	// SharedRescue: the rescue of expired leases is the fleet's duty, which
	// one worker holds at a time: Run does not start it, the caller runs
	// Housekeep. Unset, the worker rescues on its own every sweep.
	SharedRescue bool
}

// The engine's defaults, which the configuration (RUNOPS_LEASE_TTL and the
// rest, docs/operations.md) and the tenures of internal/postgres (a listener
// slot, the housekeeping duty) use too: each is written here only.
const (
	DefaultLeaseTTL      = 30 * time.Second
	DefaultSweep         = 15 * time.Second
	DefaultMaxAttempts   = 3
	DefaultShutdownGrace = 30 * time.Second
)

// DefaultHeartbeat renews a lease of ttl three times before it expires.
func DefaultHeartbeat(ttl time.Duration) time.Duration { return ttl / 3 }

// StopMargin is how long after its last renewal a holder may go on using
// what it holds for ttl (0.8 × ttl): then it stops, before the database can
// give it to another.
func StopMargin(ttl time.Duration) time.Duration { return ttl * 8 / 10 }

// MaxHeartbeat is the longest heartbeat a lease of ttl may have: half the
// stop margin (0.4 × ttl), so that after a renewal the next one, and its
// retries a second apart when it fails, go out well before the holder stops
// itself. A longer one sends its first renewal so late that every long run
// stops itself.
func MaxHeartbeat(ttl time.Duration) time.Duration { return StopMargin(ttl) / 2 }

// defaults fills what is unset. A heartbeat longer than MaxHeartbeat is a
// caller's mistake (the configuration refuses it with a
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
	if c.Heartbeat > MaxHeartbeat(c.LeaseTTL) {
		panic(fmt.Sprintf("queue: the heartbeat (%s) must be at most %s for a lease of %s", c.Heartbeat, MaxHeartbeat(c.LeaseTTL), c.LeaseTTL))
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

// Run claims and runs jobs until ctx is done; then it stops claiming, lets
// running jobs finish within the shutdown grace, hands the rest back to the
// queue and returns.
func (w *Worker) Run(ctx context.Context) error {
	// Jobs outlive ctx by up to the grace period.
	jobsCtx, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(nil)
	var wg sync.WaitGroup
	if !w.cfg.SharedRescue {
		wg.Go(func() { w.Rescue(ctx) })
	}
	// Edits are watched for as long as jobs run: through the shutdown grace.
	edits := make(chan struct{})
	go func() { w.watchEdits(jobsCtx); close(edits) }()
	w.sweepWorkDirs(ctx)
	w.log.Info("worker started", "worker", w.cfg.Name, "concurrency", w.cfg.Concurrency)
	w.claimLoop(ctx, jobsCtx, &wg)
	w.drain(&wg, stopJobs)
	stopJobs(nil)
	<-edits
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
				w.writeOutcome(w.jobLog(r.job), "hand back", func(ctx context.Context) (bool, error) {
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
