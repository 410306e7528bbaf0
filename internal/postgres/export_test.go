package postgres

import (
	"context"
	"time"

	"github.com/runops/runops/internal/queue"
)

// HoldOutcomes makes outcomes queue up as they do behind a write in flight;
// the returned func writes what has queued, together (tests only).
func (s *QueueStore) HoldOutcomes() (queued func() int, release func()) {
	b := &s.outcomes
	b.mu.Lock()
	b.writing = true
	b.mu.Unlock()
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
