package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/postgres"
)

// AsEngine, added to the WHERE of a test's UPDATE of jobs, marks it as the
// engine's own write (postgres.WorkerMark): a person's edit cannot change a
// live lease (the leases_outlive_edits migration), and such a test stands in
// for the engine or for time passing.
const AsEngine = postgres.WorkerMark

// expireLeases is the lease of each job given ($1; none given: of every
// job) past its expiry, as the engine's write.
const expireLeases = `UPDATE public.jobs
SET metadata = jsonb_set(metadata, '{lease,expires_at}', to_jsonb(now() - interval '1 s'))
WHERE (cardinality($1::text[]) = 0 OR job_id::text = ANY($1::text[]))
  AND jsonb_typeof(metadata->'lease') = 'object'` + AsEngine

// ExpireLeases makes the leases of the jobs ids (of every job, with none)
// a second past their expiry, as if their holders had died.
func ExpireLeases(tb testing.TB, pool *pgxpool.Pool, ids ...string) {
	tb.Helper()
	if ids == nil {
		ids = []string{}
	}
	if _, err := pool.Exec(context.Background(), expireLeases, ids); err != nil {
		tb.Fatalf("pgtest: expire leases: %v", err)
	}
}
