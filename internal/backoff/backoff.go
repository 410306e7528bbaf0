// Package backoff gives every retry loop of the service its waits: the
// first, how they grow (doubling, up to a ceiling), how much they are
// spread (jitter), and when the loop gives up (after so many tries, or
// when its waits would pass a budget). The loops keep what differs between
// them — what they retry, what counts as transient — and ask a Backoff how
// long to wait and whether to go on (docs/lifecycle.md, "Glossary":
// retries). A loop whose end is a moment rather than its tries (a lease's
// end, a day after a webhook's event) keeps that moment itself.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// Policy is how the waits between tries grow: First after the first
// failure, doubling after each one more up to Max (0: no ceiling), and
// then each spread over ±Jitter of itself (0.2 is ±20 %), so a wait at the
// ceiling may be up to Jitter over it. A Backoff under it gives up after
// Tries tries (0: never), or when the next wait would take its waits past
// Budget (0: never).
type Policy struct {
	First  time.Duration
	Max    time.Duration
	Jitter float64
	Tries  int
	Budget time.Duration
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

// Backoff counts a loop's failed tries and its waits, and gives the wait
// after each failure, or tells the loop to give up.
type Backoff struct {
	Policy
	failed int
	waited time.Duration
}

// Next counts one more failed try and returns the wait before the next
// one; false when the loop gives up instead (Tries, Budget).
func (b *Backoff) Next() (time.Duration, bool) { return b.NextAsked(0) }

// NextAsked is Next where the server said how long to wait: asked, when
// above 0, is the wait instead of the policy's, and counts against Budget.
func (b *Backoff) NextAsked(asked time.Duration) (time.Duration, bool) {
	b.failed++
	wait := asked
	if wait <= 0 {
		wait = b.Wait(b.failed)
	}
	if (b.Tries > 0 && b.failed >= b.Tries) || (b.Budget > 0 && wait > b.Budget-b.waited) { // no sum: it may wrap
		return 0, false
	}
	b.waited += wait
	return wait, true
}

// Waited is what the waits it gave add up to.
func (b *Backoff) Waited() time.Duration { return b.waited }

// Failed is how many failed tries the Backoff has counted.
func (b *Backoff) Failed() int { return b.failed }

// Reset starts over after a success.
func (b *Backoff) Reset() { b.failed, b.waited = 0, 0 }

// Sleep waits d, or until ctx ends: ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
