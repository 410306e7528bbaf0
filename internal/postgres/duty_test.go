package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/wait"
)

// One worker of three holds a fleet duty at a time; when it stops it gives
// the duty up and another takes it; when its renewals hang (the network
// stops answering) it stops before its tenure lapses, and so before another
// is given it; when it dies, another takes it once its tenure lapses.
func TestAFleetDutyHasOneHolder(t *testing.T) {
	t.Parallel()
	pool, hung, proxy := hangingPool(t)
	on := &holders{}
	duty := func(p *pgxpool.Pool, holder string) *postgres.Duty {
		return &postgres.Duty{Pool: p, Name: "housekeeping", Holder: holder, TTL: 6 * time.Second,
			Retry: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	}
	var wg sync.WaitGroup
	run := func(d *postgres.Duty) context.CancelFunc {
		ctx, stop := context.WithCancel(context.Background())
		wg.Go(func() { d.Run(ctx, func(ctx context.Context) { on.work(ctx, d.Holder) }) })
		return stop
	}
	a, b, c := duty(hung, "a"), duty(pool, "b"), duty(pool, "c")
	stopA := run(a)
	wait.For(t, "a to hold the duty", 30*time.Second, func() bool { return on.is("a") })
	stopB, stopC := run(b), run(c)
	t.Cleanup(func() { stopA(); stopB(); stopC(); proxy.SetSilent(false); wg.Wait() })

	proxy.SetSilent(true) // a's renewals hang from now on
	wait.For(t, "b or c to be given the duty a could not renew", 60*time.Second, func() bool { return on.is("b") || on.is("c") })
	if on.overlapped() || a.Held() {
		t.Fatal("a still held the duty when another was given it")
	}
	next, other, stopNext := b, c, stopB
	if on.is("c") {
		next, other, stopNext = c, b, stopC
	}
	stopNext() // it stops: it gives the duty up
	wait.For(t, "the third to take the duty given up", 30*time.Second, func() bool { return on.is(other.Holder) })
	if next.Held() || on.overlapped() {
		t.Fatal("two holders at once")
	}
	// The holder dies: its tenure is left in the table, and expires.
	if _, err := pool.Exec(context.Background(), `UPDATE runops_duties SET holder = 'dead', expires_at = now() + interval '1 second' WHERE duty = 'housekeeping'`); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a living worker to take the dead one's duty", 30*time.Second, func() bool {
		var holder string
		_ = pool.QueryRow(context.Background(), `SELECT holder FROM runops_duties WHERE duty = 'housekeeping'`).Scan(&holder)
		return holder == other.Holder
	})
}
