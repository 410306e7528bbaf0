package postgres

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
