package queue

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// Duty is work that one worker of a fleet does for all of them, held for
// a tenure it renews (postgres.Duty): Run calls work while this worker
// holds it, until ctx ends.
type Duty interface {
	Run(ctx context.Context, work func(context.Context))
}

// Housekeep does the fleet's housekeeping while this worker holds duty —
// the rescue of expired leases (Rescue) and the chores given (the retention
// janitor) — until ctx ends: one worker of the fleet does it for all, and
// another takes the duty when its holder stops or dies. A worker given
// SharedRescue is run so; alone, Run starts the rescue itself.
func (w *Worker) Housekeep(ctx context.Context, duty Duty, chores ...func(context.Context)) {
	duty.Run(ctx, func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Go(func() { w.Rescue(ctx) })
		for _, chore := range chores {
			wg.Go(func() { chore(ctx) })
		}
		wg.Wait()
	})
}

// Rescue returns expired leases to the queue every sweep (jittered),
// counted as an attempt; a job claimed MaxAttempts times ends in error
// instead; and has the store repair what it keeps of the queue
// (Store.Repair). It stops with ctx.
func (w *Worker) Rescue(ctx context.Context) {
	msg := fmt.Sprintf("Processing was interrupted %d times; please try again later, and contact support if it keeps happening.", w.cfg.MaxAttempts)
	for {
		if backoff.Sleep(ctx, backoff.Spread(w.cfg.Sweep, sweepSpread)) != nil {
			return
		}
		requeued, failed, err := w.store.Rescue(ctx, w.cfg.MaxAttempts, msg)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("rescue failed", "error", err)
			}
			continue
		}
		metrics.JobsFinished.WithLabelValues("lost").Add(float64(len(requeued) + len(failed)))
		for _, r := range requeued {
			w.log.Warn("lease expired: job back in the queue", "job_id", r.ID, "attempt", r.Attempt)
		}
		for _, r := range failed {
			w.log.Error("lease expired too often: job failed", "job_id", r.ID, "attempt", r.Attempt, "max_attempts", w.cfg.MaxAttempts)
		}
		fixed, err := w.store.Repair(ctx)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.log.Warn("queue repair failed", "error", err)
			}
		case fixed != Repaired{}:
			w.log.Warn("the claim order's tables were out of step with the jobs: repaired",
				"removed", fixed.Removed, "added", fixed.Added, "owners_recounted", fixed.Recounted)
		}
		if len(requeued) > 0 || fixed.Added > 0 || fixed.Recounted > 0 {
			w.Wake()
		}
	}
}

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
