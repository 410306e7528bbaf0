// Package backoff gives every retry loop of the service its waits: the
// first, how they grow (doubling, up to a ceiling), and how much they are
// spread (jitter). The loops keep what differs between them — what they
// retry, what counts as transient, when they give up — and ask a Policy for
// how long to wait (docs/lifecycle.md, "Glossary": retries).
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy is how the waits between tries grow: First after the first
// failure, doubling after each one more up to Max (0: no ceiling), and
// then each spread over ±Jitter of itself (0.2 is ±20 %), so a wait at the
// ceiling may be up to Jitter over it.
type Policy struct {
	First  time.Duration
	Max    time.Duration
	Jitter float64
}

// Wait is the wait after n failed tries (n ≥ 1; less counts as 1). Past
// what a Duration holds, the wait stays at the longest one.
func (p Policy) Wait(n int) time.Duration {
	shift := min(max(n, 1)-1, 62)
	d := time.Duration(math.MaxInt64)
	if p.First <= d>>shift {
		d = p.First << shift
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	return Spread(d, p.Jitter)
}

// Spread returns d moved by a random amount of at most ±frac of it (frac
// at most 1), so that many workers doing the same thing every d do not do
// it at once. The result stays within what a Duration holds.
func Spread(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	span := d
	if frac < 1 {
		span = time.Duration(float64(d) * frac)
	}
	lo, hi := d-span, time.Duration(math.MaxInt64)
	if d <= hi-span {
		hi = d + span
	}
	n := int64(hi - lo)
	if n < math.MaxInt64 {
		n++
	}
	return lo + time.Duration(rand.Int64N(n))
}

// Backoff counts a loop's failed tries and gives the wait after each.
type Backoff struct {
	Policy
	failed int
}

// Next counts one more failed try and returns the wait before the next.
func (b *Backoff) Next() time.Duration {
	b.failed++
	return b.Wait(b.failed)
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.failed = 0 }
