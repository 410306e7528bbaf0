package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
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

// Ping checks that the database answers.
func (s *JobStore) Ping(ctx context.Context) error {
	return wrap("ping database", s.pool.Ping(ctx))
}

func scanJob(row pgx.Row) (jobs.Job, error) {
	var (
		j      jobs.Job
		id     string
		status string
		done   *time.Time
	)
	if err := row.Scan(&id, &status, &j.CreatedAt, &j.UpdatedAt, &done, &j.Error, &j.Metadata); err != nil {
		return jobs.Job{}, err
	}
	j.ID, j.Status, j.CompletedAt = jobs.ID(id), jobs.Status(status), done
	if j.Metadata == nil {
		j.Metadata = map[string]any{}
	}
	return j, nil
}
