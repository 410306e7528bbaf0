package api

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/wait"
)

// Edits of one SOP take turns in the process; edits of others do not wait;
// a wait that runs out is "busy"; nothing is left behind.
func TestEditLocksTakeTurns(t *testing.T) {
	var l editLocks
	ctx := context.Background()
	a, b := jobs.ID("a"), jobs.ID("b")
	unlockA, err := l.lock(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	unlockB, err := l.lock(ctx, b) // another SOP: no wait
	if err != nil {
		t.Fatal(err)
	}
	unlockB()

	const n = 40
	var inside, most atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			unlock, err := l.lock(ctx, a)
			if err != nil {
				t.Error(err)
				return
			}
			if now := inside.Add(1); now > most.Load() {
				most.Store(now)
			}
			inside.Add(-1)
			unlock()
		})
	}
	// Every waiter has queued behind the holder.
	refs := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.held[a].refs
	}
	wait.For(t, "every waiter queued behind the holder", 30*time.Second, func() bool { return refs() == n+1 },
		func() string { return fmt.Sprintf("%d of %d waiting", refs()-1, n) })
	if inside.Load() != 0 {
		t.Fatal("an edit ran while another held the SOP")
	}
	unlockA()
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d edits at once", most.Load())
	}
	l.mu.Lock()
	left := len(l.held)
	l.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d entries left behind", left)
	}

	editWait = 50 * time.Millisecond
	defer func() { editWait = 5 * time.Second }()
	unlock, _ := l.lock(ctx, a)
	if _, err := l.lock(ctx, a); err != errSOPBusy {
		t.Fatalf("a wait that ran out: %v", err)
	}
	unlock()
}
