package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	steadyJobs, burstJobs := 3000, 1000
	if testing.Short() {
		steadyJobs, burstJobs = 60, 100
	}
	loads := []struct {
		name string
		feed func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time
	}{
		{"steady300", func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time {
			return queuetest.Steady(b, pool, steadyJobs, 300)
		}},
		{"burst1000", func(b *testing.B, pool *pgxpool.Pool) map[jobs.ID]time.Time {
			return queuetest.Burst(b, pool, burstJobs)
		}},
	}
	bin := binary(b)
	for _, load := range loads {
		for _, procs := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/procs=%d", load.name, procs), func(b *testing.B) {
				var claim, floor queuetest.Percentiles
				for range b.N {
					claim, floor = pickupByWorkers(b, bin, procs, load.feed)
				}
				floor.Report(b, "floor-", queuetest.Percentiles{})
				claim.Report(b, "claim-", floor)
			})
		}
	}
}

// pickupByWorkers starts procs workers on a fresh database, feeds it, and
// returns the claim and floor latencies.
func pickupByWorkers(b *testing.B, bin string, procs int, feed func(*testing.B, *pgxpool.Pool) map[jobs.ID]time.Time) (claim, floor queuetest.Percentiles) {
	dsn := pgtest.New(b)
	pool, err := postgres.OpenPool(context.Background(), dsn, 4)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	var mu sync.Mutex
	claimed, notified := map[jobs.ID]time.Time{}, map[jobs.ID]time.Time{}
	seen := make(chan struct{}, 1<<16)
	mark := func(m map[jobs.ID]time.Time, id jobs.ID) {
		now := time.Now()
		mu.Lock()
		_, dup := m[id]
		if !dup {
			m[id] = now
		}
		mu.Unlock()
		if !dup {
			seen <- struct{}{}
		}
	}
	fake.OnRequest(func(_ supabasetest.Op, path string) {
		if _, rest, ok := strings.Cut(path, "/videos/raw/"); ok {
			mark(claimed, jobs.ID(strings.TrimSuffix(rest, ".mp4")))
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		for {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				return
			}
			var p postgres.Notification
			if json.Unmarshal([]byte(n.Payload), &p) == nil && p.Op == "INSERT" {
				mark(notified, p.JobID)
			}
		}
	})
	for range procs {
		addr := freeAddr(b)
		cmd := exec.Command(bin, "worker")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "GEMINI_API_KEY=k", "SUPABASE_URL="+fake.URL,
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
	deadline := time.After(3 * time.Minute)
	for range 2 * len(committed) {
		select {
		case <-seen:
		case <-deadline:
			b.Fatalf("only some of %d jobs were claimed and notified", len(committed))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return queuetest.Latencies(b, committed, claimed), queuetest.Latencies(b, committed, notified)
}
