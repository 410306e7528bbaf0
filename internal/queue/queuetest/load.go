package queuetest

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/postgres"
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

// Picks records when each job was first seen picked up (by a claim, or by a
// listener), for benchmarks: safe from many goroutines.
type Picks struct {
	mu   sync.Mutex
	at   map[jobs.ID]time.Time
	seen chan struct{}
}

// NewPicks returns an empty record.
func NewPicks() *Picks { return &Picks{at: map[jobs.ID]time.Time{}, seen: make(chan struct{}, 1<<16)} }

// Mark records id as picked now, unless it was before.
func (p *Picks) Mark(id jobs.ID) {
	now := time.Now()
	p.mu.Lock()
	_, dup := p.at[id]
	if !dup {
		p.at[id] = now
	}
	p.mu.Unlock()
	if !dup {
		p.seen <- struct{}{}
	}
}

// Wait returns once n distinct jobs were marked; it fails the benchmark
// after a generous deadline.
func (p *Picks) Wait(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(3 * time.Minute)
	for range n {
		select {
		case <-p.seen:
		case <-deadline:
			tb.Fatalf("only some of %d jobs were picked up", n)
		}
	}
}

// Last is when the latest job was marked.
func (p *Picks) Last() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, at := range p.at {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// Since is Latencies from committed to the marks.
func (p *Picks) Since(tb testing.TB, committed map[jobs.ID]time.Time) Percentiles {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Latencies(tb, committed, p.at)
}

// ListenFloor marks every inserted job whose notification a bare LISTEN
// connection on dsn receives: the floor a claim is measured against. It
// stops when ctx ends; wait for the returned function before closing.
func ListenFloor(ctx context.Context, tb testing.TB, dsn string, picks *Picks) (wait func()) {
	tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			var p postgres.Notification
			if json.Unmarshal([]byte(n.Payload), &p) == nil && p.Op == "INSERT" {
				picks.Mark(p.JobID)
			}
		}
	}()
	return func() { <-done }
}

// Load is a way of inserting jobs, returning when each was committed.
type Load struct {
	Name string
	Feed func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time
}

// Loads are the pickup benchmarks' loads: a steady 300 jobs/s (3,000 jobs)
// and a burst of 1,000 in one transaction; smaller with -short, so that the
// suite can run them once without rot.
func Loads() []Load {
	steadyJobs, burstJobs := 3000, 1000
	if testing.Short() {
		steadyJobs, burstJobs = 60, 100
	}
	return []Load{
		{"steady300", func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time { return Steady(b, pool, steadyJobs, 300) }},
		{"burst1000", func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time { return Burst(b, pool, burstJobs) }},
	}
}
