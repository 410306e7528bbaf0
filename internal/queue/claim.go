package queue

import (
	"context"
	"sync"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/metrics"
)

// claimLoop claims jobs while a slot is free and the handler's gate is
// open, and runs each (with jobsCtx, which outlives ctx by the shutdown
// grace) on wg. It waits for a notification, a free slot or the sweep, and
// backs off while claims fail. It returns once ctx is done; a claim that
// was on its way then is handed straight back.
func (w *Worker) claimLoop(ctx, jobsCtx context.Context, wg *sync.WaitGroup) {
	slots := make(chan struct{}, w.cfg.Concurrency)
	failures := backoff.Backoff{Policy: claimFailures}
	paused := false
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if ctx.Err() != nil { // both were ready: shutting down wins
			return
		}
		if err := w.gateErr(); err != nil {
			if !paused {
				w.log.Error("not claiming jobs until this clears", "worker", w.cfg.Name, "reason", err)
			}
			paused = true
			<-slots
			if !w.wait(ctx, backoff.Spread(w.cfg.Sweep, sweepSpread)) {
				return
			}
			continue
		}
		if paused {
			w.log.Info("claiming jobs again", "worker", w.cfg.Name)
			paused = false
		}
		// One statement claims a job for every slot free now.
		free := 1 + takeFree(slots)
		claimed, err := w.claim(ctx, free)
		for range free - len(claimed) {
			<-slots
		}
		if len(claimed) == 0 {
			if ctx.Err() != nil {
				return
			}
			wait := backoff.Spread(w.cfg.Sweep, sweepSpread)
			if err != nil {
				w.log.Warn("claim failed", "worker", w.cfg.Name, "error", err)
				pause, _ := failures.Next() // claimFailures never gives up
				wait = min(wait, pause)
			}
			if !w.wait(ctx, wait) {
				return
			}
			continue
		}
		failures.Reset()
		// The gate was asked before the claim; a job that ran meanwhile may
		// have closed it (a full disk), and handed its job back for this
		// very claim to take. Shutdown may have begun too. Either way the
		// claimed jobs go straight back (not counted).
		if ctx.Err() != nil || w.gateErr() != nil {
			for _, job := range claimed {
				w.writeOutcome(w.jobLog(job), "hand back", func(c context.Context) (bool, error) { return w.store.HandBack(c, job.ID, job.Token) })
				<-slots
			}
			if ctx.Err() != nil {
				return
			}
			continue
		}
		for _, job := range claimed {
			wg.Go(func() {
				w.execute(jobsCtx, job)
				<-slots
				// A job left queued while slots were free was held back by
				// the store's claim (its owner at RUNOPS_OWNER_CONCURRENCY):
				// the slot this job frees may be the one it waits for.
				w.Wake()
			})
		}
	}
}

// takeFree takes every slot free now, without waiting, and says how many.
func takeFree(slots chan struct{}) int {
	for n := 0; ; n++ {
		select {
		case slots <- struct{}{}:
		default:
			return n
		}
	}
}

// wait waits for a wake-up (a notification, a reconnect) or d; false once
// ctx is done.
func (w *Worker) wait(ctx context.Context, d time.Duration) bool {
	select {
	case <-w.wake:
	case <-time.After(d):
	case <-ctx.Done():
		return false
	}
	return true
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
