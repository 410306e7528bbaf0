package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// execute runs one claimed job to its end and records the outcome.
func (w *Worker) execute(jobsCtx context.Context, job Job) {
	log := w.jobLog(job)
	runCtx, cancel := context.WithCancelCause(withJobAttrs(jobsCtx, job))
	defer cancel(nil)
	r := &run{job: job, cancel: cancel, renewNow: make(chan struct{}, 1)}
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
	err := w.safeRun(runCtx, job, rep, log)
	cancelled := context.Cause(runCtx)
	cancel(nil)
	loops.Wait()

	switch {
	case errors.Is(cancelled, ErrLost), errors.Is(err, ErrLost):
		w.endLost(job, cancelled, err, log)
	case errors.Is(cancelled, errShutdown) && err != nil, errors.Is(err, ErrHandBack):
		log.Info("job handed back", "reason", cmp.Or(cancelled, err))
		if w.endRun(job, "hand back", func(ctx context.Context) (bool, error) {
			return w.store.HandBack(ctx, job.ID, job.Token)
		}, log) {
			metrics.JobsFinished.WithLabelValues("handed_back").Inc()
		}
	default:
		o := Outcome{ID: job.ID, Token: job.Token, Status: jobs.StatusCompleted, Patch: rep.finalTimings()}
		if err != nil {
			o.Status = jobs.StatusError
			o.Message, o.Cause = sentenceAndCause(err)
			log.Warn("job failed", "error", err, "message", o.Message)
		}
		if w.endRun(job, string(o.Status), func(ctx context.Context) (bool, error) { return w.store.Finish(ctx, o) }, log) {
			if err == nil {
				log.Info("job completed")
			}
			metrics.JobsFinished.WithLabelValues(string(o.Status)).Inc()
		}
	}
}

// jobLog is the worker's logger for the lines about one claimed job.
func (w *Worker) jobLog(job Job) *slog.Logger {
	return w.log.With("job_id", job.ID, "attempt", job.Attempt, "worker", w.cfg.Name)
}

func (w *Worker) safeRun(ctx context.Context, job Job, rep Reporter, log *slog.Logger) (err error) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("handler panicked", "panic", v, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return w.handler.Run(ctx, job, rep)
}

// sentenceAndCause returns the sentence for the person and a short technical cause,
// both storable as text.
func sentenceAndCause(err error) (message, cause string) {
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
