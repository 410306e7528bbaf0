// Package queuetest holds test support for the queue engine: a handler that
// proves runs of one job never overlap. Tests and the test-tagged binary use
// it; production code must not.
package queuetest

import (
	"context"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/queue"
)

// RunsTable records every run the Advisory handler starts.
const RunsTable = `CREATE TABLE test_runs (job_id uuid, token text, worker text, overlapped bool,
  at timestamptz DEFAULT clock_timestamp())`

// Advisory wraps work in a handler that takes pg_try_advisory_lock on the job
// over a connection of its own for the whole run and records in test_runs
// whether it got it (overlapped = it did not: another run held it), with the
// process id as the worker.
func Advisory(pool *pgxpool.Pool, work func(ctx context.Context, j queue.Job) error) queue.Handler {
	pid := strconv.Itoa(os.Getpid())
	return queue.HandlerFunc(func(ctx context.Context, j queue.Job, _ queue.Reporter) error {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, string(j.ID)).Scan(&got); err != nil {
			return err
		}
		if got {
			defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, string(j.ID))
		}
		if _, err := conn.Exec(context.WithoutCancel(ctx), `INSERT INTO test_runs (job_id, token, worker, overlapped) VALUES ($1, $2, $3, $4)`,
			string(j.ID), j.Token, pid, !got); err != nil {
			return err
		}
		return work(ctx, j)
	})
}
