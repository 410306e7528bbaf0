package logsink_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"

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
