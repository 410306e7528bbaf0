// Package backoff gives every retry loop of the service its waits: the
// first, how they grow (doubling, up to a ceiling), and how much they are
// spread (jitter). The loops keep what differs between them — what they
// retry, what counts as transient, when they give up — and ask a Policy for
// how long to wait (docs/lifecycle.md, "Glossary": retries).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is how the waits between tries grow: First after the first
// failure, doubling after each one more, never over Max (0: no ceiling),
// each spread over ±Jitter of itself (0.2 is ±20 %).
type Policy struct {
	First  time.Duration
	Max    time.Duration
	Jitter float64
}

// Wait is the wait after n failed tries (n ≥ 1; less counts as 1).
func (p Policy) Wait(n int) time.Duration {
	d := p.First << min(max(n-1, 0), 30)
	if d < p.First { // overflowed
		d = p.Max
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	return Spread(d, p.Jitter)
}

// Spread returns d moved by a random amount of at most ±frac of it, so that
// many workers doing the same thing every d do not do it at once.
func Spread(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	span := time.Duration(float64(d) * frac)
	return d - span + time.Duration(rand.Int64N(int64(2*span)+1))
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
