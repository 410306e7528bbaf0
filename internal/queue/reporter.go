package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// reporter writes a job's progress through fenced merges.
type reporter struct {
	store  Store
	job    Job
	cancel context.CancelCauseFunc
	// gone tells whether the run was stopped because its lease is gone or
	// about to expire: from then on nothing is written, whatever context a
	// handler passes.
	gone func() bool

	mu           sync.Mutex
	stage        string
	stageStarted time.Time
	lastProgress time.Time
}

func newReporter(store Store, job Job, runCtx context.Context, cancel context.CancelCauseFunc) *reporter {
	gone := func() bool { return errors.Is(context.Cause(runCtx), errLeaseGone) }
	return &reporter{store: store, job: job, cancel: cancel, gone: gone}
}

// write merges patch. While the database is unreachable it tries again every
// second, for as long as the run lasts: the heartbeat cancels ctx before the
// lease could expire, so an outage the lease rides out costs nothing.
func (r *reporter) write(ctx context.Context, patch map[string]any) error {
	for {
		if r.gone() {
			return ErrLeaseLost
		}
		ok, err := r.store.Merge(ctx, r.job.ID, r.job.Token, patch)
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			r.cancel(errLeaseGone)
			return ErrLeaseLost
		case !errors.Is(err, jobs.ErrUnavailable) || ctx.Err() != nil:
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(retryEvery):
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

func (r *reporter) Stage(ctx context.Context, name string) error {
	now := time.Now()
	r.mu.Lock()
	patch := map[string]any{"stage": name, "progress": 0}
	if t := r.closeStage(now); t != nil {
		patch["timings"] = t
	}
	r.stage, r.stageStarted, r.lastProgress = name, now, time.Time{}
	r.mu.Unlock()
	return r.write(ctx, patch)
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
	// that reads ffmpeg's output: never wait for the database here.
	if r.gone() {
		return ErrLeaseLost
	}
	ok, err := r.store.Merge(ctx, r.job.ID, r.job.Token, map[string]any{"progress": p})
	switch {
	case err == nil && !ok:
		r.cancel(errLeaseGone)
		return ErrLeaseLost
	case errors.Is(err, jobs.ErrUnavailable) && ctx.Err() == nil:
		return nil
	}
	return err
}

func (r *reporter) Merge(ctx context.Context, patch map[string]any) error {
	return r.write(ctx, patch)
}

// finalTimings is the completion patch: the last stage's duration.
func (r *reporter) finalTimings() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.closeStage(time.Now()); t != nil {
		return map[string]any{"timings": t}
	}
	return map[string]any{}
}
