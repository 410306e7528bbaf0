package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/wait"
)

// HoldOutcomes makes outcomes queue up as they do behind a write in flight;
// the returned func writes what has queued, together (tests only). It first
// waits for the write before it to end: that write answers its outcomes
// before it marks the batcher idle, and marking it so after this hold
// would let the next outcome write at once.
func (s *QueueStore) HoldOutcomes(tb testing.TB) (queued func() int, release func()) {
	b := &s.outcomes
	wait.For(tb, "the previous write of outcomes to end", 30*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.writing {
			return false
		}
		b.writing = true
		return true
	})
	queued = func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue)
	}
	return queued, func() { go s.writeOutcomes() }
}

// ClaimWith runs a claim statement of a benchmark's own, read as Claim reads
// its own (tests only).
func (s *QueueStore) ClaimWith(ctx context.Context, sql, worker string, n int, ttl time.Duration) ([]queue.Claimed, error) {
	return s.claimWith(ctx, sql, worker, n, ttl)
}

// StatusReads says how many of job-status's shared statements run and how
// many reads wait for the next one (tests only).
func (s *JobStore) StatusReads() (running, waiting int) {
	r := s.statusReads
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next != nil {
		waiting = r.next.readers
	}
	return r.running, waiting
}

// PruneDeep is pruneDeep (tests only).
func PruneDeep(raw []byte, limit int) []byte { return pruneDeep(raw, limit) }

// Wrap is wrap, for the tests of the errors it tells apart.
var Wrap = wrap

// DueDeliveriesSQL is the outbox's Due statement, for a test of its plan.
const DueDeliveriesSQL = dueDeliveries

// QueueNowSQL is the queue gauges' statement, for a test of its plan.
const QueueNowSQL = queueNow
