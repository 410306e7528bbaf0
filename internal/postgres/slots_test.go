package postgres_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/wait"
)

// No more workers listen than there are slots; one without a slot says so,
// and takes the slot another gives up.
func TestListenerSlotsCapTheListeners(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	var listening, most atomic.Int64
	listen := func(ctx context.Context) error {
		n := listening.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-ctx.Done()
		listening.Add(-1)
		return nil
	}
	slots := make([]*postgres.ListenerSlot, 3)
	stops := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	for i := range slots {
		slots[i] = &postgres.ListenerSlot{Pool: pool, Holder: string(rune('a' + i)), Max: 2, TTL: 3 * time.Second,
			Retry: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
		var ctx context.Context
		ctx, stops[i] = context.WithCancel(context.Background())
		wg.Go(func() { _ = slots[i].Run(ctx, listen) })
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		wg.Wait()
	})
	waiting := func() int {
		n := 0
		for _, s := range slots {
			if reason, settled := s.Problem(); settled && strings.Contains(reason, "all 2 listener slots are taken") {
				n++
			}
		}
		return n
	}
	wait.For(t, "two listening and one polling", 30*time.Second, func() bool { return listening.Load() == 2 && waiting() == 1 })
	var left int
	for i, s := range slots {
		if reason, _ := s.Problem(); reason == "" {
			left = i
		}
	}
	stops[left]() // a worker stops: it gives its slot up
	wait.For(t, "the polling worker to take the freed slot", 30*time.Second, func() bool {
		return listening.Load() == 2 && waiting() == 0
	})
	var rows int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM runops_listener_slots WHERE holder = $1`, slots[left].Holder).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("the stopped worker's slot: %d rows, %v", rows, err)
	}
	if m := most.Load(); m > 2 {
		t.Fatalf("%d workers listened at once; 2 slots", m)
	}
}

// A share of slots is of the connections PostgreSQL lets the role open
// (rounded down): max_connections less the superusers' reserve, or the
// role's own limit; the default also caps them at 16.
func TestListenerSlotsAreAShareOfTheRolesConnections(t *testing.T) {
	t.Parallel()
	pool, dsn := pgtest.Pool(t)
	var maxConn, reserved int
	if err := pool.QueryRow(context.Background(), `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int`).Scan(&maxConn, &reserved); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who            string
		dsn            string
		share, andAt16 int // 66%; 66% but at most 16 (the default)
	}{
		{"the superuser", dsn, int(float64(maxConn) * 0.66), 16},
		{"an ordinary role", pgtest.Role(t, dsn, -1), int(float64(maxConn-reserved) * 0.66), 16},
		{"a role allowed 27 connections", pgtest.Role(t, dsn, 27), 17, 16},
		{"a role allowed 20 connections", pgtest.Role(t, dsn, 20), 13, 13},
	} {
		conn, err := pgx.Connect(context.Background(), c.dsn)
		if err != nil {
			t.Fatal(err)
		}
		var share, andAt16 int
		err = conn.QueryRow(context.Background(), `SELECT (SELECT slots FROM runops_listener_slot('probe', -1, 0.66, 30)),
			(SELECT slots FROM runops_listener_slot('probe', 16, 0.66, 30))`).Scan(&share, &andAt16)
		conn.Close(context.Background())
		if err != nil || share != c.share || andAt16 != c.andAt16 {
			t.Errorf("%s: %d slots at 66%%, %d at most 16 (%v); want %d and %d", c.who, share, andAt16, err, c.share, c.andAt16)
		}
	}
}

// A worker whose slot renewal the database never answers (the network
// stops answering: its connections stay open, nothing comes back) stops
// listening before its tenure lapses, and so before another worker is given
// it: never two listeners on one slot.
func TestAListenerSlotIsGivenUpBeforeItExpires(t *testing.T) {
	t.Parallel()
	pool, hung, proxy := hangingPool(t)
	on := &holders{}
	slot := func(p *pgxpool.Pool, holder string) *postgres.ListenerSlot {
		return &postgres.ListenerSlot{Pool: p, Holder: holder, Max: 1, TTL: 6 * time.Second,
			Retry: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stop(); proxy.SetSilent(false); wg.Wait() })
	listen := func(holder string) func(context.Context) error {
		return func(ctx context.Context) error { on.work(ctx, holder); return nil }
	}
	a := slot(hung, "a")
	wg.Go(func() { _ = a.Run(ctx, listen("a")) })
	wait.For(t, "a to listen", 30*time.Second, func() bool { return on.is("a") })
	b := slot(pool, "b")
	wg.Go(func() { _ = b.Run(ctx, listen("b")) })
	wait.For(t, "b to wait for the slot", 30*time.Second, func() bool {
		reason, settled := b.Problem()
		return settled && strings.Contains(reason, "all 1 listener slots are taken")
	})
	proxy.SetSilent(true) // a's renewals hang from now on
	wait.For(t, "b to be given the slot a could not renew", 60*time.Second, func() bool { return on.is("b") })
	if on.overlapped() {
		t.Fatal("a was still listening when b was given its slot")
	}
	if reason, _ := a.Problem(); !strings.Contains(reason, "could not be renewed in time") {
		t.Errorf("a says %q", reason)
	}
}

// hangingPool is a database's pool, and a pool of the same database
// through a proxy a test can silence, opened as the workers open theirs
// (its driver takes a while to give up on a silent connection).
func hangingPool(t *testing.T) (pool, hung *pgxpool.Pool, proxy *pgtest.Proxy) {
	t.Helper()
	pool, dsn := pgtest.Pool(t)
	proxy, through := pgtest.NewProxy(t, dsn)
	hung, err := postgres.OpenPool(context.Background(), through, 4) // as the workers open theirs
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.SetSilent(false); hung.Close() })
	return pool, hung, proxy
}

// holders records which holders of something held one at a time (a
// listener slot, a fleet duty) are at work, and whether two ever were.
type holders struct {
	mu      sync.Mutex
	at      map[string]bool
	overlap bool
}

// work marks holder at work until ctx ends.
func (h *holders) work(ctx context.Context, holder string) {
	h.mu.Lock()
	if h.at == nil {
		h.at = map[string]bool{}
	}
	for other, on := range h.at {
		h.overlap = h.overlap || on && other != holder
	}
	h.at[holder] = true
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.at[holder] = false
	h.mu.Unlock()
}

func (h *holders) is(holder string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.at[holder]
}

func (h *holders) overlapped() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.overlap
}
