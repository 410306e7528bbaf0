package postgres

import (
	"context"
	"sync"
)

// rounds lets the reads of many requests share one statement (README,
// "The API's pace"). While fewer than limit statements run, a read starts
// one at once, for itself and every read waiting; past that it joins the
// next round, which starts as soon as a running one ends, and reads every
// key that joined it. A read is never
// answered from a statement that began before it arrived: it joins only a
// round not yet started, so its answer is the row as it was at the
// earliest when the request came — what a statement of its own would say.
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
	ctx  context.Context // the first read's, without its cancellation
	keys []K
	done chan struct{}
	got  map[K]V
	err  error
}

// get returns key's row and whether it has one. A read whose ctx ends
// first stops waiting; the round still answers the others.
func (s *rounds[K, V]) get(ctx context.Context, key K) (V, bool, error) {
	s.mu.Lock()
	r := s.next
	if r == nil {
		r = &round[K, V]{ctx: ctx, done: make(chan struct{})}
		s.next = r
	}
	r.keys = append(r.keys, key)
	start := s.running < s.limit
	if start {
		s.running++
		s.next = nil
	}
	s.mu.Unlock()
	if start {
		s.run(r)
	}
	select {
	case <-r.done:
		v, ok := r.got[key]
		return v, ok, r.err
	case <-ctx.Done():
		var zero V
		return zero, false, ctx.Err()
	}
}

// run answers r, then starts the round that gathered meanwhile, if any,
// in a goroutine of its own: the read that started r answers its request
// without waiting for it.
func (s *rounds[K, V]) run(r *round[K, V]) {
	ctx, cancel := context.WithoutCancel(r.ctx), context.CancelFunc(func() {})
	if d, ok := r.ctx.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	}
	r.got, r.err = s.read(ctx, r.keys)
	cancel()
	close(r.done)
	s.mu.Lock()
	next := s.next
	if next == nil {
		s.running--
	} else {
		s.next = nil
	}
	s.mu.Unlock()
	if next != nil {
		go s.run(next)
	}
}
