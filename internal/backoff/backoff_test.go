package backoff_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/runops/runops/internal/backoff"
)

// Waits double from First up to Max, each within its jitter; a Backoff
// counts failures and starts over after Reset.
func TestWaitsGrowAndSpread(t *testing.T) {
	t.Parallel()
	exact := backoff.Policy{First: 100 * time.Millisecond, Max: 2 * time.Second}
	var got []time.Duration
	for n := range 8 {
		got = append(got, exact.Wait(n))
	}
	want := []time.Duration{100, 100, 200, 400, 800, 1600, 2000, 2000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	if d := (backoff.Policy{First: time.Second}).Wait(1000); d <= 0 {
		t.Fatalf("no ceiling, 1000 tries: %v", d)
	}

	spread := backoff.Policy{First: time.Second, Max: time.Hour, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := spread.Wait(3)
		if d < 3200*time.Millisecond || d > 4800*time.Millisecond {
			t.Fatalf("wait after 3 tries %v, want 4 s ± 20 %%", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("%d distinct waits out of 200: not spread", len(seen))
	}
	if d := spread.Wait(40); d < 48*time.Minute || d > 72*time.Minute {
		t.Fatalf("wait after 40 tries %v, want the hour's ceiling ± 20 %%", d)
	}

	b := backoff.Backoff{Policy: exact}
	if waits(&b, 4) != "100ms 200ms 400ms 800ms" {
		t.Fatal("Next does not double")
	}
	b.Reset()
	if waits(&b, 1) != "100ms" {
		t.Fatal("Reset does not start over")
	}
}

// waits are the answers of n calls of b.Next: each wait, or "give up".
func waits(b *backoff.Backoff, n int) string {
	var out []string
	for range n {
		d, ok := b.Next()
		if !ok {
			out = append(out, "give up")
			continue
		}
		out = append(out, d.String())
	}
	return strings.Join(out, " ")
}

// A Backoff gives up on the try that spends its tries, or before a wait
// that would take its waits past its budget; a wait the server asked for
// counts against the budget in place of the policy's; Reset gives the
// tries and the budget back.
func TestABackoffGivesUp(t *testing.T) {
	t.Parallel()
	tries := backoff.Backoff{Policy: backoff.Policy{First: time.Second, Tries: 3}}
	if got := waits(&tries, 3); got != "1s 2s give up" {
		t.Fatalf("three tries: %s", got)
	}
	if tries.Failed() != 3 {
		t.Fatalf("counted %d failures, want 3", tries.Failed())
	}
	budget := backoff.Backoff{Policy: backoff.Policy{First: time.Second, Budget: 7 * time.Second}}
	if got := waits(&budget, 4); got != "1s 2s 4s give up" {
		t.Fatalf("a 7 s budget: %s", got)
	}
	budget.Reset()
	if d, ok := budget.NextAsked(5 * time.Second); !ok || d != 5*time.Second {
		t.Fatalf("a wait asked for: %v %v, want 5s", d, ok)
	}
	if got := waits(&budget, 2); got != "2s give up" {
		t.Fatalf("after 5 s asked for, of 7 s: %s", got)
	}
	// A wait asked for past what is left of the budget gives up, however
	// long: the waits' sum must not wrap (a fresh-eye attack's finding).
	for _, asked := range []time.Duration{math.MaxInt64, 9223372036 * time.Second} {
		huge := backoff.Backoff{Policy: backoff.Policy{First: time.Second, Budget: 2 * time.Minute}}
		huge.Next()
		if d, ok := huge.NextAsked(asked); ok {
			t.Fatalf("after 1 s of a 2 min budget, %v asked for is waited (%v)", asked, d)
		}
	}
	one := backoff.Backoff{Policy: backoff.Policy{First: time.Second, Tries: 1}}
	if got := waits(&one, 1); got != "give up" {
		t.Fatalf("one try: %s", got)
	}
	never := backoff.Backoff{Policy: backoff.Policy{First: time.Second, Max: time.Second}}
	if got := waits(&never, 3); got != "1s 1s 1s" {
		t.Fatalf("no tries or budget set: %s", got)
	}
}

// A policy without a ceiling never waits less than its first wait, however
// many tries and whatever its first wait: past what a Duration holds, the
// waits stay at the longest one (not 0, a loop without a pause; not
// negative, a wrapped sum).
func TestWaitsWithoutACeilingNeverWrap(t *testing.T) {
	t.Parallel()
	for _, p := range []backoff.Policy{
		{First: 10 * time.Second},
		{First: 20 * time.Second},
		{First: 8 * time.Second, Jitter: 0.2},
		{First: time.Hour, Jitter: 0.5},
	} {
		for n := 1; n <= 100; n++ {
			if d := p.Wait(n); d < p.First-time.Duration(float64(p.First)*p.Jitter) {
				t.Fatalf("%+v: the wait after %d tries is %v", p, n, d)
			}
		}
	}
}
