package postgres_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// Every worker's deliverer runs Due every second. A receiver down for a
// few hours leaves a backlog of due events (a round tries one of them and
// returns the others, due at once): taking the next 20 of each receiver
// reads about those, never the whole backlog. The first per-receiver round
// (a window over every pending row) scanned and sorted all of them.
func TestDueReadsTheRoundNotTheBacklog(t *testing.T) {
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO runops_webhooks (event_id, url, job_id, type, body, created_at, next_at)
SELECT gen_random_uuid(), 'https://r' || (i % 2) || '.example/hook', gen_random_uuid(), 'job.completed', '{}'::jsonb,
       now() - interval '6 hours' + i * interval '1 second', now() - interval '6 hours' + i * interval '1 second'
FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE runops_webhooks`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	var doc []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+postgres.DueDeliveriesSQL, 20, 60.0).Scan(&doc); err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan planNode
		Time float64 `json:"Execution Time"`
	}
	if err := json.Unmarshal(doc, &plans); err != nil {
		t.Fatal(err)
	}
	p := plans[0]
	for _, bad := range p.Plan.unboundedWork(false) {
		t.Errorf("%s", bad)
	}
	if read := p.Plan.rowsRead(); read > 500 {
		t.Errorf("%.0f rows read from runops_webhooks to take 40 deliveries (%.1f ms)", read, p.Time)
	}
}
