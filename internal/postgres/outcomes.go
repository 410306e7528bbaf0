package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/jobs"
)

// Outcomes that are ready while another is being written go to the database
// together, in one statement (a group commit): a lone outcome waits for
// nothing, and a worker finishing many jobs at once — a burst of uploads
// that all fail at the first step — pays one round trip, one statement and
// one commit for all of them instead of one each. Each row keeps its own
// fence: one that lost its lease matches nothing, whatever the others do.
const finishJobs = `
WITH input AS (
  SELECT x.job_id, x.token, x.status, x.error, x.cause, coalesce(x.patch, '{}'::jsonb) AS patch
  FROM jsonb_to_recordset($1::jsonb) AS x(job_id uuid, token text, status text, error text, cause text, patch jsonb)
), done AS (
  UPDATE public.jobs j
  SET status = i.status, error = i.error,
      completed_at = CASE WHEN i.status = 'completed' THEN now() ELSE j.completed_at END,
      metadata = public.runops_jsonb_merge(public.runops_close_attempt(j.metadata, i.token, i.status, i.cause), i.patch)
  FROM input i
  WHERE j.job_id = i.job_id AND j.status = 'processing' AND j.metadata->'lease'->>'token' = i.token` + asWorker + `
  RETURNING j.job_id, j.status, j.error, j.created_at, j.completed_at, j.metadata
)
SELECT done.job_id::text FROM done, LATERAL (SELECT public.runops_record_event(done.job_id, done.status, done.error,
  done.created_at, done.completed_at, done.metadata->'timings', $2::text[])) ev`

// maxBatch bounds the outcomes of one statement.
const maxBatch = 64

// outcome is one job's end, waiting for its statement.
type outcome struct {
	JobID  jobs.ID                             `json:"job_id"`
	Token  string                              `json:"token"`
	Status string                              `json:"status"`
	Error  *string                             `json:"error"`
	Cause  *string                             `json:"cause"`
	Patch  map[string]any                      `json:"patch"`
	single func(context.Context) (bool, error) // the same outcome as a statement of its own

	done chan outcomeResult
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

// finish writes o (with whatever else is waiting) and tells whether its row
// matched.
func (s *QueueStore) finish(o *outcome) (bool, error) {
	o.done = make(chan outcomeResult, 1)
	b := &s.outcomes
	b.mu.Lock()
	b.queue = append(b.queue, o)
	if !b.writing {
		b.writing = true
		b.mu.Unlock()
		s.writeOutcomes()
	} else {
		b.mu.Unlock()
	}
	r := <-o.done
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

// writeBatch runs one statement for the batch and answers each outcome. A
// refusal that is not an outage (a value the database cannot store) is the
// fault of one row: then each is written on its own, so that only that one
// sees the refusal.
func (s *QueueStore) writeBatch(batch []*outcome) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) == 1 {
		ok, err := batch[0].single(ctx)
		batch[0].done <- outcomeResult{ok, err}
		return
	}
	rows, err := json.Marshal(batch)
	var matched map[jobs.ID]bool
	if err == nil {
		matched, err = s.finishBatch(ctx, rows)
	}
	if err != nil && !errors.Is(err, jobs.ErrUnavailable) {
		for _, o := range batch {
			ok, err := o.single(ctx)
			o.done <- outcomeResult{ok, err}
		}
		return
	}
	for _, o := range batch {
		o.done <- outcomeResult{matched[o.JobID], err}
	}
}

func (s *QueueStore) finishBatch(ctx context.Context, rows []byte) (map[jobs.ID]bool, error) {
	res, err := s.pool.Query(ctx, finishJobs, rows, s.hooks)
	if err != nil {
		return nil, wrap("finish jobs", err)
	}
	matched := map[jobs.ID]bool{}
	var id string
	_, err = pgx.ForEachRow(res, []any{&id}, func() error {
		matched[jobs.ID(id)] = true
		return nil
	})
	return matched, wrap("finish jobs", err)
}
