package queue

import (
	"context"
	"sync"
	"time"
)

// reporter writes a job's progress through fenced merges.
type reporter struct {
	store  Store
	job    Job
	cancel context.CancelCauseFunc

	mu           sync.Mutex
	stage        string
	stageStarted time.Time
	lastProgress time.Time
}

func newReporter(store Store, job Job, cancel context.CancelCauseFunc) *reporter {
	return &reporter{store: store, job: job, cancel: cancel}
}

func (r *reporter) write(ctx context.Context, patch map[string]any) error {
	ok, err := r.store.Merge(ctx, r.job.ID, r.job.Token, patch)
	if err != nil {
		return err
	}
	if !ok {
		r.cancel(errLeaseGone)
		return ErrLeaseLost
	}
	return nil
}

// closeStage returns the timings entry of the stage that is ending, if any.
// The caller holds r.mu.
func (r *reporter) closeStage(now time.Time) map[string]any {
	if r.stage == "" {
		return nil
	}
	return map[string]any{r.stage + "_ms": now.Sub(r.stageStarted).Milliseconds()}
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
	return r.write(ctx, map[string]any{"progress": p})
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
