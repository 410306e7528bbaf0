package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// Outcomes (queue.Outcome) that are ready while another is being written go to the database
// together, in one statement (a group commit): a lone outcome waits for
// nothing, and a worker finishing many jobs at once — a burst of uploads
// that all fail at the first step — pays one round trip, one statement and
// one commit for all of them instead of one each. Each row keeps its own
// fence: one whose run lost the job matches nothing, whatever the others do.
// (The fence's unqualified status and metadata are the job's: input names
// its status new_status.)
const finishJobs = `
WITH input AS (
  SELECT x.job_id, x.token, x.status AS new_status, x.error, x.cause, coalesce(x.patch, '{}'::jsonb) AS patch
  FROM jsonb_to_recordset($1::jsonb) AS x(job_id uuid, token text, status text, error text, cause text, patch jsonb)
), done AS (
  UPDATE public.jobs j
  SET status = i.new_status, error = i.error,
      completed_at = CASE WHEN i.new_status = 'completed' THEN now() ELSE j.completed_at END,
      metadata = public.runops_jsonb_merge(public.runops_close_attempt(j.metadata, i.token, i.new_status, i.cause), i.patch)
  FROM input i
  WHERE j.job_id = i.job_id` + fenceOn + `i.token` + WorkerMark + `
  RETURNING j.job_id, j.status, j.error, j.created_at, j.completed_at, j.metadata
)
SELECT done.job_id::text FROM done, LATERAL (SELECT public.runops_record_event(done.job_id, done.status, done.error,
  done.created_at, done.completed_at, done.metadata->'timings', $2::text[])) ev`

// maxBatch bounds the outcomes of one statement.
const maxBatch = 64

// outcome is one job's end, waiting for its statement.
type outcome struct {
	queue.Outcome
	deadline time.Time // its caller's, or 10 s from when it was queued
	done     chan outcomeResult
}

// MarshalJSON writes the row finishJobs reads.
func (o *outcome) MarshalJSON() ([]byte, error) {
	row := struct {
		JobID  jobs.ID        `json:"job_id"`
		Token  string         `json:"token"`
		Status jobs.Status    `json:"status"`
		Error  *string        `json:"error"`
		Cause  *string        `json:"cause"`
		Patch  map[string]any `json:"patch"`
	}{JobID: o.ID, Token: o.Token, Status: o.Status, Patch: o.Patch}
	if o.Status == jobs.StatusError {
		row.Error, row.Cause = &o.Message, &o.Cause
	}
	return json.Marshal(row)
}

type outcomeResult struct {
	ok  bool
	err error
}

// batcher writes outcomes: the first to arrive writes at once, with those
// that arrived meanwhile; who comes during a write goes with the next one.
type batcher struct {
	mu      sync.Mutex
	queue   []*outcome
	writing bool
}

// Finish records how a run ended (completed, or error with its sentence and
// cause), merging o.Patch into metadata, fenced by o.Token: false when the
// job is lost. It is written together with the outcomes ready at the same
// time, before ctx's deadline (10 s without one); once queued it is waited
// for. An outcome the database refuses for good (text it cannot store) is
// written again as o.Simplified(), down to the plainest.
func (s *QueueStore) Finish(ctx context.Context, o queue.Outcome) (bool, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	w := &outcome{Outcome: o, deadline: deadline, done: make(chan outcomeResult, 1)}
	b := &s.outcomes
	b.mu.Lock()
	b.queue = append(b.queue, w)
	if !b.writing {
		b.writing = true
		b.mu.Unlock()
		s.writeOutcomes()
	} else {
		b.mu.Unlock()
	}
	r := <-w.done
	return r.ok, r.err
}

// writeOutcomes writes one batch; if more came meanwhile, another goroutine
// writes them, so that the caller's own outcome is not held up by others'.
func (s *QueueStore) writeOutcomes() {
	b := &s.outcomes
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	b.mu.Unlock()

	s.writeBatch(batch)

	b.mu.Lock()
	if len(b.queue) == 0 {
		b.writing = false
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	go s.writeOutcomes()
}

// writeBatch runs one statement for the batch, before the earliest deadline
// in it, and answers each outcome. A refusal that is not an outage is the
// fault of one row: then each is written on its own, plainer each time it
// is refused, so that only that one loses what the database cannot store.
func (s *QueueStore) writeBatch(batch []*outcome) {
	deadline := batch[0].deadline
	for _, o := range batch[1:] {
		if o.deadline.Before(deadline) {
			deadline = o.deadline
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	matched, err := s.finishBatch(ctx, batch)
	if err != nil && !errors.Is(err, jobs.ErrUnavailable) {
		for _, o := range batch {
			o.done <- s.finishAlone(ctx, o)
		}
		return
	}
	for _, o := range batch {
		o.done <- outcomeResult{matched[o.ID], err}
	}
}

// finishAlone writes o in a statement of its own, plainer after each refusal.
func (s *QueueStore) finishAlone(ctx context.Context, o *outcome) outcomeResult {
	for {
		matched, err := s.finishBatch(ctx, []*outcome{o})
		if err == nil || errors.Is(err, jobs.ErrUnavailable) {
			return outcomeResult{matched[o.ID], err}
		}
		plainer, ok := o.Simplified()
		if !ok {
			return outcomeResult{false, err}
		}
		o = &outcome{Outcome: plainer}
	}
}

func (s *QueueStore) finishBatch(ctx context.Context, batch []*outcome) (map[jobs.ID]bool, error) {
	rows, err := json.Marshal(batch)
	if err != nil {
		return nil, err
	}
	res, err := s.pool.Query(ctx, finishJobs, rows, s.hooks)
	if err != nil {
		return nil, wrap("finish jobs", err)
	}
	held := map[jobs.ID]bool{}
	var id string
	_, err = pgx.ForEachRow(res, []any{&id}, func() error {
		held[jobs.ID(id)] = true
		return nil
	})
	return held, wrap("finish jobs", err)
}
