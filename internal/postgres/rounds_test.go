package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/runops/runops/internal/wait"
)

// gate is a round's read that waits to be let through, one statement at a
// time, answering each key with the statement's number.
type gate struct {
	mu      sync.Mutex
	calls   int
	running int
	most    int
	began   chan int
	let     chan error
	ended   chan bool // each statement's end: whether its context was live then
}

func newGate() *gate {
	return &gate{began: make(chan int, 100), let: make(chan error), ended: make(chan bool, 100)}
}

func (g *gate) read(ctx context.Context, keys []string) (map[string]int, error) {
	g.mu.Lock()
	g.calls++
	n := g.calls
	g.running++
	g.most = max(g.most, g.running)
	g.mu.Unlock()
	g.began <- n
	err := <-g.let
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
	g.ended <- ctx.Err() == nil
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, k := range keys {
		if k != "none" {
			out[k] = n
		}
	}
	return out, nil
}

// waiting is how many reads have joined the round not yet started.
func waiting[K comparable, V any](s *rounds[K, V]) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		return 0
	}
	return s.next.readers
}

// untilWaiting yields until n reads have joined the next round.
func untilWaiting[K comparable, V any](t *testing.T, s *rounds[K, V], n int) {
	t.Helper()
	wait.For(t, fmt.Sprintf("%d reads to wait for the next round", n), 30*time.Second, func() bool { return waiting(s) >= n })
}

type answer struct {
	v     int
	found bool
	err   error
}

func TestRoundsNeverAnswerFromAStatementBegunBefore(t *testing.T) {
	g := newGate()
	s := &rounds[string, int]{limit: 1, read: g.read}
	first, second := make(chan answer), make(chan answer)
	ask := func(key string, to chan answer) {
		v, ok, err := s.get(context.Background(), key)
		to <- answer{v, ok, err}
	}
	go ask("job", first)
	if n := wait.Recv(t, g.began, "a read to begin"); n != 1 {
		t.Fatalf("statement %d began first", n)
	}
	// The same key, asked while statement 1 runs: it waits for the next.
	go ask("job", second)
	untilWaiting(t, s, 1)
	g.let <- nil
	if a := wait.Recv(t, first, "the first answer"); a != (answer{1, true, nil}) {
		t.Fatalf("the first read got %+v, want statement 1's row", a)
	}
	if n := wait.Recv(t, g.began, "a read to begin"); n != 2 {
		t.Fatalf("statement %d began second", n)
	}
	g.let <- nil
	if a := wait.Recv(t, second, "the second answer"); a != (answer{2, true, nil}) {
		t.Fatalf("the read asked during statement 1 got %+v, want statement 2's row", a)
	}
}

func TestRoundsShareAStatementAndKeepToTheLimit(t *testing.T) {
	g := newGate()
	s := &rounds[string, int]{limit: 2, read: g.read}
	answers := make(chan answer, 10)
	ask := func(key string) {
		v, ok, err := s.get(context.Background(), key)
		answers <- answer{v, ok, err}
	}
	go ask("a")
	go ask("b")
	wait.Recv(t, g.began, "a read to begin")
	wait.Recv(t, g.began, "a read to begin")
	// Two statements run: eight more reads wait for one round.
	for _, k := range []string{"c", "d", "e", "f", "g", "h", "i", "none"} {
		go ask(k)
	}
	untilWaiting(t, s, 8)
	g.let <- nil // statement 1 or 2 ends; the round of eight begins
	if n := wait.Recv(t, g.began, "a read to begin"); n != 3 {
		t.Fatalf("statement %d began third", n)
	}
	g.let <- nil
	g.let <- nil
	counts := map[int]int{}
	for range 10 {
		a := wait.Recv(t, answers, "an answer")
		if a.err != nil {
			t.Fatal(a.err)
		}
		counts[a.v]++
	}
	// "none" has no row: answered, not found, counted as 0.
	if counts[3] != 7 || counts[0] != 1 || g.calls != 3 || g.most > 2 {
		t.Fatalf("answers by statement %v, %d statements, %d at most at once; want 7 from the third, 3 statements, at most 2",
			counts, g.calls, g.most)
	}
}

func TestRoundsFailTogetherAndLetReadersLeave(t *testing.T) {
	g := newGate()
	s := &rounds[string, int]{limit: 1, read: g.read}
	bg := context.Background()
	answers := make(chan answer, 3)
	ask := func(ctx context.Context, key string) {
		v, ok, err := s.get(ctx, key)
		answers <- answer{v, ok, err}
	}
	// leave ends a read's request: it stops waiting at once.
	leave := func(end context.CancelFunc) {
		t.Helper()
		end()
		if a := wait.Recv(t, answers, "an answer"); !errors.Is(a.err, context.Canceled) {
			t.Fatalf("a read whose request ended got %+v", a)
		}
	}
	go ask(bg, "a")
	wait.Recv(t, g.began, "a read to begin")
	// Two reads wait for the next round; the first of them, which opens
	// it, leaves: the round still answers the other, its statement alive.
	first, leaveFirst := context.WithCancel(bg)
	go ask(first, "b")
	untilWaiting(t, s, 1)
	go ask(bg, "c")
	untilWaiting(t, s, 2)
	leave(leaveFirst)
	g.let <- nil
	wait.Recv(t, g.ended, "a read to end")
	wait.Recv(t, answers, "a's answer")
	wait.Recv(t, g.began, "a read to begin")
	outage := errors.New("connection refused")
	g.let <- outage
	if a := wait.Recv(t, answers, "an answer"); !errors.Is(a.err, outage) || a.found {
		t.Fatalf("a read of a failed statement got %+v", a)
	}
	if live := wait.Recv(t, g.ended, "a read to end"); !live {
		t.Fatal("the statement was cancelled when the read that opened its round left")
	}

	// Every read of a running statement leaves: the statement is cancelled.
	gone, leaveGone := context.WithCancel(bg)
	go ask(gone, "d")
	wait.Recv(t, g.began, "a read to begin")
	leave(leaveGone)
	g.let <- nil
	if live := wait.Recv(t, g.ended, "a read to end"); live {
		t.Fatal("a statement no read waits for was not cancelled")
	}

	// Every read of a round not begun leaves: it never runs.
	go ask(bg, "e")
	wait.Recv(t, g.began, "a read to begin")
	waitingCtx, leaveWaiting := context.WithCancel(bg)
	go ask(waitingCtx, "f")
	untilWaiting(t, s, 1)
	leave(leaveWaiting)
	g.let <- nil
	if a := wait.Recv(t, answers, "an answer"); a != (answer{4, true, nil}) {
		t.Fatalf("the running statement's read got %+v", a)
	}
	// The round's answer is sent before it counts itself done: wait for that.
	wait.For(t, "the running round to end", 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.running == 0
	})
	s.mu.Lock()
	next := s.next
	s.mu.Unlock()
	if g.calls != 4 || next != nil {
		t.Fatalf("%d statements, a round waiting: %v; want the left round never run", g.calls, next != nil)
	}
}

// A round holds each key once, in the order first asked, whether it has a
// few keys (looked through) or many (a set).
func TestARoundHoldsEachKeyOnce(t *testing.T) {
	for _, n := range []int{1, 8, 9, 40} {
		r := &round[int, int]{}
		var want []int
		for i := range n {
			want = append(want, i)
			for range 3 { // asked again at once, and again after the others
				r.add(i)
			}
		}
		for i := range n {
			r.add(i)
		}
		if fmt.Sprint(r.keys) != fmt.Sprint(want) {
			t.Errorf("%d keys asked for four times each: the round holds %v", n, r.keys)
		}
	}
}
