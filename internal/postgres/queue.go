package postgres

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// The queue's SQL. Every write of a worker is fenced: it matches only while
// the row is processing under that worker's lease token, so a worker that
// lost the job (to an expired lease or a person's edit) can never overwrite anything.
const (
	fence = fenceOn + `$2`

	// fenceOn is the fence before its token: a statement whose token is not
	// $2 (finishJobs, one token a row) ends it with its own.
	fenceOn = ` AND status = 'processing' AND metadata->'lease'->>'token' = `

	// WorkerMark marks the statement's transaction as the worker's, so that the
	// notify trigger stays silent for its claims and outcomes (the
	// quiet_worker_writes migration), and so that it may change a live lease,
	// which a person's edit cannot (the leases_outlive_edits migration). It is
	// evaluated for a row before that row's BEFORE triggers fire, and before
	// any AFTER trigger, which fire at the end of the statement.
	WorkerMark = ` AND set_config('runops.writer', 'worker', true) IS NOT NULL`

	// Up to $3 claimable jobs, each with a lease token of its own, none of an
	// owner with $4 jobs processing ($4 NULL: no cap): by priority
	// (metadata.priority, lower first), then the owner with the fewest jobs
	// processing, then the owner whose latest claim is oldest, then the
	// oldest job (runops_claim, migration …_claim_owner_first.sql;
	// docs/lifecycle.md, "The order of claims").
	claimJobs = `SELECT job_id, status, created_at, updated_at, completed_at, error, metadata, queued_at
FROM public.runops_claim($1, $2, $3, $4)`

	renewLease = `UPDATE public.jobs
SET metadata = jsonb_set(metadata, '{lease,expires_at}', to_jsonb(now() + make_interval(secs => $3)))
WHERE job_id = $1` + fence + WorkerMark

	// A metadata write (stage, progress, what a stage found) does not wait
	// for its WAL to reach the disk: lost in a database crash, it is written
	// again by the next attempt, and nothing that decides who holds a job is
	// in it. Claims, renewals and outcomes stay synchronous.
	mergeMetadata = `UPDATE public.jobs
SET metadata = public.runops_jsonb_merge(coalesce(metadata, '{}'::jsonb), $3)
WHERE job_id = $1` + fence + ` AND set_config('synchronous_commit', 'off', true) IS NOT NULL`

	// A shutdown hand-back is not an attempt: the count goes back down.
	handBackJob = `UPDATE public.jobs
SET status = 'queued',
    metadata = public.runops_close_attempt(metadata, $2, 'handed_back', NULL)
               || jsonb_build_object('attempt', greatest(public.runops_attempt(metadata) - 1, 0))
WHERE job_id = $1` + fence + WorkerMark

	// After a person re-queued a job its holder drops its lease, so that
	// the next claim need not wait for it to expire, and says so: the
	// metadata-only update sends no notification of its own. The attempt is
	// closed as cancelled with the cause $3 (queue.CancelledCause).
	dropLease = `
WITH r AS (
  UPDATE public.jobs
  SET metadata = public.runops_close_attempt(metadata, $2, 'cancelled', $3)
  WHERE job_id = $1 AND status <> 'processing' AND metadata->'lease'->>'token' = $2` + WorkerMark + `
  RETURNING job_id, status
)
SELECT count(*) > 0 FROM r LEFT JOIN LATERAL (
  SELECT pg_notify('runops_jobs', json_build_object('job_id', r.job_id, 'op', 'UPDATE', 'status', r.status)::text)
  WHERE r.status = 'queued'
) told ON true`

	// Puts the claim's tables right (rows of jobs no longer queued, queued
	// jobs written with triggers off, owners' counts): with every rescue.
	repairQueue = `SELECT removed, added, recounted FROM public.runops_claim_repair()`

	// Whether the claim ($2) still holds the job (QueueStore.Holds): a
	// read, no lock.
	selectHolds = `SELECT EXISTS (SELECT 1 FROM public.jobs` + heldJob + `)`

	// The same check inside the SOP lock's transaction (WithSOPLockWhileHolding,
	// soplock.go), which every write of the SOP and the screenshots runs
	// in: it locks the row too. The KEY SHARE row lock keeps the row from
	// being claimed or rescued (both lock FOR UPDATE SKIP LOCKED) until the
	// transaction ends, while the claim's own heartbeats and a person's
	// status edits go through.
	lockHeldJob = `SELECT 1 FROM public.jobs` + heldJob + ` FOR KEY SHARE`

	// The job ($1) processing under the claim's lease ($2), not expired.
	heldJob = ` WHERE job_id = $1` + fence + ` AND NOT public.runops_lease_expired(metadata)`

	// Which of the jobs held under leases ($1 job ids, $2 their tokens)
	// are lost (QueueStore.Lost).
	lostLeases = `SELECT h.id::text FROM unnest($1::uuid[], $2::text[]) AS h(id, token)
LEFT JOIN public.jobs j ON j.job_id = h.id
WHERE j.job_id IS NULL OR j.status <> 'processing' OR j.metadata->'lease'->>'token' IS DISTINCT FROM h.token`

	// Expired leases go back to the queue, counted (a notification: idle
	// workers take it); past the limit the job ends (silently, an outcome).
	rescueJobs = `
WITH expired AS (
  SELECT id FROM public.jobs
  WHERE status = 'processing' AND public.runops_lease_expired(metadata)
  FOR UPDATE SKIP LOCKED
), done AS (
UPDATE public.jobs j
SET status = CASE WHEN public.runops_attempt(j.metadata) >= $1 THEN 'error' ELSE 'queued' END,
    error = CASE WHEN public.runops_attempt(j.metadata) >= $1 THEN $2 END,
    -- Metadata that is not an object (a person's edit) starts over as one:
    -- the rescue of every other job goes on.
    metadata = public.runops_close_attempt(CASE WHEN jsonb_typeof(j.metadata) = 'object' THEN j.metadata ELSE '{}'::jsonb END,
                                           coalesce(j.metadata->'lease'->>'token', ''), 'lost', 'lease expired')
               - 'lease'
FROM expired WHERE j.id = expired.id` + WorkerMark + `
RETURNING j.job_id, j.status, j.error, j.created_at, j.completed_at, j.metadata
)
SELECT done.job_id::text, done.status, public.runops_attempt(done.metadata) FROM done
LEFT JOIN LATERAL (SELECT public.runops_record_event(done.job_id, done.status, done.error, done.created_at,
  done.completed_at, done.metadata->'timings', $3::text[]) WHERE done.status = 'error') ev ON true`
)

// QueueStore is the queue's view of public.jobs.
type QueueStore struct {
	pool     *pgxpool.Pool
	hooks    []string // RUNOPS_WEBHOOK_URLS: outcomes record an event for each
	ownerCap *int     // RUNOPS_OWNER_CONCURRENCY; nil: no cap
	outcomes batcher  // outcomes.go
}

// NewQueueStore returns a queue store over pool.
func NewQueueStore(pool *pgxpool.Pool) *QueueStore { return &QueueStore{pool: pool, hooks: []string{}} }

// SendEvents makes every outcome the worker records (completed, error, and a
// rescue that ends a job) write a webhook event for each of urls, in the
// same transaction; a URL given twice is sent one event (its row's key is
// the event and the URL: a second would fail every outcome, and every
// rescue with it).
func (s *QueueStore) SendEvents(urls []string) *QueueStore {
	s.hooks = []string{}
	for _, u := range urls {
		if !slices.Contains(s.hooks, u) {
			s.hooks = append(s.hooks, u)
		}
	}
	return s
}

// CapOwners makes every claim leave the jobs of an owner with n jobs
// processing across the fleet (RUNOPS_OWNER_CONCURRENCY, which runops
// worker gives it: newWorker, cmd/runops/main.go; 0: no cap).
func (s *QueueStore) CapOwners(n int) *QueueStore {
	s.ownerCap = nil
	if n > 0 {
		s.ownerCap = &n
	}
	return s
}

// Claim takes up to n claimable queued jobs for worker, in claim order
// (docs/lifecycle.md), each under a new lease token.
func (s *QueueStore) Claim(ctx context.Context, worker string, n int, ttl time.Duration) ([]queue.Claimed, error) {
	return s.claimWith(ctx, claimJobs, worker, n, ttl, s.ownerCap)
}

// claimWith runs a claim statement (claimJobs; a benchmark's baseline) and
// reads what it took.
func (s *QueueStore) claimWith(ctx context.Context, sql, worker string, n int, ttl time.Duration, more ...any) ([]queue.Claimed, error) {
	rows, err := s.pool.Query(ctx, sql, append([]any{worker, ttl.Seconds(), n}, more...)...)
	if err != nil {
		return nil, wrap("claim jobs", err)
	}
	var out []queue.Claimed
	for rows.Next() {
		var queuedAt pgtype.Timestamptz
		j, err := scanJob(rows, &queuedAt)
		if err != nil {
			rows.Close()
			return nil, wrap("claim jobs", err)
		}
		lease, _ := j.Metadata["lease"].(map[string]any)
		token, _ := lease["token"].(string)
		out = append(out, queue.Claimed{Job: j, Token: token, QueuedAt: stamp(queuedAt)})
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("claim jobs", err)
	}
	slices.SortFunc(out, func(a, b queue.Claimed) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// fenced runs a fenced write and tells whether it matched (false: the job is lost).
func (s *QueueStore) fenced(ctx context.Context, op, sql string, args ...any) (bool, error) {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return false, wrap(op, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Renew extends the lease by ttl.
func (s *QueueStore) Renew(ctx context.Context, id jobs.ID, token string, ttl time.Duration) (bool, error) {
	return s.fenced(ctx, "renew lease", renewLease, string(id), token, ttl.Seconds())
}

// Merge deep-merges patch into metadata.
func (s *QueueStore) Merge(ctx context.Context, id jobs.ID, token string, patch map[string]any) (bool, error) {
	return s.fenced(ctx, "merge metadata", mergeMetadata, string(id), token, patch)
}

// HandBack returns the job to the queue without counting the attempt.
func (s *QueueStore) HandBack(ctx context.Context, id jobs.ID, token string) (bool, error) {
	return s.fenced(ctx, "hand back job", handBackJob, string(id), token)
}

// DropLease closes, as cancelled, the attempt of a run whose job a person took
// out of processing (re-queued, or set to another status) and drops its lease;
// a re-queued job is announced again. It reports whether it closed the
// attempt: a no-op while the job is processing, or once the lease is gone.
func (s *QueueStore) DropLease(ctx context.Context, id jobs.ID, token string) (bool, error) {
	var closed bool
	err := s.pool.QueryRow(ctx, dropLease, string(id), token, queue.CancelledCause).Scan(&closed)
	return closed, wrap("drop lease", err)
}

// Repair puts the claim's tables right: rows of jobs no longer queued go,
// queued jobs without one (or with a stale one) get it, and owners whose
// counts were wrong are recounted.
func (s *QueueStore) Repair(ctx context.Context) (queue.Repaired, error) {
	var r queue.Repaired
	err := s.pool.QueryRow(ctx, repairQueue).Scan(&r.Removed, &r.Added, &r.Recounted)
	return r, wrap("repair the queue", err)
}

// Rescue returns expired leases to the queue; a job already claimed
// maxAttempts times ends in error with message instead.
func (s *QueueStore) Rescue(ctx context.Context, maxAttempts int, message string) (requeued, failed []queue.Rescued, err error) {
	rows, err := s.pool.Query(ctx, rescueJobs, maxAttempts, message, s.hooks)
	if err != nil {
		return nil, nil, wrap("rescue jobs", err)
	}
	var id, status string
	var attempt int
	_, err = pgx.ForEachRow(rows, []any{&id, &status, &attempt}, func() error {
		r := queue.Rescued{ID: jobs.ID(id), Attempt: attempt}
		if jobs.Status(status) == jobs.StatusQueued {
			requeued = append(requeued, r)
		} else {
			failed = append(failed, r)
		}
		return nil
	})
	return requeued, failed, wrap("rescue jobs", err)
}

// Holds tells whether the claim with token still holds the job.
func (s *QueueStore) Holds(ctx context.Context, id jobs.ID, token string) (bool, error) {
	var held bool
	err := s.pool.QueryRow(ctx, selectHolds, string(id), token).Scan(&held)
	return held, wrap("check lease", err)
}

// Status reads the job's status; found is false when the row is gone.
func (s *QueueStore) Status(ctx context.Context, id jobs.ID) (jobs.Status, bool, error) {
	var status string
	err := s.pool.QueryRow(ctx, selectStatus, string(id)).Scan(&status)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, wrap("read job status", err)
	}
	return jobs.Status(status), true, nil
}

// Lost tells which of the jobs held under leases (job → token) are lost.
func (s *QueueStore) Lost(ctx context.Context, leases map[jobs.ID]string) ([]jobs.ID, error) {
	ids, tokens := make([]string, 0, len(leases)), make([]string, 0, len(leases))
	for id, token := range leases {
		ids, tokens = append(ids, string(id)), append(tokens, token)
	}
	rows, err := s.pool.Query(ctx, lostLeases, ids, tokens)
	if err != nil {
		return nil, wrap("check leases", err)
	}
	lost, err := pgx.CollectRows(rows, pgx.RowTo[jobs.ID])
	return lost, wrap("check leases", err)
}

var _ queue.Store = (*QueueStore)(nil)
