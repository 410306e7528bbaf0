package logsink_test

import (
	"sync"
	"testing"
	"testing/synctest"

	"github.com/runops/runops/internal/logsink"
)

// stall holds its first write until released; it keeps what it is given in
// the order the writes begin.
type stall struct {
	release chan struct{}
	mu      sync.Mutex
	got     []byte
	first   bool
}

func (s *stall) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.got = append(s.got, p...)
	first := !s.first
	s.first = true
	s.mu.Unlock()
	if first {
		<-s.release
	}
	return len(p), nil
}

// A line written while Close is writing what was pending comes after it:
// "a write after Close goes straight out" must not jump the lines written
// before it that are still waiting.
func TestALineDuringCloseComesAfterThePendingOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &stall{release: make(chan struct{})}
		w := logsink.New(out)
		w.Write([]byte("1\n"))
		synctest.Wait() // the sink is writing line 1, held by the stalled output
		w.Write([]byte("2\n"))
		closed := make(chan struct{})
		go func() { w.Close(); close(closed) }()
		synctest.Wait() // Close waits for the sink to write line 2
		wrote := make(chan struct{})
		go func() { w.Write([]byte("3\n")); close(wrote) }()
		synctest.Wait() // line 3 is written, or waits its turn
		close(out.release)
		<-closed
		<-wrote
		if string(out.got) != "1\n2\n3\n" {
			t.Fatalf("written in this order: %q", out.got)
		}
	})
}
