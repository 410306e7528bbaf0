package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// summaryColumns are what a jobs.Summary takes of a job's row: its
// columns, and of metadata the three keys answered, as JSON (decoded by
// summary; a person may have written anything there). A statement this
// plain is cheap to plan, which every statement is here, at every call
// (OpenPool: no prepared statements, for the poolers' sake): the same
// answer in one statement with the upload's owner joined in cost twice as
// much (README, "The API's pace").
const summaryColumns = `j.status, j.created_at, j.updated_at, j.completed_at, j.error, j.metadata->'stage',
  j.metadata->'progress', j.metadata->'owner'`

const (
	summarize    = `SELECT ` + summaryColumns + ` FROM public.jobs j WHERE j.job_id = $1`
	summarizeSOP = `SELECT ` + summaryColumns + `, t.sop, t.frames->$2
FROM public.jobs j LEFT JOIN public.runops_stored_tags t ON t.job_id = j.job_id WHERE j.job_id = $1`
	// Without a row: the upload's owner, and the tags.
	summarizeUpload = `SELECT (SELECT u.owner FROM public.runops_uploads u WHERE u.job_id = $1),
  (SELECT t.sop FROM public.runops_stored_tags t WHERE t.job_id = $1),
  (SELECT t.frames->$2 FROM public.runops_stored_tags t WHERE t.job_id = $1)`
)

// Summary reads what job-status and queue-job answer with of job id: one
// statement when it has a row, two when not (the upload's owner).
func (s *JobStore) Summary(ctx context.Context, id jobs.ID) (jobs.Summary, error) {
	return s.summary(ctx, id, false, "")
}

// SOPSummary is Summary with the entity tags recorded for the job's SOP and
// its step node's screenshot ("": none).
func (s *JobStore) SOPSummary(ctx context.Context, id jobs.ID, node string) (jobs.Summary, error) {
	return s.summary(ctx, id, true, node)
}

// summary reads a jobs.Summary; with tags, those recorded for the SOP and
// node's screenshot too.
func (s *JobStore) summary(ctx context.Context, id jobs.ID, tags bool, node string) (jobs.Summary, error) {
	var (
		sum                    jobs.Summary
		status                 string
		stage, progress, owner []byte // JSON
		sopTag                 *string
		frameTag               []byte // JSON
	)
	dest := []any{&status, &sum.CreatedAt, &sum.UpdatedAt, &sum.CompletedAt, &sum.Error, &stage, &progress, &owner}
	query, args := summarize, []any{string(id)}
	if tags {
		query, dest, args = summarizeSOP, append(dest, &sopTag, &frameTag), append(args, node)
	}
	err := s.pool.QueryRow(ctx, query, args...).Scan(dest...)
	switch {
	case err == nil:
		sum.Found, sum.Status = true, jobs.Status(status)
	case errors.Is(err, pgx.ErrNoRows):
		var uploader *string
		err = s.pool.QueryRow(ctx, summarizeUpload, string(id), node).Scan(&uploader, &sopTag, &frameTag)
		if uploader != nil {
			owner, _ = json.Marshal(*uploader)
		}
	}
	if err != nil {
		return jobs.Summary{}, wrap("read job", err)
	}
	// Each as Job's accessors read it from decoded metadata: a value of
	// another type is none; a number out of float64's range is none, where
	// decoding the whole metadata failed.
	_ = json.Unmarshal(stage, &sum.Stage)
	_ = json.Unmarshal(owner, &sum.Owner)
	_ = json.Unmarshal(frameTag, &sum.FrameTag)
	var p float64
	if len(progress) > 0 && (progress[0] == '-' || '0' <= progress[0] && progress[0] <= '9') && json.Unmarshal(progress, &p) == nil {
		sum.Progress = &p
	}
	if sopTag != nil {
		sum.SOPTag = *sopTag
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

const recordUpload = `INSERT INTO public.runops_uploads (job_id, owner) VALUES ($1, nullif($2, ''))
ON CONFLICT (job_id) DO NOTHING`

// RecordUpload remembers that an upload URL for id was issued to owner ("":
// anonymous).
func (s *JobStore) RecordUpload(ctx context.Context, id jobs.ID, owner string) error {
	_, err := s.pool.Exec(ctx, recordUpload, string(id), owner)
	return wrap("record upload", err)
}

const notify = `SELECT pg_notify($1, $2)`

// Notify sends payload on channel (pg_notify), committed at once.
func (s *JobStore) Notify(ctx context.Context, channel, payload string) error {
	_, err := s.pool.Exec(ctx, notify, channel, payload)
	return wrap("notify", err)
}
