package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/queue"
)

// A tenure is something a worker holds in the database for a while and
// renews, as a job's lease is, but not a lease: a listener slot (slots.go),
// a fleet duty (duty.go). A tenure is never lost: it ends — the work
// stopped, the database refused a renewal, or it lapsed (not renewed in
// time). What ended one, as hold returns it.
type tenureEnd struct {
	stopped bool  // the work stopped on its own, with err
	err     error // the work's error, when stopped
	refused bool  // the database refused a renewal: gave it to another (or took it back)
	lapsed  error // not renewed in time: why the last renewal failed
}

// askFailures paces a holder's asks for a tenure that the database could
// not answer: from 2 s, doubling, up to retry, its wait while another
// holds it; the asks go on until the holder stops.
func askFailures(retry time.Duration) backoff.Policy {
	return backoff.Policy{First: 2 * time.Second, Max: retry}
}

// inTime tells whether an ask sent at sent that took a tenure of ttl was
// answered before its holder would have to stop (hold): one answered
// later is asked again before its work begins.
func inTime(sent time.Time, ttl time.Duration) bool {
	return time.Since(sent) < queue.StopMargin(ttl)
}

// errNoAnswer is a renewal the database never answered in time.
var errNoAnswer = errors.New("no answer")

// hold renews a tenure of ttl every ttl/3 (queue.DefaultHeartbeat), with
// renew (held: the database kept it this holder's), until ctx ends, the work
// reports on done, the tenure is refused, or it has not been renewed by
// 0.8 × ttl (queue.StopMargin) after its last renewal was sent — the
// first, the ask that took it at taken: the database's tenure runs from
// the ask's now(), not from its answer. That last is a timer, as a job's
// lease has, and no renewal is given longer than it: a renewal the
// database never answers cannot keep this worker holding past the
// tenure's expiry, after the database gave it to another.
func hold(ctx context.Context, ttl time.Duration, taken time.Time, renew func(context.Context) (bool, error), done <-chan error) tenureEnd {
	margin := queue.StopMargin(ttl)
	deadline := taken.Add(margin)
	expiry := time.NewTimer(time.Until(deadline))
	defer expiry.Stop()
	tick := time.NewTicker(queue.DefaultHeartbeat(ttl))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return tenureEnd{}
		case err := <-done:
			return tenureEnd{stopped: true, err: err}
		case <-expiry.C:
			return tenureEnd{lapsed: errNoAnswer}
		case <-tick.C:
		}
		sent := time.Now()
		type answer struct {
			held bool
			err  error
		}
		answered := make(chan answer, 1)
		rctx, cancel := context.WithDeadline(ctx, deadline)
		go func() {
			held, err := renew(rctx)
			answered <- answer{held, err}
		}()
		// The driver may take longer than the deadline to give up on a
		// connection that stopped answering: the timer does not wait for it.
		var a answer
		select {
		case a = <-answered:
		case <-expiry.C:
			cancel()
			return tenureEnd{lapsed: errNoAnswer}
		case <-ctx.Done():
			cancel()
			return tenureEnd{}
		}
		cancel()
		switch {
		case a.err == nil && a.held:
			deadline = sent.Add(margin)
			expiry.Reset(time.Until(deadline))
		case a.err == nil:
			return tenureEnd{refused: true}
		case ctx.Err() != nil:
			return tenureEnd{}
		case !time.Now().Before(deadline):
			return tenureEnd{lapsed: a.err}
		}
	}
}
