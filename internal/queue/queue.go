// Package queue is the job engine: it claims queued jobs under leases, keeps
// the leases alive, runs a Handler for each, and records how each run ended.
// Postgres is the only coordination between processes, so the engine is
// correct with any number of workers. It knows nothing of video, Gemini or
// SQL: the store and the handler are interfaces, wired by cmd.
package queue

import (
	"context"
	"errors"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
)

// Store is what the engine needs of the jobs table. Every write but Claim and
// Rescue is fenced by the lease token and reports false when the job is lost.
// Claims and outcomes (processing → completed/error) notify nobody; a job
// going back to the queue does.
type Store interface {
	// Claim takes up to n claimable queued jobs in claim order (priority,
	// then fairness between owners, then age; docs/lifecycle.md), each
	// under a lease token of its own, in one statement.
	Claim(ctx context.Context, worker string, n int, ttl time.Duration) ([]Claimed, error)
	Renew(ctx context.Context, id jobs.ID, token string, ttl time.Duration) (bool, error)
	Merge(ctx context.Context, id jobs.ID, token string, patch map[string]any) (bool, error)
	// Finish records how a run ended. A store that cannot write an outcome
	// as it is (text the database refuses) writes o.Simplified() instead.
	Finish(ctx context.Context, o Outcome) (bool, error)
	HandBack(ctx context.Context, id jobs.ID, token string) (bool, error)
	DropLease(ctx context.Context, id jobs.ID, token string) (closed bool, err error)
	Rescue(ctx context.Context, maxAttempts int, message string) (requeued, failed []Rescued, err error)
	// Repair puts right what the store keeps of the queue beside the jobs
	// (the claim order's tables: rows of jobs no longer queued, queued jobs
	// written with its triggers off, owners' counts), and says what it
	// changed. Run with every rescue.
	Repair(ctx context.Context) (Repaired, error)
	// Status reads the job's status; found is false when the row is gone.
	Status(ctx context.Context, id jobs.ID) (status jobs.Status, found bool, err error)
	// Holds tells whether the claim with token still holds the job: it is
	// processing under that lease, and the lease has not expired.
	Holds(ctx context.Context, id jobs.ID, token string) (bool, error)
	// Lost tells, in one statement, which of the jobs held under leases
	// (job → token) are lost: a person changed or deleted it (cancelled),
	// or it is another claim's.
	Lost(ctx context.Context, leases map[jobs.ID]string) ([]jobs.ID, error)
}

// Rescued is a job a rescue took from an expired lease, with the attempt
// that lease was.
type Rescued struct {
	ID      jobs.ID
	Attempt int
}

// Repaired is what a Repair changed: rows of the queue's table removed and
// added (or rewritten), and owners whose counts were recounted.
type Repaired struct{ Removed, Added, Recounted int }

// Events is what a worker hears from the database, and what the listener
// (postgres.Listener) is given: Notify for every notification of a changed,
// inserted or deleted row — a job the worker holds is checked at once, so a
// person's edit cancels its run — and Wake after every (re)connect, when what
// was queued meanwhile must be found by a scan. *Worker implements it.
type Events interface {
	Notify(id jobs.ID, status jobs.Status)
	Wake()
}

var _ Events = (*Worker)(nil)

// Claimed is a job a claim took, with the lease token it holds it by.
type Claimed struct {
	jobs.Job
	Token    string
	QueuedAt time.Time // when it last became queued (its updated_at then)
}

// Outcome is how a run ended, as the store records it.
type Outcome struct {
	ID      jobs.ID
	Token   string         // the lease it was run under: the write is fenced by it
	Status  jobs.Status    // jobs.StatusCompleted or jobs.StatusError
	Message string         // an error's sentence for the person
	Cause   string         // an error's short technical cause, kept in the attempt
	Patch   map[string]any // merged into metadata (the last stage's timings)
}

// GenericSentence is the sentence of a failure that carries none.
const GenericSentence = "Something went wrong while processing the video; please try again, and contact support if it keeps failing."

// Simplified is the outcome with less in it, for a database that refused it
// for good: first without its patch and cause, then, for an error, with
// GenericSentence. ok is false when there is nothing plainer to write.
func (o Outcome) Simplified() (p Outcome, ok bool) {
	switch {
	case o.Patch != nil || o.Cause != "":
		o.Patch, o.Cause = nil, ""
		return o, true
	case o.Status == jobs.StatusError && o.Message != GenericSentence:
		o.Message = GenericSentence
		return o, true
	}
	return o, false
}

// Job is a claimed job.
type Job struct {
	jobs.Job
	Token   string // the lease token of this claim
	Attempt int    // 1 for the first claim of this run
	// TempDir is private to this claim and removed when the run ends. It is
	// not created: a handler that writes there makes it (os.MkdirAll), so
	// that a run with nothing to write touches no disk.
	TempDir string

	claimedAt time.Time // when the claim was sent: the lease runs from then at the latest
}

// Handler does the work of one job. Its ctx is cancelled when the lease is
// lost, a person edits the row, or the shutdown grace period ends; it must
// then stop (kill child processes, cancel requests) and return. A returned
// *jobs.Failure carries the sentence shown to the person; any other error is
// reported with a generic sentence.
type Handler interface {
	Run(ctx context.Context, job Job, r Reporter) error
}

// Gate is implemented by a Handler that can be unable to take work for a
// while (its disk is full): the worker asks Ready before every claim and
// claims nothing while it returns an error.
type Gate interface {
	Ready() error
}

// ErrHandBack, wrapped in a handler's error, says the job is fine but this
// worker cannot run it now (no disk space): the job goes back to the queue at
// once, the attempt not counted, for another worker or for later.
var ErrHandBack = errors.New("this worker cannot run the job now")

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job Job, r Reporter) error

// Run calls f.
func (f HandlerFunc) Run(ctx context.Context, job Job, r Reporter) error { return f(ctx, job, r) }

// Reporter writes progress into the job's metadata. Every write is fenced:
// ErrLost means the job is no longer this worker's (its ctx is cancelled too).
type Reporter interface {
	// Stage starts a named stage (progress back to 0; the previous stage's
	// duration goes to metadata.timings).
	Stage(ctx context.Context, name string) error
	// Progress reports 0–1 within the stage; writes are throttled.
	Progress(ctx context.Context, p float64) error
	// Merge deep-merges patch into metadata.
	Merge(ctx context.Context, patch map[string]any) error
}

// The waits of the engine's retry loops (internal/backoff).
var (
	// whileUnreachable paces writes retried while the database is
	// unreachable (a stage's write, a lease renewal): every second, for as
	// long as the lease allows.
	whileUnreachable = backoff.Policy{First: time.Second, Max: time.Second}
	// claimFailures paces claims that fail: from 100 ms, doubling, up to
	// 5 s (the sweep, if shorter, still wins).
	claimFailures = backoff.Policy{First: 100 * time.Millisecond, Max: 5 * time.Second}
	// causeReads paces the reads of why a run lost its job that fail:
	// 200 ms, then 400 ms: three tries in all, within readLossCause's 5 s.
	causeReads = backoff.Policy{First: 200 * time.Millisecond, Tries: 3}
	// outcomeFailures paces an outcome's write (completed, error, a hand
	// back): from 100 ms, doubling, up to 2 s, within the lease.
	outcomeFailures = backoff.Policy{First: 100 * time.Millisecond, Max: 2 * time.Second}
)

// sweepSpread spreads periodic work of many workers (the sweep's claim,
// the rescue) over ±20 %.
const sweepSpread = 0.2

// errShutdown ends the runs still going when the shutdown grace is over.
// Shutdown is not losing the job (ErrLost): the job is handed back.
var errShutdown = errors.New("shutdown grace period over")
