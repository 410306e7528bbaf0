package logsink_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/runops/runops/internal/logsink"
)

// gate is an io.Writer that holds every write until it is opened, and
// counts the writes.
type gate struct {
	open   chan struct{}
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	return g.buf.Write(p)
}

// Lines written at once by many goroutines all arrive, whole and each in
// its writer's order, also past the pending limit while the output is
// stalled; Close returns once all are written; a write after Close goes
// straight out.
func TestEveryLineArrivesWhole(t *testing.T) {
	t.Parallel()
	g := &gate{open: make(chan struct{})}
	w := logsink.New(g)
	const writers, lines = 16, 2000
	line := strings.Repeat("x", 100) // 16 × 2,000 × ~120 B: past the 1 MiB limit
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range lines {
				if _, err := fmt.Fprintf(w, "%d %d %s\n", i, j, line); err != nil {
					t.Error(err)
				}
			}
		})
	}
	close(g.open) // the reader starts only now: writers have had to wait
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(w, "after close\n"); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(g.buf.String(), "\n"), "\n")
	if len(got) != writers*lines+1 || got[len(got)-1] != "after close" {
		t.Fatalf("%d lines, last %q", len(got), got[len(got)-1])
	}
	next := make([]int, writers)
	for _, l := range got[:len(got)-1] {
		var i, j int
		var rest string
		if _, err := fmt.Sscanf(l, "%d %d %s", &i, &j, &rest); err != nil || rest != line || j != next[i] {
			t.Fatalf("line %q (want writer %d's line %d)", l, i, next[i])
		}
		next[i]++
	}
	if g.writes >= writers*lines {
		t.Fatalf("%d writes for %d lines: none batched", g.writes, writers*lines)
	}
}

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
