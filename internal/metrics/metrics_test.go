package metrics_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/metrics"
)

// A failed read of the queue shows no queue numbers (runops_jobs,
// runops_queue_oldest_seconds) until a read succeeds again: never the last
// good ones as current, which a scaler on max() would hold the fleet to.
func TestAFailedQueueReadIsNotServedAsCurrent(t *testing.T) {
	var down atomic.Bool
	stop := metrics.WatchQueue(func(context.Context) (metrics.QueueStats, error) {
		if down.Load() {
			return metrics.QueueStats{}, errors.New("database unreachable")
		}
		return metrics.QueueStats{ByStatus: map[string]int{"queued": 7}, OldestQueued: time.Minute}, nil
	}, time.Nanosecond) // every scrape reads (the 5 s cache long past)
	t.Cleanup(stop)
	// shown is runops_jobs{status="queued"} (ok: it is shown) and whether
	// runops_queue_oldest_seconds is.
	shown := func() (queued float64, ok, oldest bool) {
		mfs, err := metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "runops_queue_oldest_seconds":
				oldest = true
			case "runops_jobs":
				for _, m := range mf.Metric {
					for _, l := range m.Label {
						if l.GetName() == "status" && l.GetValue() == "queued" {
							queued, ok = m.GetGauge().GetValue(), true
						}
					}
				}
			}
		}
		return queued, ok, oldest
	}
	if v, ok, oldest := shown(); !ok || v != 7 || !oldest {
		t.Fatalf("runops_jobs{status=queued} = %v (%v), oldest shown %v; want 7 and both shown", v, ok, oldest)
	}
	down.Store(true)
	for range 3 {
		if v, ok, oldest := shown(); ok || oldest {
			t.Fatalf("the query fails, yet a scrape serves runops_jobs{status=queued} %v (%v), oldest shown %v", v, ok, oldest)
		}
	}
	down.Store(false)
	if v, ok, oldest := shown(); !ok || v != 7 || !oldest {
		t.Fatalf("after the database came back: runops_jobs{status=queued} = %v (%v), oldest shown %v", v, ok, oldest)
	}
}
