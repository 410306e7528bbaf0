package postgres_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/wait"
)

// runListener runs l until the test ends.
func runListener(t *testing.T, l *postgres.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// events records what a listener hands over.
type events struct {
	notified chan jobs.ID
	woken    chan struct{}
}

func (e *events) Notify(id jobs.ID, _ jobs.Status) { e.notified <- id }
func (e *events) Wake()                            { e.woken <- struct{}{} }

// Only a lost connection makes the listener disconnected: payloads that are
// not a job's (anyone may pg_notify the channel) are dropped, and readiness
// stays.
func TestForeignPayloadsDoNotDisconnect(t *testing.T) {
	t.Parallel()
	pool, dsn := pgtest.Pool(t)
	ev := &events{notified: make(chan jobs.ID, 10), woken: make(chan struct{}, 10)}
	lost := make(chan error, 10)
	heard := make(chan struct{}, 10)
	l := &postgres.Listener{DSN: dsn, Events: ev, ReconnectDelay: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		OnDisconnect: func(err error) { lost <- err }, OnConnect: func() { heard <- struct{}{} }}
	runListener(t, l)
	wait.Recv(t, ev.woken, "connect")
	wait.Recv(t, heard, "its probe heard")

	for _, payload := range []string{`not json`, `{"x":1}`, `"a string"`, `{"job_id":`} {
		if _, err := pool.Exec(context.Background(), `SELECT pg_notify('runops_jobs', $1)`, payload); err != nil {
			t.Fatal(err)
		}
	}
	// Notifications arrive in order: once the insert's is here, the others
	// have been handled.
	id := "5d0b3c54-9e8f-4c64-8f0c-2b1f8f0e6a11"
	if _, err := pool.Exec(context.Background(), `INSERT INTO jobs (job_id) VALUES ($1)`, id); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ev.notified:
		if got != jobs.ID(id) {
			t.Fatalf("notified %s", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the insert's notification never came")
	}
	if !l.Connected() {
		t.Fatal("the listener counts itself disconnected")
	}
	select {
	case err := <-lost:
		t.Fatalf("disconnected by a payload: %v", err)
	default:
	}
}

// The worker's SOP write runs only while its claim holds the job.
func TestSOPWriteNeedsTheLease(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	store := postgres.NewQueueStore(pool)
	id := jobs.ID("7a3e1c0d-2b4f-4e8a-9c6d-5f1e2d3c4b5a")
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id) VALUES ($1)`, string(id)); err != nil {
		t.Fatal(err)
	}
	got, err := store.Claim(ctx, "w", 1, time.Minute)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	tok := got[0].Token
	locker := postgres.NewSOPLocker(pool)
	ran := 0
	write := func(context.Context) error { ran++; return nil }
	if err := locker.WithSOPLockWhileHolding(ctx, id, tok, write); err != nil || ran != 1 {
		t.Fatalf("holder: %v, ran %d", err, ran)
	}
	if err := locker.WithSOPLockWhileHolding(ctx, id, "someone-else", write); !errors.Is(err, queue.ErrLost) || ran != 1 {
		t.Fatalf("another token: %v, ran %d", err, ran)
	}
	// Expired but not yet rescued: no longer the holder's to write.
	pgtest.ExpireLeases(t, pool, string(id))
	if err := locker.WithSOPLockWhileHolding(ctx, id, tok, write); !errors.Is(err, queue.ErrLost) || errors.Is(err, queue.ErrCancelled) || ran != 1 {
		t.Fatalf("expired lease: %v, ran %d", err, ran)
	}
	// A person's edit of the row ends it too.
	if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'error', metadata = jsonb_set(metadata, '{lease,expires_at}', to_jsonb(now() + interval '1 minute')) WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	if err := locker.WithSOPLockWhileHolding(ctx, id, tok, write); !errors.Is(err, queue.ErrCancelled) || ran != 1 {
		t.Fatalf("edited row: %v, ran %d", err, ran)
	}
}

// Heartbeats are HOT updates: no index covers a column they write, so a
// renewal writes no index entry (pg_stat_user_tables shows it).
func TestHeartbeatsAreHOTUpdates(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.Pool(t)
	ctx := context.Background()
	pool := pgtest.Open(t, dsn, 1) // one connection: its stats are flushed below
	store := postgres.NewQueueStore(pool)
	const n, renewals = 40, 25
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id) SELECT gen_random_uuid() FROM generate_series(1, $1)`, n); err != nil {
		t.Fatal(err)
	}
	claimed := map[jobs.ID]string{}
	got, err := store.Claim(ctx, "w", n, time.Minute) // all of them, in one statement
	if err != nil || len(got) != n {
		t.Fatalf("claim: %d %v", len(got), err)
	}
	for _, c := range got {
		claimed[c.ID] = c.Token
	}
	if len(claimed) != n {
		t.Fatal("two claims share a lease token")
	}
	read := func() (upd, hot int64) {
		t.Helper()
		if _, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'`).Scan(&upd, &hot); err != nil {
			t.Fatal(err)
		}
		return upd, hot
	}
	upd0, hot0 := read()
	for range renewals {
		for id, token := range claimed {
			if ok, err := store.Renew(ctx, id, token, time.Minute); err != nil || !ok {
				t.Fatalf("renew: %v %v", ok, err)
			}
		}
	}
	upd, hot := read()
	// How many of them stay HOT also depends on the page's free space and on
	// other transactions holding old row versions (other tests, here); with an
	// index on a column they write, none ever is.
	t.Logf("HOT share of %d renewals: %.2f", upd-upd0, float64(hot-hot0)/float64(upd-upd0))
	if upd-upd0 != n*renewals || hot-hot0 == 0 {
		t.Fatalf("%d of %d renewals were HOT updates", hot-hot0, upd-upd0)
	}
	var indexed []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(a.attname::text) FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = 'public.jobs'::regclass`).Scan(&indexed); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(indexed, "updated_at") || slices.Contains(indexed, "metadata") {
		t.Fatalf("indexed columns %v include one every heartbeat writes", indexed)
	}
}

// The queue gauges come from one query: rows by status and how long the
// job that has waited longest has been in the queue. A person's edits of a
// queued row do not make it look newly queued (they moved updated_at, which
// the gauge read: a priority raised on a job that had waited an hour showed
// it a moment old); a job that leaves the queue and comes back has waited
// since it came back.
func TestQueueStats(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	exec := pgtest.Exec(t, pool)
	// Two queued jobs of someone's uploads, metadata objects (an edit of
	// NULL metadata changes nothing), and a finished one.
	a, b := uuid.NewString(), uuid.NewString()
	exec(`INSERT INTO runops_uploads (job_id, owner) VALUES ('` + a + `', 'someone'), ('` + b + `', 'someone')`)
	exec(`INSERT INTO jobs (job_id, status, metadata) VALUES (gen_random_uuid(), 'completed', '{}'), ('` + a + `', 'queued', '{}'), ('` + b + `', 'queued', '{}')`)
	// Queued an hour ago: as its entry in the queue would say.
	exec(`UPDATE runops_queue SET since = now() - interval '1 hour'`)
	store := postgres.NewJobStore(pool)
	stats := func() metrics.QueueStats {
		t.Helper()
		st, err := store.QueueStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stats(); st.ByStatus["queued"] != 2 || st.ByStatus["completed"] != 1 || st.OldestQueued < 59*time.Minute || st.OldestQueued > 2*time.Hour {
		t.Fatalf("%+v", st)
	}
	for _, edit := range []string{
		`UPDATE jobs SET metadata = metadata || '{"priority": -50}' WHERE status = 'queued'`, // another priority
		`UPDATE runops_uploads SET owner = 'another'`,                                        // another owner (copied to the jobs)
		`UPDATE jobs SET metadata = metadata || '{"note": "rush"}', created_at = now() WHERE status = 'queued'`,
	} {
		exec(edit)
		if st := stats(); st.OldestQueued < 59*time.Minute || st.OldestQueued > 2*time.Hour {
			t.Fatalf("after %s: %+v", edit, st)
		}
	}
	var owners, priorities string
	if err := pool.QueryRow(ctx, `SELECT string_agg(DISTINCT owner, ','), string_agg(DISTINCT priority::text, ',') FROM runops_queue`).Scan(&owners, &priorities); err != nil ||
		owners != "another" || priorities != "-50" {
		t.Fatalf("the queue's entries are of %q, priority %q: the edits did not move them (the test proves less)", owners, priorities)
	}
	exec(`UPDATE jobs SET status = 'error' WHERE status = 'queued'`)
	exec(`UPDATE jobs SET status = 'queued' WHERE status = 'error'`)
	if st := stats(); st.ByStatus["queued"] != 2 || st.OldestQueued > time.Minute {
		t.Fatalf("queued again just now: %+v", st)
	}
}

// A worker's gauges say how many queued jobs a claim could take now: of
// each owner's, at most RUNOPS_OWNER_CONCURRENCY less its jobs processing.
// A scaler on the queue alone asked a worker for each job the cap held back
// (one owner with 100 queued and a cap of 2: 50 workers, 48 idle). A
// process that claims nothing does not know the cap, and says nothing.
func TestTheClaimableCountKeepsTheOwnerCap(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata)
SELECT gen_random_uuid(), s, jsonb_build_object('owner', o) FROM (VALUES
  ('alice', 'queued', 5), ('alice', 'processing', 2), ('bob', 'queued', 3), ('', 'queued', 1), ('carol', 'processing', 4)) v(o, s, n),
  generate_series(1, n)`); err != nil {
		t.Fatal(err)
	}
	// Alice's jobs have waited two hours, bob's one, the unowned job half
	// an hour: with alice at her cap, the oldest a claim could take is bob's.
	if _, err := pool.Exec(ctx, `UPDATE runops_queue SET since = now() - CASE owner WHEN 'alice' THEN interval '2 hours'
	  WHEN 'bob' THEN interval '1 hour' ELSE interval '30 minutes' END`); err != nil {
		t.Fatal(err)
	}
	for cap, want := range map[int]struct {
		claimable int
		oldest    time.Duration
	}{3: {1 + 3 + 1, 2 * time.Hour}, 0: {5 + 3 + 1, 2 * time.Hour}, 1: {0 + 1 + 1, time.Hour}} {
		st, err := postgres.NewJobStore(pool).CountClaimableUnder(cap).QueueStats(ctx)
		if err != nil || st.Claimable == nil || *st.Claimable != want.claimable || st.ByStatus["queued"] != 9 ||
			st.OldestClaimable < want.oldest || st.OldestClaimable > want.oldest+time.Minute || st.OldestQueued < 2*time.Hour {
			t.Errorf("cap %d: %+v (claimable %v), %v; want %d claimable, the oldest of them %s", cap, st, st.Claimable, err, want.claimable, want.oldest)
		}
	}
	if st, err := postgres.NewJobStore(pool).QueueStats(ctx); err != nil || st.Claimable != nil {
		t.Errorf("a store with no cap told: %+v, %v", st, err)
	}
}

// A LISTEN through a transaction pooler is accepted and then hears nothing:
// the listener finds out from its own probe, says so (Problem, for /readyz)
// and never counts itself connected; directly, the probe is heard.
func TestListenerProvesItself(t *testing.T) {
	t.Parallel()
	pool, direct := pgtest.Pool(t)
	pooler := pgtest.NewBouncer(t, direct, 2)
	store := postgres.NewJobStore(pool)
	run := func(dsn string) (*postgres.Listener, chan struct{}) {
		heard := make(chan struct{}, 10)
		ev := &events{notified: make(chan jobs.ID, 10), woken: make(chan struct{}, 10)}
		l := &postgres.Listener{DSN: dsn, Events: ev, Send: store.Notify, ReconnectDelay: 100 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler), OnConnect: func() { heard <- struct{}{} }}
		runListener(t, l)
		return l, heard
	}
	deaf, heardDeaf := run(pooler.URL)
	good, heardGood := run(direct)
	select {
	case <-heardGood:
	case <-time.After(30 * time.Second):
		t.Fatal("a direct listener never heard its probe")
	}
	if !good.Connected() || good.Problem() != "" {
		t.Fatalf("direct listener: connected %v, problem %q", good.Connected(), good.Problem())
	}
	wait.For(t, "the pooled listener to say it hears nothing", 30*time.Second,
		func() bool { return strings.Contains(deaf.Problem(), "hears nothing") }, deaf.Problem)
	select {
	case <-heardDeaf:
		t.Fatal("a listener through a transaction pooler counted itself connected")
	default:
	}
	if deaf.Connected() {
		t.Fatal("a listener through a transaction pooler counts itself connected")
	}
}

// A direct listener that heard its own probe and then lost its connection
// (within ProbeTimeout of the probe) did not "hear nothing": while it
// reconnects it is connecting, and it must never say (Problem, log) that its
// URL goes through a transaction pooler. (The probe's timer used to look
// only at Connected, which the disconnect reset, and at the token, replaced
// only once both channels were LISTENed again on the next connection.)
func TestHeardListenerThatReconnectsIsNotCalledDeaf(t *testing.T) {
	t.Parallel()
	pool, direct := pgtest.Pool(t)
	proxy, dsn := pgtest.NewProxy(t, direct)
	store := postgres.NewJobStore(pool)
	// A file: the listener's goroutines and its probe timer write to it
	// while the test reads it.
	logs, err := os.Create(filepath.Join(t.TempDir(), "listener.log"))
	if err != nil {
		t.Fatal(err)
	}
	heard := make(chan struct{}, 10)
	lost := make(chan error, 10)
	ev := &events{notified: make(chan jobs.ID, 10), woken: make(chan struct{}, 10)}
	l := &postgres.Listener{DSN: dsn, Events: ev, Send: store.Notify,
		// The reconnect comes well after the first probe's timer: the
		// listener is between connections when it fires.
		ReconnectDelay: 3 * postgres.ProbeTimeout,
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
		OnConnect:      func() { heard <- struct{}{} },
		OnDisconnect:   func(err error) { lost <- err }}
	runListener(t, l)
	wait.Recv(t, heard, "probe heard")
	proxy.SetDown(true) // the connection drops right after its probe was heard
	wait.Recv(t, lost, "disconnect")
	proxy.SetDown(false)
	wait.Recv(t, heard, "probe heard after the reconnect")
	written, err := os.ReadFile(logs.Name())
	if err != nil {
		t.Fatal(err)
	}
	if s := string(written); strings.Contains(s, "hears nothing") || strings.Contains(s, "hears notifications again") {
		t.Fatalf("a listener that heard its probe was called deaf while it reconnected:\n%s", s)
	}
}
