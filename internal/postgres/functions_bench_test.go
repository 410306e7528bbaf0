package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/supabase"
)

// BenchmarkQueueFunctions times the bookkeeping an outcome does in the
// database (close the attempt, merge the last timings) with the functions as
// they are now against the SQL-language originals of the first queue
// migration, loaded into a schema of their own in the same database. A SQL
// function PostgreSQL cannot inline is parsed and planned again in every
// statement; the PL/pgSQL ones keep their plans for the session.
//
//	go test -run '^$' -bench QueueFunctions -benchtime 2000x ./internal/postgres/
func BenchmarkQueueFunctions(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Open(b, pgtest.New(b), 1)
	src, err := supabase.Migrations.ReadFile("migrations/20261129000100_queue.sql")
	if err != nil {
		b.Fatal(err)
	}
	originals, _, _ := strings.Cut(strings.ReplaceAll(string(src), "public.runops_", "original.runops_"), "-- A person setting")
	if _, err := pool.Exec(ctx, "CREATE SCHEMA original;"+originals); err != nil {
		b.Fatal(err)
	}
	meta := `{"stage":"downloading","progress":0,"attempt":1,"owner":"u",
	  "lease":{"token":"tok","worker":"w","expires_at":"2030-01-01T00:00:00Z"},
	  "attempts":[{"n":1,"token":"tok","worker":"w","started_at":"2026-01-01T00:00:00Z"}],
	  "probe":{"width":1280,"height":720,"duration_s":61.5},"timings":{"downloading_ms":3,"probing_ms":40}}`
	perCall := map[string]time.Duration{}
	for _, schema := range []string{"original", "public"} {
		b.Run(schema, func(b *testing.B) {
			q := `SELECT ` + schema + `.runops_jsonb_merge(` + schema + `.runops_close_attempt($1::jsonb, 'tok', 'error', 'x'),
			  '{"timings":{"extracting_ms":4}}')::text`
			var out string
			start := time.Now()
			for b.Loop() {
				if err := pool.QueryRow(ctx, q, meta).Scan(&out); err != nil {
					b.Fatal(err)
				}
			}
			perCall[schema] = time.Since(start) / time.Duration(b.N)
			if !strings.Contains(out, `"outcome": "error"`) || strings.Contains(out, `"lease"`) {
				b.Fatalf("the attempt was not closed: %s", out)
			}
			if schema == "public" && perCall[schema] > 0 {
				b.ReportMetric(float64(perCall["original"])/float64(perCall[schema]), "originals/now")
			}
		})
	}
}

// BenchmarkQueueGauges times what every process reads for its queue gauges
// at each scrape, now (queueNow: the queue's partial indexes, the queue's
// first entry, the waiting owners) against the statement before (every row
// of jobs grouped by status), on 200,000 finished jobs and 500 queued
// (2,000 with -short).
//
//	go test -run '^$' -bench QueueGauges -benchtime 20x ./internal/postgres/
func BenchmarkQueueGauges(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Open(b, pgtest.New(b), 1)
	finished := 200000
	if testing.Short() {
		finished = 2000
	}
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO jobs (job_id, status, completed_at) SELECT gen_random_uuid(), 'completed', now() FROM generate_series(1, %d)`, finished),
		`INSERT INTO jobs (job_id, metadata) SELECT gen_random_uuid(), jsonb_build_object('owner', 'o' || (i % 50)) FROM generate_series(1, 500) i`,
		`VACUUM ANALYZE jobs`, `ANALYZE runops_queue`, `ANALYZE runops_owners`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	before := `SELECT status, count(*)::int,
  coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE status = 'queued' AND isfinite(updated_at))), 0)::float8
FROM public.jobs GROUP BY status`
	perRead := map[string]time.Duration{}
	for _, c := range []struct {
		name, sql string
		args      []any
	}{{"before", before, nil}, {"now", postgres.QueueNowSQL, []any{2}}} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				rows, err := pool.Query(ctx, c.sql, c.args...)
				if err != nil {
					b.Fatal(err)
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
			}
			perRead[c.name] = time.Since(start) / time.Duration(b.N)
			if c.name == "now" && perRead["now"] > 0 {
				b.ReportMetric(float64(perRead["before"])/float64(perRead["now"]), "before/now")
			}
		})
	}
}
