// Package wait polls, in tests, until something holds: a generous deadline
// that fails the test saying what never happened, never an assertion on how
// long it took. For tests only.
package wait

import (
	"testing"
	"time"
)

// every paces the polls.
const every = 10 * time.Millisecond

// For polls cond until it holds; past within, the test fails with "timed out
// waiting for <what>" and, when last is given, what it says it saw.
func For(tb testing.TB, what string, within time.Duration, cond func() bool, last ...func() string) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			saw := ""
			for _, l := range last {
				saw += "; " + l()
			}
			tb.Fatalf("timed out waiting for %s%s", what, saw)
		}
		time.Sleep(every) // poll pacing, not synchronisation
	}
}

// Recv waits for a value on ch and returns it; past 30 s, the test fails
// with "timed out waiting for <what>".
func Recv[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}
