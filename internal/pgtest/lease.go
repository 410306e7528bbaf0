package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// expireLeases is the lease of each job given ($1; none given: of every
// job) past its expiry, written as the engine's own write (runops.writer):
// a person's edit cannot change a live lease (the leases_outlive_edits
// migration), and this stands in for time passing, not for a person.
const expireLeases = `UPDATE public.jobs
SET metadata = jsonb_set(metadata, '{lease,expires_at}', to_jsonb(now() - interval '1 s'))
WHERE (cardinality($1::text[]) = 0 OR job_id::text = ANY($1::text[]))
  AND jsonb_typeof(metadata->'lease') = 'object'
  AND set_config('runops.writer', 'worker', true) IS NOT NULL`

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
