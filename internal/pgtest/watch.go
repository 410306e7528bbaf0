package pgtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/wait"
)

// WatchMax runs query, which answers one integer, again and again on pool
// until stop is called, and stop returns the largest answer seen: for a
// bound that must hold at every moment (an owner's jobs processing at
// once), not only at the end. A query that fails before stop fails the test.
func WatchMax(t testing.TB, pool *pgxpool.Pool, query string) (stop func() int64) {
	var done atomic.Bool
	var most atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !done.Load() {
			var n int64
			if err := pool.QueryRow(context.Background(), query).Scan(&n); err != nil {
				if !done.Load() {
					t.Errorf("%s: %v", query, err)
				}
				return
			}
			if n > most.Load() {
				most.Store(n)
			}
		}
	})
	stop = func() int64 {
		done.Store(true)
		wg.Wait()
		return most.Load()
	}
	t.Cleanup(func() { stop() }) // a test that ends early stops it too
	return stop
}

// Exec returns a function that runs SQL on pool, failing the test on an
// error.
func Exec(tb testing.TB, pool *pgxpool.Pool) func(sql string, args ...any) {
	return func(sql string, args ...any) {
		tb.Helper()
		if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
			tb.Fatal(err)
		}
	}
}

// UntilWaiting polls, under wait.For's deadline, until a session of pool's
// database waits on event (Waiting): another session is held where the
// test wants it.
func UntilWaiting(tb testing.TB, pool *pgxpool.Pool, what, event string) {
	tb.Helper()
	wait.For(tb, what, 30*time.Second, func() bool { return Waiting(pool, event) })
}

// Waiting tells whether a session of pool's database waits on event
// (pg_stat_activity.wait_event: "advisory", "transactionid", "tuple").
func Waiting(pool *pgxpool.Pool, event string) bool {
	var n int
	_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event = $1`, event).Scan(&n)
	return n > 0
}

// EndAdvisoryHolders ends the backends that hold an advisory lock in pool's
// database (the SOP lock's holder), as a lost connection does: their locks
// go with them.
func EndAdvisoryHolders(tb testing.TB, pool *pgxpool.Pool) {
	tb.Helper()
	var ended bool
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(bool_and(pg_terminate_backend(pid, 5000)), false)
FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ended); err != nil || !ended {
		tb.Fatalf("ending the lock holder's backend: %v %v", ended, err)
	}
}
