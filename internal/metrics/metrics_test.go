package metrics_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/metrics"
)

// runops_jobs and runops_queue_oldest_seconds are "one query, cached 5 s"
// (docs/operations.md): once the query fails (the database unreachable, or
// the pool saturated past the read's 2 s under heavy load), a scrape must not
// go on serving the last good numbers as current, for as long as the
// failure lasts. An autoscaler aggregating them with max() keeps a frozen
// queue for good, and a queue growing meanwhile is never seen.
// A failed read of the queue shows no queue numbers until a read succeeds
// again. Before, every scrape served the last good numbers as current for
// as long as the database stayed away, and a scaler on max() held the fleet
// to a queue that had moved.
func TestAFailedQueueReadIsNotServedAsCurrent(t *testing.T) {
	var down atomic.Bool
	metrics.WatchQueue(func(context.Context) (metrics.QueueStats, error) {
		if down.Load() {
			return metrics.QueueStats{}, errors.New("database unreachable")
		}
		return metrics.QueueStats{ByStatus: map[string]int{"queued": 7}, OldestQueued: time.Minute}, nil
	}, time.Nanosecond) // every scrape reads (the 5 s cache long past)
	queued := func() (float64, bool) {
		mfs, err := metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "runops_jobs" {
				continue
			}
			for _, m := range mf.Metric {
				for _, l := range m.Label {
					if l.GetName() == "status" && l.GetValue() == "queued" {
						return m.GetGauge().GetValue(), true
					}
				}
			}
		}
		return 0, false
	}
	if v, ok := queued(); !ok || v != 7 {
		t.Fatalf("runops_jobs{status=queued} = %v (%v); want 7", v, ok)
	}
	down.Store(true)
	for range 3 {
		if v, ok := queued(); ok {
			t.Fatalf("the query fails, yet every scrape still serves runops_jobs{status=queued} %v as current", v)
		}
	}
	down.Store(false)
	if v, ok := queued(); !ok || v != 7 {
		t.Fatalf("after the database came back: runops_jobs{status=queued} = %v (%v); want 7", v, ok)
	}
}
