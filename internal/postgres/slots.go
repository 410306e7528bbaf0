package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/backoff"
)

// ListenerSlot lets a worker LISTEN only while it holds one of the
// database's listener slots (migration …_listener_slots.sql): the number of
// direct connections the fleet's listeners take is decided through the
// pool, before any of them is opened, so that workers starting together
// never take the connections the pooler needs. A slot is held for a tenure,
// renewed as a job's lease is; a worker without one polls every Retry (RUNOPS_SWEEP), says so
// (Problem), and asks again.
type ListenerSlot struct {
	Pool   *pgxpool.Pool
	Holder string  // the worker's name
	Max    int     // at most this many listen (negative: no such cap)
	Share  float64 // and at most this share of the role's connection limit (0: no such cap)
	TTL    time.Duration
	Retry  time.Duration
	Logger *slog.Logger

	mu      sync.Mutex
	problem string // why this worker does not listen; "" while it holds a slot
	settled bool   // the database has answered once: this worker listens or polls for good reason
}

const (
	takeSlot   = `SELECT slot, slots FROM public.runops_listener_slot($1, $2, $3, $4)`
	giveUpSlot = `DELETE FROM public.runops_listener_slots WHERE holder = $1`
)

// Problem says why the worker polls instead of listening ("" while it
// holds a slot), for /readyz; settled is false until the database has first
// answered, so that a worker starting up is not ready — rather than ready
// at once, and then not while the listener a slot gave it connects.
func (s *ListenerSlot) Problem() (reason string, settled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.problem, s.settled
}

func (s *ListenerSlot) say(problem string) {
	s.mu.Lock()
	changed := s.problem != problem
	s.problem = problem
	s.mu.Unlock()
	if changed && problem != "" {
		s.Logger.Warn("not listening: " + problem)
	}
}

// Run calls listen while a slot is held, with a context that ends when the
// slot's tenure ends (not renewed in time, or refused: the cap lowered) or ctx ends; then
// it asks for a slot again, until ctx ends, and gives it up.
func (s *ListenerSlot) Run(ctx context.Context, listen func(context.Context) error) error {
	s.say("asking the database for a listener slot: polling every RUNOPS_SWEEP until then")
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := s.Pool.Exec(rctx, giveUpSlot, s.Holder); err != nil {
			s.Logger.Warn("listener slot not given up (its tenure lapses on its own)", "error", err)
		}
	}()
	for ctx.Err() == nil {
		taken, ok := s.take(ctx)
		if !ok {
			continue
		}
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- listen(lctx) }()
		stopped, err := s.keep(lctx, taken, done)
		stop()
		if !stopped {
			err = <-done
		}
		if err != nil && ctx.Err() == nil {
			s.Logger.Warn("job listener stopped", "error", err)
		}
	}
	return nil
}

// take asks for a slot until one is held (ok), and returns when the ask
// that took it was sent (hold's start), or ctx ends (not ok); every Retry
// while all are taken, sooner while the database cannot answer, at once
// when it answered too late to use (inTime).
func (s *ListenerSlot) take(ctx context.Context) (taken time.Time, ok bool) {
	failures := backoff.Backoff{Policy: askFailures(s.Retry)}
	for {
		var wait time.Duration
		sent := time.Now()
		slot, slots, err := s.ask(ctx)
		if err == nil {
			s.mu.Lock()
			s.settled = true
			s.mu.Unlock()
		}
		switch {
		case err == nil && slot > 0 && inTime(sent, s.TTL):
			s.say("")
			s.Logger.Info("listener slot held: listening for jobs", "slot", slot, "slots", slots)
			return sent, true
		case err == nil && slot > 0: // its tenure all but over: renew it first
		case err == nil:
			s.say(fmt.Sprintf("all %d listener slots are taken (RUNOPS_LISTENERS): polling every RUNOPS_SWEEP, asking again then", slots))
			wait = s.Retry
			failures.Reset()
		default:
			s.say(fmt.Sprintf("the database did not answer for a listener slot (%v): polling every RUNOPS_SWEEP", err))
			wait, _ = failures.Next() // no tries or budget: asks until ctx ends
		}
		if backoff.Sleep(ctx, wait) != nil {
			return time.Time{}, false
		}
	}
}

// keep renews the slot (hold) until ctx ends, its tenure ends, or the
// listener stops on its own (stopped, with its error). A tenure that lapses
// (not renewed in time) or is refused ends — the caller closes the listener —
// before another worker could be given the slot.
func (s *ListenerSlot) keep(ctx context.Context, taken time.Time, listening <-chan error) (stopped bool, err error) {
	end := hold(ctx, s.TTL, taken, func(ctx context.Context) (bool, error) {
		slot, _, err := s.ask(ctx)
		return slot > 0, err
	}, listening)
	switch {
	case end.refused:
		s.say("the database refused to renew the listener slot (RUNOPS_LISTENERS lowered?): polling every RUNOPS_SWEEP")
	case end.lapsed != nil:
		s.say(fmt.Sprintf("the listener slot could not be renewed in time (%v): polling every RUNOPS_SWEEP", end.lapsed))
	}
	return end.stopped, end.err
}

// ask renews or takes a slot: the slot held (0: none) and the cap.
func (s *ListenerSlot) ask(ctx context.Context) (slot, slots int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var held *int32
	var limit int32
	err = s.Pool.QueryRow(ctx, takeSlot, s.Holder, s.Max, s.Share, s.TTL.Seconds()).Scan(&held, &limit)
	if err != nil {
		return 0, 0, wrap("listener slot", err)
	}
	if held != nil {
		slot = int(*held)
	}
	return slot, int(limit), nil
}
