package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
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

// claimingStorage is a storage stand-in with none of the uploads (a job
// ends at once), which marks a job claimed at its first request for its
// upload (the first thing a claimed job does, after its stage write).
func claimingStorage(b *testing.B) (*supabasetest.Server, *queuetest.Picks) {
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	claimed := queuetest.NewPicks()
	fake.OnRequest(func(_ supabasetest.Op, path string) {
		if _, rest, ok := strings.Cut(path, "/videos/raw/"); ok {
			claimed.Mark(jobs.ID(strings.TrimSuffix(rest, ".mp4")))
		}
	})
	return fake, claimed
}

// pickupByWorkers starts procs workers on a fresh database (querying in
// mode; "" is the product's default), feeds it, and
// returns the claim and floor latencies.
func pickupByWorkers(b *testing.B, bin string, procs int, mode string, feed func(*testing.B, *pgxpool.Pool) map[jobs.ID]time.Time) (claim, floor queuetest.Percentiles) {
	dsn := pgtest.New(b)
	pool := pgtest.Open(b, dsn, 4)
	fake, claimed := claimingStorage(b)
	notified := queuetest.NewPicks()
	ctx, cancel := context.WithCancel(context.Background())
	defer queuetest.ListenFloor(ctx, b, dsn, notified)()
	defer cancel()
	workerDSN := dsn
	if mode != "" {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		workerDSN += sep + "default_query_exec_mode=" + mode
	}
	for range procs {
		waitReady(b, launch(b, bin, "worker", workerDSN, fake, "RUNOPS_WORKER_CONCURRENCY=8").base)
	}

	committed := feed(b, pool)
	claimed.Wait(b, len(committed))
	notified.Wait(b, len(committed))
	return claimed.Since(b, committed), notified.Since(b, committed)
}

// BenchmarkFleet runs fleets of real `runops worker` processes (10, 50 and
// 200; concurrency 2 each) against one PostgreSQL allowing 100 connections,
// as an ordinary role (so 97 of them), every query through a transaction-mode
// PgBouncer with 20 server connections and LISTEN direct — in LISTEN mode
// with the default listener slots (16), with 66% of 97 = 64 of them, and in
// poll mode (RUNOPS_LISTEN=off),
// with the defaults otherwise (RUNOPS_SWEEP 15 s). Jobs end at once (storage
// has no uploads), so only the queue is measured. It reports: connections at
// the database (direct, pooled; idle and at the burst's peak), the database's
// transactions per second and CPU time per second over a quiet period (one
// minute), pickup p50/p99 of a steady 20 jobs/s (600 jobs) against the
// floor of the same run (a bare LISTEN connection), and claims per second
// for a burst of 2,000 committed at once. Every job must be claimed once.
// 200 processes fit this machine (about 25 MB each), so they are real ones.
// -short runs 4 workers, a small load and a 3 s quiet period.
//
//	go test -run '^$' -bench Fleet -benchtime 1x -timeout 60m ./cmd/runops/
func BenchmarkFleet(b *testing.B) {
	type mode struct {
		name string
		env  []string
	}
	modes := []mode{{"listen", nil}, {"listen66%", []string{"RUNOPS_LISTENERS=66%"}}, {"poll", []string{"RUNOPS_LISTEN=off"}}}
	sizes, quiet, steady, burst := []int{10, 50, 200}, time.Minute, 600, 2000
	if testing.Short() {
		modes = []mode{modes[0], modes[2]}
		sizes, quiet, steady, burst = []int{4}, 3*time.Second, 40, 100
	}
	for _, n := range sizes {
		for _, mode := range modes {
			b.Run(fmt.Sprintf("workers=%d/%s", n, mode.name), func(b *testing.B) {
				for range b.N {
					fleetRun(b, n, mode.env, quiet, steady, burst)
				}
			})
		}
	}
}

// BenchmarkIdleFleet runs idle fleets of real `runops worker` processes (1,
// 10 and 50; the product's defaults: listener slots, RUNOPS_SWEEP 15 s)
// against one PostgreSQL through a transaction-mode PgBouncer, as
// BenchmarkFleet does, and reports the database's transactions per second
// over a quiet period (two minutes), in all and per worker: what an idle
// fleet costs. -short runs 2 workers for 3 s.
//
//	go test -run '^$' -bench IdleFleet -benchtime 1x -timeout 30m ./cmd/runops/
func BenchmarkIdleFleet(b *testing.B) {
	sizes, quiet := []int{1, 10, 50}, 2*time.Minute
	if testing.Short() {
		sizes, quiet = []int{2}, 3*time.Second
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("workers=%d", n), func(b *testing.B) {
			for range b.N {
				admin := pgtest.Server(b, 100)
				role := pgtest.Role(b, admin, -1)
				pooler := pgtest.NewBouncer(b, role, 20)
				pool := pgtest.Open(b, admin, 2)
				fake, _ := claimingStorage(b)
				startFleet(b, n, pooler.URL, role, fake)
				db := &dbWatch{pool: pool, role: role}
				db.findPostmaster(b)
				before := db.read(b)
				time.Sleep(quiet) // the measured period: nothing else happens in it
				after := db.read(b)
				pool.Close()
				perSecond := float64(after.xacts-before.xacts) / after.at.Sub(before.at).Seconds()
				b.ReportMetric(perSecond, "idle-db-xact/s")
				b.ReportMetric(perSecond/float64(n), "idle-db-xact/s/worker")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}

func fleetRun(b *testing.B, n int, env []string, quiet time.Duration, steady, burst int) {
	ctx := context.Background()
	admin := pgtest.Server(b, 100)
	role := pgtest.Role(b, admin, -1)
	pooler := pgtest.NewBouncer(b, role, 20)
	pool := pgtest.Open(b, admin, 4)
	fake, claimed := claimingStorage(b)
	floor := queuetest.NewPicks()
	fleet := startFleet(b, n, pooler.URL, role, fake, env...)
	wait.For(b, "every worker listening or polling", time.Minute, func() bool {
		for _, p := range fleet {
			if c := p.listenerCheck(b); c != "ok" && !strings.Contains(c, "slots are taken") {
				return false
			}
		}
		return true
	})
	db := &dbWatch{pool: pool, role: role}
	db.findPostmaster(b)

	// The idle fleet.
	before := db.read(b)
	time.Sleep(quiet) // the measured period: nothing else happens in it
	after := db.read(b)
	secs := after.at.Sub(before.at).Seconds()
	b.ReportMetric(float64(after.xacts-before.xacts)/secs, "idle-db-xact/s")
	b.ReportMetric(float64(after.cpu-before.cpu)/float64(time.Millisecond)/secs, "idle-db-cpu-ms/s")
	direct, pooled := db.connections(b)
	b.ReportMetric(float64(direct), "idle-conns-direct")
	b.ReportMetric(float64(pooled), "idle-conns-pooled")

	// Pickup under a steady load, against the floor.
	fctx, stop := context.WithCancel(ctx)
	waitFloor := queuetest.ListenFloor(fctx, b, admin, floor)
	committed := queuetest.Steady(b, pool, steady, 20)
	claimed.Wait(b, len(committed))
	floor.Wait(b, len(committed))
	stop()
	waitFloor()
	pick, fl := claimed.Since(b, committed), floor.Since(b, committed)
	fl.Report(b, "floor-", queuetest.Percentiles{})
	pick.Report(b, "pickup-", fl)

	// Claims per second for a burst, and the connections it takes.
	peakDirect, peakPooled := direct, pooled
	var mu sync.Mutex
	sampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Go(func() {
		for {
			select {
			case <-sampling:
				return
			case <-time.After(100 * time.Millisecond): // sampling pace
			}
			d, p := db.connections(b)
			mu.Lock()
			peakDirect, peakPooled = max(peakDirect, d), max(peakPooled, p)
			mu.Unlock()
		}
	})
	burstAt := queuetest.Burst(b, pool, burst)
	var at time.Time
	for _, t := range burstAt {
		at = t
		break
	}
	claimed.Wait(b, burst)
	last := claimed.Last()
	close(sampling)
	sampled.Wait()
	b.ReportMetric(float64(burst)/last.Sub(at).Seconds(), "burst-claims/s")
	b.ReportMetric(float64(peakDirect), "peak-conns-direct")
	b.ReportMetric(float64(peakPooled), "peak-conns-pooled")

	var twice int
	wait.For(b, "every job ended", 3*time.Minute, func() bool {
		var open int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')`).Scan(&open)
		return open == 0
	})
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE jsonb_array_length(metadata->'attempts') <> 1`).Scan(&twice); err != nil || twice != 0 {
		b.Fatalf("%d jobs claimed other than once: %v", twice, err)
	}
	if refused := refusedLogin.FindAllString(pooler.Log(), -1); len(refused) > 0 {
		b.Fatalf("PgBouncer's logins were refused %d times", len(refused))
	}
	b.ReportMetric(0, "ns/op")
}

// dbWatch reads what the fleet costs the database.
type dbWatch struct {
	pool       *pgxpool.Pool
	role       string
	postmaster int
}

type dbSample struct {
	at    time.Time
	xacts int64
	cpu   time.Duration // the server's processes, living and reaped
}

func (w *dbWatch) findPostmaster(b *testing.B) {
	var backend int
	if err := w.pool.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	st, err := procStat(backend)
	if err != nil {
		b.Fatal(err)
	}
	w.postmaster = st.ppid
}

func (w *dbWatch) read(b *testing.B) dbSample {
	s := dbSample{at: time.Now()}
	if err := w.pool.QueryRow(context.Background(), `SELECT xact_commit + xact_rollback FROM pg_stat_database
		WHERE datname = current_database()`).Scan(&s.xacts); err != nil {
		b.Fatal(err)
	}
	pm, err := procStat(w.postmaster)
	if err != nil {
		b.Fatal(err)
	}
	ticks := pm.utime + pm.stime + pm.cutime + pm.cstime // children that ended count in cutime, cstime
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := procStat(pid); err == nil && st.ppid == w.postmaster {
			ticks += st.utime + st.stime
		}
	}
	s.cpu = time.Duration(ticks) * time.Second / 100 // USER_HZ
	return s
}

// connections counts the role's connections at the database: the
// listeners' (direct) and the others (PgBouncer's server connections).
func (w *dbWatch) connections(b *testing.B) (direct, pooled int) {
	u, err := url.Parse(w.role)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.pool.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE application_name = 'runops-listener'),
		count(*) FILTER (WHERE application_name IS DISTINCT FROM 'runops-listener')
		FROM pg_stat_activity WHERE usename = $1`, u.User.Username()).Scan(&direct, &pooled); err != nil {
		b.Error(err)
	}
	return direct, pooled
}

type stat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// procStat reads /proc/<pid>/stat (proc(5)).
func procStat(pid int) (stat, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, err
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) "
	if len(f) < 15 {
		return stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var st stat
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseInt(f[11], 10, 64)
	st.stime, _ = strconv.ParseInt(f[12], 10, 64)
	st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return st, nil
}
