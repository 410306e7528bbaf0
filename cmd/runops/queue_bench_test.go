package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/supabasetest"
)

// BenchmarkQueue measures pickup as a user feels it: real `runops worker`
// processes (concurrency 8 each) take jobs whose upload the storage stand-in
// does not have, so each job ends at once and only the queue is timed. A
// claim is timed from the insert's commit to the worker's first storage
// request for raw/<id>.mp4 (the first thing a claimed job does, after its
// stage write). The floor, in the same run, is a bare LISTEN connection
// receiving the inserts' notifications. Loads: a steady 300 jobs/s, and a
// burst of 1,000 committed in one transaction; with 1 and 4 processes.
// -short shrinks the loads (the suite runs it once so it cannot rot).
//
//	go test -run '^$' -bench Queue -benchtime 1x ./cmd/runops/
func BenchmarkQueue(b *testing.B) {
	loads := queuetest.Loads()
	bin := binary(b)
	for _, load := range loads {
		for _, procs := range []int{1, 4} {
			// The product's pooler-safe way of querying (cached descriptions,
			// no named statements) against pgx's default (named, cached
			// prepared statements), which breaks behind a transaction pooler.
			for _, mode := range []string{"", "cache_statement"} {
				name := fmt.Sprintf("%s/procs=%d", load.Name, procs)
				if mode != "" {
					name += "/" + mode
				}
				b.Run(name, func(b *testing.B) {
					var claim, floor queuetest.Percentiles
					for range b.N {
						claim, floor = pickupByWorkers(b, bin, procs, mode, load.Feed)
					}
					floor.Report(b, "floor-", queuetest.Percentiles{})
					claim.Report(b, "claim-", floor)
				})
			}
		}
	}
}

// pickupByWorkers starts procs workers on a fresh database (querying in
// mode; "" is the product's default), feeds it, and
// returns the claim and floor latencies.
func pickupByWorkers(b *testing.B, bin string, procs int, mode string, feed func(*testing.B, *pgxpool.Pool) map[jobs.ID]time.Time) (claim, floor queuetest.Percentiles) {
	dsn := pgtest.New(b)
	pool, err := postgres.OpenPool(context.Background(), dsn, 4)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	claimed, notified := queuetest.NewPicks(), queuetest.NewPicks()
	fake.OnRequest(func(_ supabasetest.Op, path string) {
		if _, rest, ok := strings.Cut(path, "/videos/raw/"); ok {
			claimed.Mark(jobs.ID(strings.TrimSuffix(rest, ".mp4")))
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer queuetest.ListenFloor(ctx, b, dsn, notified)()
	defer cancel()
	for range procs {
		addr := freeAddr(b)
		cmd := exec.Command(bin, "worker")
		workerDSN := dsn
		if mode != "" {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			workerDSN += sep + "default_query_exec_mode=" + mode
		}
		cmd.Env = append(os.Environ(), "DATABASE_URL="+workerDSN, "GEMINI_API_KEY=k", "SUPABASE_URL="+fake.URL,
			"SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey(), "RUNOPS_ADDR="+addr, "RUNOPS_WORKER_CONCURRENCY=8",
			"RUNOPS_TMPDIR="+b.TempDir())
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		b.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		waitReady(b, "http://"+addr)
	}

	committed := feed(b, pool)
	claimed.Wait(b, len(committed))
	notified.Wait(b, len(committed))
	return claimed.Since(b, committed), notified.Since(b, committed)
}
