package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/retention"
)

// The operator's edits (runops jobs …). They are a person's edits under the
// same rules as the dashboard's: plain status changes, which the trigger
// notifies, so a worker holding the job stops at once; a re-queue starts a
// fresh count of attempts (the jobs_requeued trigger).
const (
	listJobs = `SELECT ` + jobColumns + ` FROM public.jobs
WHERE $1 = '' OR status = $1
ORDER BY created_at DESC, id DESC
LIMIT $2`

	requeueJob = `UPDATE public.jobs SET status = 'queued' WHERE job_id = $1 AND status <> 'queued'`

	requeueJobs = `UPDATE public.jobs SET status = 'queued'
WHERE status = $1 AND $1 <> 'queued' AND ($2 = 0 OR updated_at > now() - make_interval(secs => $2))
RETURNING job_id::text`

	setPriority = `UPDATE public.jobs SET metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('priority', $2::integer)
WHERE job_id = $1 AND (metadata IS NULL OR jsonb_typeof(metadata) = 'object')`

	cancelJob = `UPDATE public.jobs SET status = 'error', error = $2, completed_at = NULL
WHERE job_id = $1 AND status IN ('queued', 'processing')`

	completeByHand = `UPDATE public.jobs SET status = 'completed', completed_at = now(), error = NULL,
    metadata = public.runops_jsonb_merge(coalesce(metadata, '{}'::jsonb), $2)
WHERE job_id = $1`
)

// List returns up to limit jobs, newest first, of one status ("" = all).
func (s *JobStore) List(ctx context.Context, status jobs.Status, limit int) ([]jobs.Job, error) {
	rows, err := s.pool.Query(ctx, listJobs, string(status), limit)
	if err != nil {
		return nil, wrap("list jobs", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (jobs.Job, error) { return scanJob(r) })
	return out, wrap("list jobs", err)
}

// Requeue sets the job back to queued; false when it is queued already or
// does not exist.
func (s *JobStore) Requeue(ctx context.Context, id jobs.ID) (bool, error) {
	tag, err := s.pool.Exec(ctx, requeueJob, string(id))
	return tag.RowsAffected() == 1, wrap("requeue job", err)
}

// RequeueAll sets every job of status changed within since (0 = ever) back
// to queued and returns their ids.
func (s *JobStore) RequeueAll(ctx context.Context, status jobs.Status, since time.Duration) ([]jobs.ID, error) {
	rows, err := s.pool.Query(ctx, requeueJobs, string(status), since.Seconds())
	if err != nil {
		return nil, wrap("requeue jobs", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[jobs.ID])
	return ids, wrap("requeue jobs", err)
}

// SetPriority sets metadata.priority, which the next claim reads; false
// when there is no such job, or its metadata is not a JSON object (a
// person's edit: nothing of it is overwritten).
func (s *JobStore) SetPriority(ctx context.Context, id jobs.ID, priority int) (bool, error) {
	tag, err := s.pool.Exec(ctx, setPriority, string(id), priority)
	return tag.RowsAffected() == 1, wrap("set priority", err)
}

// Cancel ends a queued or processing job in error with message; false when
// it has ended already or does not exist.
func (s *JobStore) Cancel(ctx context.Context, id jobs.ID, message string) (bool, error) {
	tag, err := s.pool.Exec(ctx, cancelJob, string(id), message)
	return tag.RowsAffected() == 1, wrap("cancel job", err)
}

// MarkCompleted marks the job completed by hand, merging patch into its
// metadata; false when there is no such job. Under the SOP lock (ctx of
// WithSOPLock), in the lock's transaction: it commits with the SOP's tag.
func (s *JobStore) MarkCompleted(ctx context.Context, id jobs.ID, patch map[string]any) (bool, error) {
	var tag pgconn.CommandTag
	var err error
	if tx := lockTx(ctx); tx != nil {
		tag, err = tx.Exec(ctx, completeByHand, string(id), patch)
	} else {
		tag, err = s.pool.Exec(ctx, completeByHand, string(id), patch)
	}
	return tag.RowsAffected() == 1, wrap("complete job", err)
}

// expireDue picks ended jobs whose kind ($1: raw or slim) is due, locking
// them against other janitors (SKIP LOCKED: each is taken by one) and
// against status edits until the deletion is recorded.
const (
	expireDue = `SELECT job_id::text FROM public.jobs
WHERE status IN ('completed', 'error')
  AND coalesce(completed_at, updated_at) < now() - make_interval(secs => $2)
  AND (metadata->'retention'->>($1 || '_deleted_at')) IS NULL
ORDER BY id
LIMIT $3
FOR UPDATE SKIP LOCKED`

	// Marked as the janitor's (runops.writer): the job's updated_at stays,
	// the clock of a job that ended in error (…20261208000100_janitor_clock.sql).
	recordExpired = `UPDATE public.jobs
SET metadata = public.runops_jsonb_merge(coalesce(metadata, '{}'::jsonb),
      jsonb_build_object('retention', jsonb_build_object($1 || '_deleted_at', now())))
WHERE job_id = ANY($2::uuid[]) AND set_config('runops.writer', 'janitor', true) IS NOT NULL`
)

// Expire implements retention.Store.
func (s *JobStore) Expire(ctx context.Context, kind retention.Kind, after time.Duration, limit int,
	remove func(context.Context, []jobs.ID) error) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, expireDue, string(kind), after.Seconds(), limit)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[jobs.ID])
		if err != nil || len(ids) == 0 {
			return err
		}
		if err := remove(ctx, ids); err != nil {
			return err
		}
		plain := make([]string, len(ids))
		for i, id := range ids {
			plain[i] = string(id)
		}
		tag, err := tx.Exec(ctx, recordExpired, string(kind), plain)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		n = 0
	}
	return n, wrap("expire "+string(kind)+" objects", err)
}

var _ retention.Store = (*JobStore)(nil)

const (
	expireUnqueued = `SELECT u.job_id::text FROM public.runops_uploads u
WHERE u.issued_at < now() - make_interval(secs => $1)
  AND u.queued_at IS NULL -- never queued: the raw upload is all there can be
  AND NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.job_id = u.job_id)
ORDER BY u.issued_at
LIMIT $2
FOR UPDATE SKIP LOCKED`

	// Jobs a person deleted more than $1 ago (runops_deleted_jobs:
	// …20261208000100_janitor_clock.sql), and not put back.
	expireDeleted = `SELECT d.job_id::text FROM public.runops_deleted_jobs d
WHERE d.deleted_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.job_id = d.job_id)
ORDER BY d.deleted_at
LIMIT $2
FOR UPDATE SKIP LOCKED`

	// A deleted job's upload and record of its deletion, once its objects
	// are gone.
	forgetDeleted = `WITH u AS (DELETE FROM public.runops_uploads WHERE job_id = ANY($1::uuid[]))
DELETE FROM public.runops_deleted_jobs WHERE job_id = ANY($1::uuid[])`

	// Deletions undone: the row was put back by hand. The rows are locked
	// (KEY SHARE): one a person is deleting again is waited for, and then
	// passed over, its new record kept.
	forgetPutBack = `DELETE FROM public.runops_deleted_jobs d WHERE d.job_id IN (
  SELECT j.job_id FROM public.jobs j JOIN public.runops_deleted_jobs k ON k.job_id = j.job_id FOR KEY SHARE OF j)`

	forgetUploads = `DELETE FROM public.runops_uploads WHERE job_id = ANY($1::uuid[])`

	// Of the deleted jobs picked ($1), those still without a row, read
	// once their uploads' rows are locked (lockUploads): a row inserted
	// meanwhile (queue-job, or by hand) was committed before, and is seen
	// here, or waits for the janitor's commit (runops_jobs_keep_owner locks
	// the upload's row), and finds the upload forgotten.
	lockUploads  = `SELECT 1 FROM public.runops_uploads WHERE job_id = ANY($1::uuid[]) ORDER BY job_id FOR UPDATE`
	stillDeleted = `SELECT i::text FROM unnest($1::uuid[]) i WHERE NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.job_id = i)`
)

// ExpireUnqueued implements retention.Store.
func (s *JobStore) ExpireUnqueued(ctx context.Context, after time.Duration, limit int,
	remove func(context.Context, []jobs.ID) error) (int, error) {
	return s.forgetUploads(ctx, "expire unqueued uploads", func(tx pgx.Tx) ([]string, error) {
		return idsOf(tx.Query(ctx, expireUnqueued, after.Seconds(), limit))
	}, forgetUploads, remove)
}

// ExpireDeleted implements retention.Store.
func (s *JobStore) ExpireDeleted(ctx context.Context, after time.Duration, limit int,
	remove func(context.Context, []jobs.ID) error) (int, error) {
	if _, err := s.pool.Exec(ctx, forgetPutBack); err != nil {
		return 0, wrap("expire deleted jobs", err)
	}
	// Those picked are read again once their uploads are locked
	// (stillDeleted): one queued again meanwhile is left.
	return s.forgetUploads(ctx, "expire deleted jobs", func(tx pgx.Tx) ([]string, error) {
		ids, err := idsOf(tx.Query(ctx, expireDeleted, after.Seconds(), limit))
		if err != nil || len(ids) == 0 {
			return ids, err
		}
		if _, err := tx.Exec(ctx, lockUploads, ids); err != nil {
			return nil, err
		}
		return idsOf(tx.Query(ctx, stillDeleted, ids))
	}, forgetDeleted, remove)
}

// forgetUploads takes up to limit uploads that pick chooses in tx, locked
// (after, limit), calls remove with their ids and forgets them (forget, $1
// the ids) once it returns nil.
func (s *JobStore) forgetUploads(ctx context.Context, op string, pick func(tx pgx.Tx) ([]string, error), forget string,
	remove func(context.Context, []jobs.ID) error) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ids, err := pick(tx)
		if err != nil || len(ids) == 0 {
			return err
		}
		typed := make([]jobs.ID, len(ids))
		for i, id := range ids {
			typed[i] = jobs.ID(id)
		}
		if err := remove(ctx, typed); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, forget, ids)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		n = 0
	}
	return n, wrap(op, err)
}

// idsOf collects the ids a query answers, one a row.
func idsOf(rows pgx.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
