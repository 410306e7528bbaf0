package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// run is one claimed job while it runs: how to stop it, how to ask its
// heartbeat for a check, and whether it has lost the job.
type run struct {
	job      Job
	cancel   context.CancelCauseFunc
	renewNow chan struct{}         // ask the heartbeat to check the lease now
	why      atomic.Pointer[error] // why it lost the job (ErrLost or ErrCancelled), once it has
}

// lost tells whether the job is no longer this run's.
func (r *run) lost() bool { return r.why.Load() != nil }

// lose stops the run for good: the job is no longer its own (cause is
// ErrLost or ErrCancelled), and nothing more is written for it.
func (r *run) lose(cause error) {
	r.why.CompareAndSwap(nil, &cause)
	r.cancel(r.whyLost()) // the first cause, whichever lose cancels first
}

// loseReading stops the run, asking the row why (readLossCause: a person's
// edit is ErrCancelled whichever statement of the run meets it first),
// unless it is stopped already: then it keeps its cause and the row is not
// read again. It returns the run's cause.
func (r *run) loseReading(store Store) error {
	if !r.lost() {
		r.lose(readLossCause(store, r.job.ID))
	}
	return r.whyLost()
}

// whyLost is the cause lose recorded first: why the run lost the job
// (ErrLost until it is known).
func (r *run) whyLost() error {
	if why := r.why.Load(); why != nil {
		return *why
	}
	return ErrLost
}

// endLost ends a run that lost its job — someone else holds it, or a
// person changed it — once its handler has returned (execute, endRun),
// given the run's cause and the handler's error: it
// writes nothing of the run and drops its lease, which closes the attempt
// as cancelled when a person took the job out of processing
// (Store.DropLease). An attempt is counted (runops_jobs_finished_total)
// where its outcome is stored: cancelled here, when the drop closed it;
// lost by the rescue that closes an expired lease, which every lost run's
// lease comes to (a run stopped by its timer, or whose job the rescue
// already gave to another claim).
func (w *Worker) endLost(job Job, cancelled, err error, log *slog.Logger) {
	// Why: the run's cause, or, when the run was not stopped for it, the
	// handler's own statement that met the loss first (an OutputLock's).
	why := cancelled
	if !errors.Is(why, ErrLost) {
		why = err
	}
	log.Info("job stopped: lost or cancelled", "error", why)
	closed := false
	w.writeOutcome(log, "drop", func(ctx context.Context) (bool, error) {
		var err error
		closed, err = w.store.DropLease(ctx, job.ID, job.Token)
		return true, err // matching nothing is no loss: the rescue closed it, or will
	})
	if closed {
		metrics.JobsFinished.WithLabelValues("cancelled").Inc()
	}
}

// writeOutcome writes an outcome, retrying while the database is away (the lease
// will expire meanwhile and the rescuer stands in if it never comes back); a
// write the database refuses for good is not retried. It reports whether
// the write took effect, and whether it matched nothing: the job was lost.
// Its lines go to log, the job's.
func (w *Worker) writeOutcome(log *slog.Logger, what string, write func(context.Context) (bool, error)) (ok, lost bool) {
	deadline := time.Now().Add(w.cfg.LeaseTTL)
	failures := backoff.Backoff{Policy: outcomeFailures}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := write(ctx)
		cancel()
		switch {
		case err == nil:
			if !ok {
				log.Warn("outcome not recorded: the job was lost", "write", what)
			}
			return ok, !ok
		case !errors.Is(err, jobs.ErrUnavailable):
			log.Error("outcome refused by the database", "write", what, "error", err)
			return false, false
		case time.Now().After(deadline):
			log.Error("outcome not recorded: database unavailable", "write", what, "error", err)
			return false, false
		}
		pause, _ := failures.Next() // the deadline, not the tries, gives up
		time.Sleep(pause)           // retry pacing, not synchronisation
	}
}

// endRun writes the run's outcome (writeOutcome) and reports whether it
// was recorded. One that matches nothing (the job lost between the
// handler's end and its write: a person's re-queue) ends the run as a lost
// run does, so that a re-queued job need not wait out the lease.
func (w *Worker) endRun(job Job, what string, write func(context.Context) (bool, error), log *slog.Logger) bool {
	ok, lost := w.writeOutcome(log, what, write)
	if lost {
		w.endLost(job, nil, readLossCause(w.store, job.ID), log)
	}
	return ok
}

// heartbeat renews the lease every Heartbeat, the first a Heartbeat after
// the claim was sent (a claim that answered late is renewed at once), at
// once when asked, and every second while renewals fail (a database restart
// costs nothing). A timer set
// at 0.8 × LeaseTTL after the last renewal that succeeded cancels the run
// before its lease can expire: past that point the rescuer may hand the job
// to another worker, and this one must have stopped writing by then.
func (w *Worker) heartbeat(ctx context.Context, r *run, log *slog.Logger) {
	margin := StopMargin(w.cfg.LeaseTTL)
	stopAt := r.job.claimedAt.Add(margin)
	stopTimer := time.NewTimer(time.Until(stopAt))
	defer stopTimer.Stop()
	next := time.NewTimer(time.Until(r.job.claimedAt.Add(w.cfg.Heartbeat)))
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stopTimer.C:
			log.Error("lease not renewed in time (database unreachable): the job is lost, and the run stops before another worker can be given it")
			r.lose(ErrLost)
			return
		case <-next.C:
		case <-r.renewNow:
		}
		sent := time.Now()
		// A renewal that hangs is given up at the stop, not after it: the
		// timer cannot fire while it waits.
		rctx, cancel := context.WithTimeout(ctx, min(w.cfg.Heartbeat, time.Until(stopAt)))
		ok, err := w.store.Renew(rctx, r.job.ID, r.job.Token, w.cfg.LeaseTTL)
		cancel()
		switch {
		case err == nil && ok:
			// The lease now runs until at least sent + LeaseTTL.
			stopAt = sent.Add(margin)
			stopTimer.Reset(time.Until(stopAt))
			next.Reset(w.cfg.Heartbeat)
		case err == nil:
			r.loseReading(w.store)
			return
		case ctx.Err() != nil:
			return
		default:
			log.Warn("lease renewal failed; retrying", "error", err)
			next.Reset(min(whileUnreachable.Wait(1), w.cfg.Heartbeat))
		}
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
		case r.renewNow <- struct{}{}:
		default:
		}
		return
	}
	if status == jobs.StatusQueued {
		w.Wake()
	}
}

// watchEdits asks, every Sweep (never jittered longer) and in one query for
// all the leases this worker holds, whether any of its jobs was edited,
// and stops the runs of those it no longer holds: a polling worker, or a
// listening one whose notification was lost, learns of a person's edit
// within a sweep, not at its next heartbeat.
func (w *Worker) watchEdits(ctx context.Context) {
	tick := time.NewTicker(w.cfg.Sweep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		w.mu.Lock()
		leases := make(map[jobs.ID]string, len(w.held))
		runs := make(map[jobs.ID]*run, len(w.held))
		for id, r := range w.held {
			leases[id], runs[id] = r.job.Token, r
		}
		w.mu.Unlock()
		if len(leases) == 0 {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, w.cfg.Sweep)
		lost, err := w.store.Lost(qctx, leases)
		cancel()
		if err != nil {
			continue // the heartbeats ask too, and time the leases out
		}
		for _, id := range lost {
			if r := runs[id]; r != nil {
				r.loseReading(w.store)
			}
		}
	}
}

// Losing the job. ErrLost is both why a run's context is cancelled
// (context.Cause) and what its Reporter's writes return, once the job is no
// longer this run's: another worker was given it, its lease could not be
// kept, or a person edited it — ErrCancelled, which is ErrLost too, and
// the one distinction a handler branches on (the work is abandoned for
// good: it may clean up remote state).
var (
	ErrLost      = errors.New("job lost: it is no longer this run's")
	ErrCancelled = fmt.Errorf("%s: %w", CancelledCause, ErrLost)
)

// CancelledCause begins ErrCancelled's text, and is the error stored with an
// attempt closed as cancelled (Store.DropLease): written once, here.
const CancelledCause = "stopped by a change to the job"

// LossCause is why a run lost its job, from the job's status as it is now
// (found false: the row is gone): no longer processing — a person changed
// the status or deleted the row — is ErrCancelled; still processing (the
// lease expired and another run claimed the job) is ErrLost. The status
// alone cannot tell a rescue from a person's re-queue: a job the rescue put
// back to queued or ended reads as ErrCancelled here, and the run is logged
// as cancelled; the stored attempt, which the rescue closed, says lost (and
// is counted so, by the rescue), and the run's drop of its lease then
// matches nothing.
func LossCause(status jobs.Status, found bool) error {
	if !found || status != jobs.StatusProcessing {
		return ErrCancelled
	}
	return ErrLost
}

// readLossCause reads the job's status and tells why the run lost it
// (LossCause). A read that fails is tried again, three tries at most within
// 5 s in all (causeReads): a moment's outage does not make a person's edit a
// lost lease, and a slow read has the whole 5 s. ErrLost when the database
// still cannot say.
func readLossCause(store Store, id jobs.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tries := backoff.Backoff{Policy: causeReads}
	for {
		status, found, err := store.Status(ctx, id)
		if err == nil {
			return LossCause(status, found)
		}
		if wait, again := tries.Next(); !again || backoff.Sleep(ctx, wait) != nil {
			return ErrLost
		}
	}
}
