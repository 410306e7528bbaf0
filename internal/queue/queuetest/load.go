package queuetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
)

// Steady inserts n jobs at rate per second, one transaction each, and
// returns when each was sent: the commit happens on the server between that
// and the answer, and a notification may arrive before the answer does.
func Steady(tb testing.TB, pool *pgxpool.Pool, n, rate int) map[jobs.ID]time.Time {
	out := make(map[jobs.ID]time.Time, n)
	period := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * period))) // pacing the load
		var id string
		sent := time.Now()
		if err := pool.QueryRow(context.Background(), `INSERT INTO jobs (job_id) VALUES (gen_random_uuid()) RETURNING job_id::text`).Scan(&id); err != nil {
			tb.Fatal(err)
		}
		out[jobs.ID(id)] = sent
	}
	return out
}

// Burst commits n jobs in one transaction and returns when the COMMIT was sent.
func Burst(tb testing.TB, pool *pgxpool.Pool, n int) map[jobs.ID]time.Time {
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	rows, _ := tx.Query(ctx, `INSERT INTO jobs (job_id) SELECT gen_random_uuid() FROM generate_series(1, $1) RETURNING job_id::text`, n)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	at := time.Now()
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
	out := make(map[jobs.ID]time.Time, n)
	for _, id := range ids {
		out[jobs.ID(id)] = at
	}
	return out
}

// Percentiles of a latency distribution.
type Percentiles struct{ P50, P95, P99 time.Duration }

// Latencies are the times from committed to picked, per job, as percentiles;
// a job never picked fails the benchmark.
func Latencies(tb testing.TB, committed, picked map[jobs.ID]time.Time) Percentiles {
	lat := make([]time.Duration, 0, len(committed))
	for id, at := range committed {
		p, ok := picked[id]
		if !ok {
			tb.Fatalf("job %s was never picked up", id)
		}
		lat = append(lat, p.Sub(at))
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
	return Percentiles{q(0.50), q(0.95), q(0.99)}
}

// Report sends p as benchmark metrics, with ratios to the floor of the same
// run when there is one.
func (p Percentiles) Report(b *testing.B, prefix string, floor Percentiles) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(p.P50), prefix+"p50-ms")
	b.ReportMetric(ms(p.P95), prefix+"p95-ms")
	b.ReportMetric(ms(p.P99), prefix+"p99-ms")
	if floor.P99 > 0 {
		b.ReportMetric(float64(p.P50)/float64(floor.P50), prefix+"p50/floor")
		b.ReportMetric(float64(p.P99)/float64(floor.P99), prefix+"p99/floor")
	}
	b.ReportMetric(0, "ns/op") // the per-op time of a fixed workload says nothing
}
