package queue_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
)

// Pickup latency is the time from the commit of a queued row to its claim
// (the handler starting). Three ways to pick up, measured in one run:
//
//	floor   a bare LISTEN connection receiving the row's notification (no claim)
//	listen  the queue engine woken by LISTEN/NOTIFY (RUNOPS_LISTEN=on)
//	poll1s  the engine polling alone, draining the queue every ~1 s (RUNOPS_LISTEN=off)
//
// under a steady 300 jobs/s and a burst of 1,000 jobs committed in one
// transaction. Every latency is also reported as a ratio to the floor of the
// same load. -short shrinks the loads (the suite runs it once so it cannot rot).
//
//	go test -run '^$' -bench . -benchtime 1x ./internal/queue/
func BenchmarkPickup(b *testing.B) {
	loads := queuetest.Loads()
	for _, load := range loads {
		var floor queuetest.Percentiles
		for _, mode := range []string{"floor", "listen", "poll1s"} {
			b.Run(load.Name+"/"+mode, func(b *testing.B) {
				var p queuetest.Percentiles
				for range b.N {
					p = pickup(b, mode, load.Feed)
				}
				if mode == "floor" {
					floor = p
				}
				p.Report(b, "", floor)
			})
		}
	}
}

// pickup feeds a fresh database and measures when each job is picked up.
func pickup(b *testing.B, mode string, feed func(*testing.B, *pgxpool.Pool) map[jobs.ID]time.Time) queuetest.Percentiles {
	dsn := pgtest.New(b)
	pool := pgtest.Open(b, dsn, 40)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	picks := queuetest.NewPicks()
	switch mode {
	case "floor":
		defer queuetest.ListenFloor(ctx, b, dsn, picks)()
		defer cancel()
	default:
		cfg := queue.Config{Concurrency: 16, LeaseTTL: time.Minute, Heartbeat: 20 * time.Second, Sweep: time.Hour,
			Logger: quiet, TempDir: b.TempDir()}
		if mode == "poll1s" {
			cfg.Sweep = time.Second
		}
		s := queuetest.Start(b, dsn, postgres.NewQueueStore(pool), queue.HandlerFunc(func(_ context.Context, j queue.Job, _ queue.Reporter) error {
			picks.Mark(j.ID)
			return nil
		}), cfg, mode == "listen")
		defer s.Stop() // before the pool closes
	}

	committed := feed(b, pool)
	picks.Wait(b, len(committed))
	return picks.Since(b, committed)
}

// BenchmarkClaims measures claims per second with no-op jobs for 1, 4 and 16
// workers (each its own Worker, one job at a time) draining one backlog, and
// reports each against a single worker of the same run.
func BenchmarkClaims(b *testing.B) {
	backlog := 3000
	if testing.Short() {
		backlog = 200
	}
	var single float64
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			var rate float64
			for range b.N {
				rate = drain(b, workers, backlog)
			}
			if workers == 1 {
				single = rate
			}
			b.ReportMetric(rate, "claims/s")
			if single > 0 {
				b.ReportMetric(rate/single, "x1worker")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func drain(b *testing.B, workers, backlog int) float64 {
	dsn := pgtest.New(b)
	pool := pgtest.Open(b, dsn, int32(2*workers+4))
	queuetest.Burst(b, pool, backlog)
	ctx, cancel := context.WithCancel(context.Background())
	var count atomic.Int64
	done := make(chan struct{})
	h := queue.HandlerFunc(func(context.Context, queue.Job, queue.Reporter) error {
		if count.Add(1) == int64(backlog) {
			close(done)
		}
		return nil
	})
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		w := queue.New(postgres.NewQueueStore(pool), h, queue.Config{Concurrency: 1, LeaseTTL: time.Minute,
			Heartbeat: 20 * time.Second, Sweep: time.Hour, Logger: quiet, TempDir: b.TempDir()})
		wg.Go(func() { _ = w.Run(ctx) })
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatal("backlog not drained")
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	return float64(backlog) / elapsed.Seconds()
}
