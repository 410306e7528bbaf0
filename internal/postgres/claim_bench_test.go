package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
)

// fifoClaim is the claim as it was before priorities: the oldest queued
// rows, read from jobs' own partial index. The baseline of BenchmarkClaimOrder.
const fifoClaim = `
WITH next AS (
  SELECT id, updated_at AS queued_at FROM public.jobs
  WHERE status = 'queued' AND public.runops_lease_expired(metadata)
  ORDER BY created_at, id
  LIMIT $3
  FOR UPDATE SKIP LOCKED
)
UPDATE public.jobs j
SET status = 'processing', error = NULL, completed_at = NULL,
    metadata = public.runops_begin_attempt(j.metadata, gen_random_uuid()::text, $1, make_interval(secs => $2))
FROM next WHERE j.id = next.id AND set_config('runops.writer', 'worker', true) IS NOT NULL
RETURNING j.job_id::text, j.status, j.created_at, j.updated_at, j.completed_at, j.error, coalesce(j.metadata, '{}'::jsonb), next.queued_at`

// BenchmarkClaimOrder times claims on a queue of 100,000 jobs with mixed
// priorities (10,000 with -short) over 1, 100 and 1,000 owners, 4 claimers at once taking 8 jobs a claim
// until 8,000 are claimed: the claim by priority through runops_queue, and
// the FIFO claim it replaced on the same data in a database of its own (with
// runops_queue's triggers off, as it was). It reports claims per second
// and p50/p99 claim latency of each, and the ratios.
//
//	go test -run '^$' -bench ClaimOrder -benchtime 1x ./internal/postgres/
func BenchmarkClaimOrder(b *testing.B) {
	queued, claims := 100_000, 8_000
	if testing.Short() {
		queued, claims = 10_000, 800
	}
	type result struct {
		rate     float64
		p50, p99 time.Duration
	}
	measure := func(b *testing.B, owners int, fifo bool) result {
		ctx := context.Background()
		pool := pgtest.Open(b, pgtest.New(b), 8)
		if fifo {
			if _, err := pool.Exec(ctx, `ALTER TABLE jobs DISABLE TRIGGER runops_queue_insert;
				ALTER TABLE jobs DISABLE TRIGGER runops_queue_update; ALTER TABLE jobs DISABLE TRIGGER runops_queue_delete`); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, created_at, metadata)
			SELECT gen_random_uuid(), now() - make_interval(secs => $1 - i), jsonb_build_object('priority', i % 5 - 2, 'owner', 'user-' || i % $2)
			FROM generate_series(1, $1) i`, queued, owners); err != nil {
			b.Fatal(err)
		}
		for _, table := range []string{"jobs", "runops_queue"} {
			if _, err := pool.Exec(ctx, `VACUUM ANALYZE `+table); err != nil {
				b.Fatal(err)
			}
		}
		store := postgres.NewQueueStore(pool)
		var mu sync.Mutex
		var took []time.Duration
		var wg sync.WaitGroup
		start := time.Now()
		for range 4 {
			wg.Go(func() {
				for {
					mu.Lock()
					left := claims - 8*len(took)
					mu.Unlock()
					if left <= 0 {
						return
					}
					t0 := time.Now()
					claim := store.Claim
					if fifo {
						claim = func(ctx context.Context, worker string, n int, ttl time.Duration) ([]queue.Claimed, error) {
							return store.ClaimWith(ctx, fifoClaim, worker, n, ttl)
						}
					}
					got, err := claim(ctx, "w", 8, time.Minute)
					if err != nil {
						b.Error(err)
						return
					}
					n := len(got)
					d := time.Since(t0)
					if n != 8 {
						b.Errorf("a claim took %d jobs", n)
						return
					}
					mu.Lock()
					took = append(took, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(took)
		return result{rate: float64(8*len(took)) / elapsed.Seconds(), p50: took[len(took)/2], p99: took[len(took)*99/100]}
	}
	for _, owners := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("owners=%d", owners), func(b *testing.B) {
			var fifo, ordered result
			for range b.N {
				fifo, ordered = measure(b, owners, true), measure(b, owners, false)
			}
			b.ReportMetric(fifo.rate, "fifo-jobs/s")
			b.ReportMetric(ordered.rate, "ordered-jobs/s")
			b.ReportMetric(ordered.rate/fifo.rate, "throughput-ordered/fifo")
			b.ReportMetric(float64(fifo.p99.Microseconds())/1000, "fifo-p99-ms")
			b.ReportMetric(float64(ordered.p99.Microseconds())/1000, "ordered-p99-ms")
			b.ReportMetric(float64(ordered.p50)/float64(fifo.p50), "p50-ordered/fifo")
			b.ReportMetric(float64(ordered.p99)/float64(fifo.p99), "p99-ordered/fifo")
			b.ReportMetric(0, "ns/op")
		})
	}
}
