package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// defaultStageDelay is how long a new stage may go unwritten (Config.StageDelay): it is written once it
// has lasted that long, or with the run's next write (a merge, progress, the
// outcome), whichever comes first. A stage that ends sooner — most of a job's
// quick stages, and every stage of a job that fails at once — costs no
// statement of its own; the status page, polled every 3 s, cannot tell.
const defaultStageDelay = 250 * time.Millisecond

// reporter writes a job's progress through fenced merges.
type reporter struct {
	store Store
	run   *run          // once it has lost the job, nothing is written, whatever context a handler passes
	delay time.Duration // Config.StageDelay
	armed chan struct{} // a stage is pending: flushStages writes it after the delay

	// wmu keeps the run's writes one at a time, so that they land in the
	// order they were made.
	wmu sync.Mutex

	mu           sync.Mutex
	stage        string
	stageStarted time.Time
	lastProgress time.Time
	pending      map[string]any // the stage not written yet, with the timings of the one before
	flushing     bool           // armed was told of the pending stage
	ended        bool           // the outcome took pending: nothing more is written
}

func newReporter(store Store, r *run, delay time.Duration) *reporter {
	return &reporter{store: store, run: r, delay: delay, armed: make(chan struct{}, 1)}
}

// lost tells whether the run has lost the job.
func (r *reporter) lost() bool { return r.run.lost() }

// loseReading stops the run: its write found the job lost, and the row is
// asked why (run.loseReading). What it returns is the run's cause, which
// the heartbeat may have set while the question was asked.
func (r *reporter) loseReading() error { return r.run.loseReading(r.store) }

// flushStages writes a pending stage once it has lasted the stage delay,
// until ctx — the run's — ends (then the outcome takes what is pending).
// Written from the run's context: a write that meets an outage waits for
// the database as a handler's own write would.
func (r *reporter) flushStages(ctx context.Context) {
	t := time.NewTimer(r.delay)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.armed:
			t.Reset(r.delay)
		case <-t.C:
			_ = r.writeWithPending(ctx, nil)
		}
	}
}

// takePending returns the patch not written yet merged with patch, and
// disarms the flush. The caller holds r.mu.
func (r *reporter) takePending(patch map[string]any) map[string]any {
	out := jobs.MergeMetadata(r.pending, patch)
	r.pending, r.flushing = nil, false
	return out
}

// writeWithPending writes patch with whatever stage is pending, in order
// with the run's other writes.
func (r *reporter) writeWithPending(ctx context.Context, patch map[string]any) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	pending, patch, ok := r.claimPending(patch)
	if !ok || len(patch) == 0 {
		return nil
	}
	err := r.write(ctx, patch)
	if err != nil {
		r.keep(pending)
	}
	return err
}

// claimPending takes the stage not written yet, and it merged with patch,
// for a write the caller (holding r.wmu) makes now; ok is false once the
// outcome has taken it.
func (r *reporter) claimPending(patch map[string]any) (pending, merged map[string]any, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return nil, nil, false
	}
	pending = r.pending
	return pending, r.takePending(patch), true
}

// keep puts a stage patch that could not be written back, for the next
// write (the outcome at the latest).
func (r *reporter) keep(pending map[string]any) {
	if pending == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = jobs.MergeMetadata(pending, r.pending)
	r.arm()
}

// arm has flushStages write the pending stage after the delay. The caller
// holds r.mu.
func (r *reporter) arm() {
	if !r.flushing && !r.ended && r.pending != nil {
		r.flushing = true
		select {
		case r.armed <- struct{}{}:
		default: // told already
		}
	}
}

// write merges patch. While the database is unreachable it tries again every
// second, for as long as the run lasts: the heartbeat cancels ctx before the
// lease could expire, so an outage the lease rides out costs nothing.
func (r *reporter) write(ctx context.Context, patch map[string]any) error {
	for {
		if r.lost() {
			return r.run.whyLost()
		}
		ok, err := r.store.Merge(ctx, r.run.job.ID, r.run.job.Token, patch)
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			return r.loseReading()
		case !errors.Is(err, jobs.ErrUnavailable) || ctx.Err() != nil:
			return err
		}
		if backoff.Sleep(ctx, whileUnreachable.Wait(1)) != nil {
			return err
		}
	}
}

// closeStage returns the timings entry of the stage that is ending, if any.
// The caller holds r.mu.
func (r *reporter) closeStage(now time.Time) map[string]any {
	if r.stage == "" {
		return nil
	}
	took := now.Sub(r.stageStarted)
	metrics.StageSeconds.WithLabelValues(r.stage).Observe(took.Seconds())
	return map[string]any{r.stage + "_ms": took.Milliseconds()}
}

// Stage starts a stage; it is written within the stage delay (see defaultStageDelay).
func (r *reporter) Stage(ctx context.Context, name string) error {
	if r.lost() {
		return r.run.whyLost()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	patch := map[string]any{"stage": name, "progress": 0}
	if t := r.closeStage(now); t != nil {
		patch["timings"] = t
	}
	r.stage, r.stageStarted, r.lastProgress = name, now, time.Time{}
	r.pending = jobs.MergeMetadata(r.pending, patch)
	r.arm()
	return nil
}

// progressEvery throttles progress writes (a poll every 3 s reads them).
const progressEvery = time.Second

func (r *reporter) Progress(ctx context.Context, p float64) error {
	p = min(max(p, 0), 1)
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.lastProgress) < progressEvery && p < 1 {
		r.mu.Unlock()
		return nil
	}
	r.lastProgress = now
	r.mu.Unlock()
	// Progress is a hint for the status page, written from the goroutine
	// that reads ffmpeg's output: one try, never a wait for the database
	// (but for readLossCause's read, once, should the try find the job lost).
	if r.lost() {
		return r.run.whyLost()
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	pending, patch, ok := r.claimPending(map[string]any{"progress": p})
	if !ok {
		return nil
	}
	ok, err := r.store.Merge(ctx, r.run.job.ID, r.run.job.Token, patch)
	switch {
	case err == nil && !ok:
		return r.loseReading()
	case err != nil:
		r.keep(pending) // the stage is still to be written
	}
	if errors.Is(err, jobs.ErrUnavailable) && ctx.Err() == nil {
		return nil
	}
	return err
}

// Merge writes patch, with the stage not written yet.
func (r *reporter) Merge(ctx context.Context, patch map[string]any) error {
	return r.writeWithPending(ctx, patch)
}

// finalTimings is the outcome's patch: the stage not written yet, if any,
// and the last stage's duration. Nothing is written by the run after it.
func (r *reporter) finalTimings() map[string]any {
	r.wmu.Lock() // a write in flight lands before the outcome
	defer r.wmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	patch := map[string]any{}
	if t := r.closeStage(time.Now()); t != nil {
		patch["timings"] = t
	}
	patch = r.takePending(patch)
	r.ended = true
	return patch
}
