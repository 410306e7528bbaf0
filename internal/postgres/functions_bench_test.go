package postgres_test

import (
	"context"
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
	pool, err := postgres.OpenPool(ctx, pgtest.New(b), 1)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
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
