package pgtest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
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
