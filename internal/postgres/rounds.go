package postgres

import (
	"context"
	"slices"
	"sync"
)

// rounds lets the reads of many requests share one statement (README,
// "The API's pace"). While fewer than limit statements run, a read starts
// one at once, for itself and every read waiting; past that it joins the
// next round, which starts as soon as a running one ends, and reads every
// key that joined it. A read is never answered from a statement that began
// before it arrived: it joins only a round not yet started, so its answer
// is the row as it was at the earliest when the request came — what a
// statement of its own would say. Statements run in goroutines of their
// own, so every read can stop waiting when its request ends.
type rounds[K comparable, V any] struct {
	limit int
	// read answers a round's keys; a key it leaves out has no row.
	read func(ctx context.Context, keys []K) (map[K]V, error)

	mu      sync.Mutex
	running int
	next    *round[K, V] // not started; nil when no read waits
}

// round is one statement's keys and, once done is closed, its answer.
type round[K comparable, V any] struct {
	// ctx is the first read's, without its cancellation or deadline: no
	// one request's end may fail the others' reads. It is cancelled once
	// no read waits for the answer.
	ctx     context.Context
	cancel  context.CancelFunc
	keys    []K            // each once, however many reads ask for it
	asked   map[K]struct{} // keys' set, once there are many (a few are looked through)
	readers int            // reads still waiting for it
	done    chan struct{}
	got     map[K]V
	err     error
}

// get returns key's row and whether it has one. A read whose ctx ends
// first stops waiting; the round goes on for the others, and its statement
// is cancelled when none is left.
func (s *rounds[K, V]) get(ctx context.Context, key K) (V, bool, error) {
	s.mu.Lock()
	r := s.next
	if r == nil {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r = &round[K, V]{ctx: rctx, cancel: cancel, done: make(chan struct{})}
		s.next = r
	}
	r.add(key)
	r.readers++
	start := s.running < s.limit
	if start {
		s.running++
		s.next = nil
	}
	s.mu.Unlock()
	if start {
		go s.run(r)
	}
	select {
	case <-r.done:
		v, ok := r.got[key]
		return v, ok, r.err
	case <-ctx.Done():
		s.leave(r)
		var zero V
		return zero, false, ctx.Err()
	}
}

// add puts key in r's keys unless it is there (many viewers poll one job).
func (r *round[K, V]) add(key K) {
	const few = 8
	if r.asked == nil {
		if slices.Contains(r.keys, key) {
			return
		}
		if r.keys = append(r.keys, key); len(r.keys) > few {
			r.asked = make(map[K]struct{}, 2*few)
			for _, k := range r.keys {
				r.asked[k] = struct{}{}
			}
		}
		return
	}
	if _, ok := r.asked[key]; !ok {
		r.asked[key] = struct{}{}
		r.keys = append(r.keys, key)
	}
}

// leave counts a read out of r. The last one out cancels r's statement,
// or, when r has not started, takes r out of line: it never runs.
func (s *rounds[K, V]) leave(r *round[K, V]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.readers--
	if r.readers > 0 {
		return
	}
	if s.next == r {
		s.next = nil
	}
	r.cancel()
}

// run answers r, then each round that gathered meanwhile, until none has.
func (s *rounds[K, V]) run(r *round[K, V]) {
	for r != nil {
		r.got, r.err = s.read(r.ctx, r.keys)
		r.cancel()
		close(r.done)
		s.mu.Lock()
		r = s.next
		if r == nil {
			s.running--
		} else {
			s.next = nil
		}
		s.mu.Unlock()
	}
}
