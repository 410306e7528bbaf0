package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
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

// A database slow to answer the ask that gives a worker the duty (a row
// lock, a database coming back) gave it a tenure that runs from the ask's
// now(): a worker that held it from the answer worked on after its tenure
// lapsed, while another was given the duty (a fresh-eye attack's finding).
// One answered that late asks again, renewing it, before it works: the
// other is refused, and nobody works beside it.
func TestADutyAnsweredLateIsRenewedBeforeItsWork(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	const ttl = 3 * time.Second
	on := &holders{}
	duty := func(holder string) *postgres.Duty {
		return &postgres.Duty{Pool: pool, Name: "housekeeping", Holder: holder, TTL: ttl,
			Retry: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	}
	// A dead holder's lapsed tenure, its row locked by another transaction.
	if _, err := pool.Exec(ctx, `INSERT INTO runops_duties (duty, holder, expires_at) VALUES ('housekeeping', 'dead', now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM runops_duties WHERE duty = 'housekeeping' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	t.Cleanup(func() { stop(); wg.Wait() })
	run := func(d *postgres.Duty) {
		wg.Go(func() { d.Run(runCtx, func(ctx context.Context) { on.work(ctx, d.Holder) }) })
	}
	run(duty("a"))
	// a's ask waits on the lock past its tenure's stop margin (within its
	// own 5 s); b asks beside it.
	wait.For(t, "a's ask to wait on the lock past 0.8 × its TTL", 10*time.Second, func() bool {
		var n int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
AND wait_event_type = 'Lock' AND query LIKE '%runops_duty(%' AND clock_timestamp() - query_start > $1::interval`,
			(queue.StopMargin(ttl) + 200*time.Millisecond).String()).Scan(&n)
		return n > 0
	})
	run(duty("b"))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "a or b to work", 10*time.Second, func() bool { return on.is("a") || on.is("b") })
	var first time.Time
	if err := pool.QueryRow(ctx, `SELECT expires_at FROM runops_duties WHERE duty = 'housekeeping'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	// Until the holder renewed twice (a second and more each), or b works.
	wait.For(t, "two renewals, or b at work", 20*time.Second, func() bool {
		var renewed bool
		_ = pool.QueryRow(ctx, `SELECT expires_at >= $1::timestamptz + interval '1.5 seconds' FROM runops_duties WHERE duty = 'housekeeping' AND holder = 'a'`, first).Scan(&renewed)
		return renewed || on.is("b") && on.is("a")
	})
	if on.overlapped() {
		t.Fatal("a and b did the duty at once: a worked from a late answer past its tenure")
	}
}
