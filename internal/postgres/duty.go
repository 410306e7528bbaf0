package postgres

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/backoff"
)

// Duty is work one worker of a fleet does for all of them, held in the
// database for a tenure (tenure.go; migration …_fleet_duties.sql): the rescue of
// expired leases and the retention janitor, which every worker used to run
// every sweep. A worker takes the duty when nobody holds it, or its holder's
// tenure lapsed (it died); renews it every TTL/3; gives it up when it stops,
// so that another takes it at its next ask. Asked every Retry while another
// holds it, and sooner while the database does not answer (askFailures).
type Duty struct {
	Pool   *pgxpool.Pool
	Name   string // what it is: "housekeeping"
	Holder string // the worker's name
	TTL    time.Duration
	Retry  time.Duration
	Logger *slog.Logger

	held atomic.Bool
}

const (
	takeDuty   = `SELECT public.runops_duty($1, $2, $3)`
	giveUpDuty = `DELETE FROM public.runops_duties WHERE duty = $1 AND holder = $2`
)

// Held tells whether this worker holds the duty now.
func (d *Duty) Held() bool { return d.held.Load() }

// Run calls work while the duty is held, with a context that ends when its
// tenure ends (not renewed in time, or refused: taken back) or ctx ends; then it asks
// for the duty again, until ctx ends, and gives it up.
func (d *Duty) Run(ctx context.Context, work func(context.Context)) {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := d.Pool.Exec(rctx, giveUpDuty, d.Name, d.Holder); err != nil {
			d.Logger.Warn("duty not given up (its tenure lapses on its own)", "duty", d.Name, "error", err)
		}
	}()
	failures := backoff.Backoff{Policy: askFailures(d.Retry)}
	for ctx.Err() == nil {
		sent := time.Now()
		held, err := d.ask(ctx)
		if err == nil && held && !inTime(sent, d.TTL) {
			continue // its tenure all but over: renew it first
		}
		if err == nil {
			failures.Reset()
		}
		if err != nil || !held {
			wait := d.Retry
			if err != nil {
				wait, _ = failures.Next() // asks until ctx ends
			}
			_ = backoff.Sleep(ctx, wait) // ctx's end ends the loop
			continue
		}
		d.Logger.Info("fleet duty held: this worker does it for the fleet", "duty", d.Name)
		dctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		d.held.Store(true)
		go func() { work(dctx); done <- nil }()
		end := hold(dctx, d.TTL, sent, d.ask, done)
		stop()
		if !end.stopped {
			<-done
		}
		d.held.Store(false)
		switch {
		case end.refused:
			d.Logger.Warn("fleet duty taken by another worker", "duty", d.Name)
		case end.lapsed != nil:
			d.Logger.Warn("fleet duty lapsed: not renewed in time", "duty", d.Name, "error", end.lapsed)
		}
	}
}

// ask takes or renews the duty for TTL: whether this worker holds it.
func (d *Duty) ask(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var held bool
	err := d.Pool.QueryRow(ctx, takeDuty, d.Name, d.Holder, d.TTL.Seconds()).Scan(&held)
	return held, wrap("fleet duty", err)
}
