package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// The SQL of public.jobs, in one place.
const (
	jobColumns = `job_id::text, status, created_at, updated_at, completed_at, error, coalesce(metadata, '{}'::jsonb)`

	selectJob = `SELECT ` + jobColumns + ` FROM public.jobs WHERE job_id = $1`

	// ON CONFLICT DO NOTHING returns no row when the job exists already; the
	// caller then reads it in a new statement (whose snapshot sees a row that a
	// concurrent insert just committed).
	insertQueuedJob = `INSERT INTO public.jobs (job_id, status, metadata) VALUES ($1, 'queued', $2)
ON CONFLICT (job_id) DO NOTHING RETURNING ` + jobColumns
)

// JobStore reads and writes public.jobs.
type JobStore struct {
	pool *pgxpool.Pool
}

// NewJobStore returns a store over pool.
func NewJobStore(pool *pgxpool.Pool) *JobStore { return &JobStore{pool: pool} }

// Get returns the job, or jobs.ErrNotFound.
func (s *JobStore) Get(ctx context.Context, id jobs.ID) (jobs.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, selectJob, string(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return jobs.Job{}, jobs.ErrNotFound
	}
	return j, wrap("get job", err)
}

// summarize reads a jobs.Summary: $1 the job, $2 the step whose screenshot's
// tag is asked for ("" for none). Of metadata only the keys answered are
// read, each of the type Job's accessors take (a person may have written
// anything there); the upload's owner only when the job has no row.
const summarize = `SELECT j.job_id IS NOT NULL, coalesce(j.status, ''), j.created_at, j.updated_at, j.completed_at, j.error,
  CASE WHEN jsonb_typeof(j.metadata->'stage') = 'string' THEN j.metadata->>'stage' ELSE '' END,
  CASE WHEN jsonb_typeof(j.metadata->'progress') = 'number' THEN j.metadata->>'progress' END,
  CASE WHEN j.job_id IS NULL THEN coalesce((SELECT u.owner FROM public.runops_uploads u WHERE u.job_id = k.id), '')
       WHEN jsonb_typeof(j.metadata->'owner') = 'string' THEN j.metadata->>'owner' ELSE '' END,
  coalesce(t.sop, ''),
  CASE WHEN jsonb_typeof(t.frames->$2) = 'string' THEN t.frames->>$2 ELSE '' END
FROM (SELECT $1::uuid AS id) k
LEFT JOIN public.jobs j ON j.job_id = k.id
LEFT JOIN public.runops_stored_tags t ON t.job_id = k.id`

// Summary reads what the API answers with of job id, and the recorded tag
// of its step node's screenshot (node "": none), in one statement.
func (s *JobStore) Summary(ctx context.Context, id jobs.ID, node string) (jobs.Summary, error) {
	var (
		sum              jobs.Summary
		status           string
		created, updated *time.Time // NULL without a row
		progress         *string
	)
	err := s.pool.QueryRow(ctx, summarize, string(id), node).Scan(&sum.Found, &status, &created, &updated,
		&sum.CompletedAt, &sum.Error, &sum.Stage, &progress, &sum.Owner, &sum.SOPTag, &sum.FrameTag)
	if err != nil {
		return jobs.Summary{}, wrap("read job", err)
	}
	sum.Status = jobs.Status(status)
	if created != nil && updated != nil {
		sum.CreatedAt, sum.UpdatedAt = *created, *updated
	}
	if progress != nil {
		// As encoding/json reads it for Job.Progress; a number out of
		// float64's range is left out rather than failing the answer.
		if f, err := strconv.ParseFloat(*progress, 64); err == nil {
			sum.Progress = &f
		}
	}
	return sum, nil
}

// Enqueue inserts a queued job unless one with this id exists. It returns the
// job as it now is and whether this call created it; concurrent calls for one
// id create exactly one row.
func (s *JobStore) Enqueue(ctx context.Context, id jobs.ID, metadata map[string]any) (jobs.Job, bool, error) {
	if metadata == nil {
		metadata = map[string]any{}
	}
	// A row can vanish between the two statements (a person deleting it): try again.
	for range 3 {
		j, err := scanJob(s.pool.QueryRow(ctx, insertQueuedJob, string(id), metadata))
		if err == nil {
			return j, true, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return jobs.Job{}, false, wrap("insert job", err)
		}
		j, err = s.Get(ctx, id)
		if !errors.Is(err, jobs.ErrNotFound) {
			return j, false, err
		}
	}
	return jobs.Job{}, false, fmt.Errorf("insert job %s: row kept disappearing", id)
}

// queueStats counts the rows by status, with the oldest queued job's age.
const queueStats = `SELECT status, count(*)::int,
  coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'queued')), 0)::float8
FROM public.jobs GROUP BY status`

// QueueStats reads the numbers the queue gauges show.
func (s *JobStore) QueueStats(ctx context.Context) (metrics.QueueStats, error) {
	rows, err := s.pool.Query(ctx, queueStats)
	if err != nil {
		return metrics.QueueStats{}, wrap("queue stats", err)
	}
	out := metrics.QueueStats{ByStatus: map[string]int{}}
	var status string
	var n int
	var oldest float64
	_, err = pgx.ForEachRow(rows, []any{&status, &n, &oldest}, func() error {
		out.ByStatus[status] = n
		if status == string(jobs.StatusQueued) {
			out.OldestQueued = time.Duration(oldest * float64(time.Second))
		}
		return nil
	})
	return out, wrap("queue stats", err)
}

// Ping checks that the database answers.
func (s *JobStore) Ping(ctx context.Context) error {
	return wrap("ping database", s.pool.Ping(ctx))
}

// scanJob reads jobColumns, then any extra columns into extra.
func scanJob(row pgx.Row, extra ...any) (jobs.Job, error) {
	var (
		j      jobs.Job
		id     string
		status string
		done   *time.Time
	)
	if err := row.Scan(append([]any{&id, &status, &j.CreatedAt, &j.UpdatedAt, &done, &j.Error, &j.Metadata}, extra...)...); err != nil {
		return jobs.Job{}, err
	}
	j.ID, j.Status, j.CompletedAt = jobs.ID(id), jobs.Status(status), done
	if j.Metadata == nil {
		j.Metadata = map[string]any{}
	}
	return j, nil
}

const (
	recordUpload = `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, nullif($2, ''))
ON CONFLICT (job_id) DO NOTHING`

	uploadOwner = `SELECT coalesce(owner, '') FROM public.runops_uploads WHERE job_id = $1`
)

// RecordUpload remembers that an upload URL for id was issued to owner ("":
// anonymous).
func (s *JobStore) RecordUpload(ctx context.Context, id jobs.ID, owner string) error {
	_, err := s.pool.Exec(ctx, recordUpload, string(id), owner)
	return wrap("record upload", err)
}

// UploadOwner is the user an upload URL for id was issued to; "" when it was
// anonymous or is unknown.
func (s *JobStore) UploadOwner(ctx context.Context, id jobs.ID) (string, error) {
	var owner string
	err := s.pool.QueryRow(ctx, uploadOwner, string(id)).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return owner, wrap("read upload owner", err)
}

const notify = `SELECT pg_notify($1, $2)`

// Notify sends payload on channel (pg_notify), committed at once.
func (s *JobStore) Notify(ctx context.Context, channel, payload string) error {
	_, err := s.pool.Exec(ctx, notify, channel, payload)
	return wrap("notify", err)
}
