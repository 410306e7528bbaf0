// Package logsink writes a process's log lines for it, so that whoever logs
// (every API request writes a line) only copies its line into memory: no
// lock is held across a write to stderr, and lines that arrive together
// leave in one write. Nothing is dropped: a caller waits only while more
// than maxPending bytes are still unwritten (a stalled reader), and Close
// writes what is left.
package logsink

import (
	"io"
	"sync"
)

// maxPending is how much may wait to be written before callers wait too.
const maxPending = 1 << 20

// Writer is an io.Writer that writes to out from a goroutine of its own.
type Writer struct {
	out io.Writer

	mu      sync.Mutex
	room    *sync.Cond // signalled when a batch has been written
	pending []byte
	closed  bool
	wake    chan struct{} // a batch is waiting (buffered: one is enough)
	done    chan struct{} // the writing goroutine has ended
}

// New starts a Writer to out.
func New(out io.Writer) *Writer {
	w := &Writer{out: out, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.room = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write copies p to be written; it returns at once unless too much is
// waiting already. After Close, p is written directly, once what was
// pending has been (a line never jumps those written before it).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) > maxPending && !w.closed {
		w.room.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return w.out.Write(p)
	}
	w.pending = append(w.pending, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// run writes what is pending, a batch at a time, with no lock held.
func (w *Writer) run() {
	defer close(w.done)
	var batch []byte
	for {
		w.mu.Lock()
		for len(w.pending) == 0 && !w.closed {
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		batch, w.pending = w.pending, batch[:0]
		closed := w.closed
		w.mu.Unlock()
		if len(batch) > 0 {
			_, _ = w.out.Write(batch) // a log with nowhere to go has no one to tell
		}
		w.mu.Lock()
		w.room.Broadcast()
		w.mu.Unlock()
		if closed && len(batch) == 0 {
			return
		}
	}
}

// Close writes what is pending and returns once it is written; later
// writes go straight to out.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.room.Broadcast()
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
	return nil
}
