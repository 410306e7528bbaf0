//go:build runops_testhandler

package main

import (
	"context"
	"os"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/queue"
)

// Built only into the binary the process-level tests run
// (go build -tags runops_testhandler): with RUNOPS_TEST_HANDLER=advisory
// every run takes pg_try_advisory_lock on its job over its own connection and
// records in test_runs whether it got it, so overlapping runs show up. A job
// whose metadata has "test_hold": true holds its first attempt until cancelled.
func init() {
	if os.Getenv("RUNOPS_TEST_HANDLER") != "advisory" {
		return
	}
	pipelineHandler = func(pool *pgxpool.Pool) queue.Handler {
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
			if _, err := conn.Exec(ctx, `INSERT INTO test_runs (job_id, token, worker, overlapped) VALUES ($1, $2, $3, $4)`,
				string(j.ID), j.Token, strconv.Itoa(os.Getpid()), !got); err != nil {
				return err
			}
			if hold, _ := j.Metadata["test_hold"].(bool); hold && j.Attempt == 1 {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		})
	}
}
