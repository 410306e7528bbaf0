package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
)

// throughProxy is a worker whose every connection (pool and listener) goes
// through a proxy the test can cut.
func (b *bench) throughProxy(h queue.Handler, cfg queue.Config) *pgtest.Proxy {
	b.t.Helper()
	proxy, dsn := pgtest.NewProxy(b.t, b.dsn)
	pool, err := postgres.OpenPool(context.Background(), dsn, 10)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(pool.Close)
	cfg.Logger = quiet
	queuetest.Start(b.t, dsn, postgres.NewQueueStore(pool), h, cfg, true)
	return proxy
}

// A database outage that the lease can ride out costs nothing: renewals and
// the handler's own writes wait for the database, and every job completes on
// its first attempt.
func TestDatabaseOutageCostsNothing(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	entered := make(chan struct{}, 3)
	proceed := make(chan struct{})
	var runs atomic.Int64
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		runs.Add(1)
		entered <- struct{}{}
		<-proceed
		// Written during the outage: it must wait for the database, not fail.
		return r.Stage(ctx, "probing")
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat = 30*time.Second, 500*time.Millisecond
	proxy := b.throughProxy(h, cfg)
	ids := b.insert(3)
	for range ids {
		<-entered
	}
	proxy.SetDown(true)
	close(proceed)
	// Renewals and stage writes keep trying: wait until they have met the
	// outage a few times, then bring the database back.
	b.waitFor("the worker to meet the outage", func() bool { return proxy.Refused() >= 6 })
	proxy.SetDown(false)
	b.waitFor("every job completed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'completed'`) == len(ids)
	})
	for _, id := range ids {
		if j := b.job(id); j.Metadata["attempt"] != float64(1) || j.Error != nil {
			t.Errorf("%s: attempt %v, error %v", id, j.Metadata["attempt"], j.Error)
		}
	}
	if n := runs.Load(); n != int64(len(ids)) {
		t.Fatalf("%d runs for %d jobs", n, len(ids))
	}
}

// A worker that cannot renew its lease stops the run before the lease
// expires, by its own timer, and writes nothing afterwards.
func TestUnrenewableLeaseStopsTheRunBeforeExpiry(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	entered := make(chan struct{}, 1)
	stopped := make(chan time.Time, 1)
	lateWrite := make(chan error, 1)
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		entered <- struct{}{}
		<-ctx.Done()
		stopped <- time.Now()
		lateWrite <- r.Merge(context.WithoutCancel(ctx), map[string]any{"late": true})
		return ctx.Err()
	})
	cfg := fast()
	cfg.LeaseTTL, cfg.Heartbeat = 4*time.Second, 500*time.Millisecond
	proxy := b.throughProxy(h, cfg)
	id := b.insert(1)[0]
	<-entered
	var expires time.Time
	if err := b.pool.QueryRow(context.Background(),
		`SELECT (metadata->'lease'->>'expires_at')::timestamptz FROM jobs WHERE job_id = $1`, string(id)).Scan(&expires); err != nil {
		t.Fatal(err)
	}
	proxy.SetDown(true)
	var at time.Time
	select {
	case at = <-stopped:
	case <-time.After(time.Minute):
		t.Fatal("the run was never stopped")
	}
	// Every renewal failed, so the lease still ends where it ended before the cut.
	if !at.Before(expires) {
		t.Fatalf("stopped at %s, after the lease expired at %s", at, expires)
	}
	proxy.SetDown(false)
	if err := <-lateWrite; err == nil {
		t.Fatal("a write after the stop succeeded")
	}
	b.waitFor("the job rescued", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status <> 'processing'`, string(id)) == 1 ||
			b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND (metadata->>'attempt')::int > 1`, string(id)) == 1
	})
	if b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND metadata ? 'late'`, string(id)) != 0 {
		t.Fatal("the stopped run wrote to the job")
	}
}

// A failure cause that would be cut through a character, or that holds a
// NUL byte, is stored on the first attempt (PostgreSQL refuses invalid text,
// and retrying such a write only loses the lease and runs the job again).
func TestFailureCausesAreStorable(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	var runs atomic.Int64
	// The stored cause is "<sentence>: <cause>" cut at 300 bytes: put the
	// two bytes of "é" across that cut, and a NUL before it.
	const sentence = "The video could not be converted."
	head := "the tool said \x00: "
	cause := head + strings.Repeat("a", 299-len(sentence+": ")-len(head)) + "é and more"
	h := queue.HandlerFunc(func(ctx context.Context, j queue.Job, r queue.Reporter) error {
		runs.Add(1)
		return jobs.Fail(sentence, errors.New(cause))
	})
	b.start(h, fast(), true)
	id := b.insert(1)[0]
	b.waitFor("the job failed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status = 'error'`, string(id)) == 1
	})
	j := b.job(id)
	attempts, _ := j.Metadata["attempts"].([]any)
	last, _ := attempts[len(attempts)-1].(map[string]any)
	stored, _ := last["error"].(string)
	if *j.Error != sentence || j.Metadata["attempt"] != float64(1) || len(attempts) != 1 ||
		!utf8.ValidString(stored) || len(stored) > 300 || !strings.HasPrefix(stored, sentence) || strings.Contains(stored, "\x00") {
		t.Fatalf("error %q, attempts %v", deref(j.Error), attempts)
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("%d runs", n)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// refusingStore refuses, for good, every Fail that carries a cause.
type refusingStore struct {
	queue.Store
	refused atomic.Int64
}

func (s *refusingStore) Fail(ctx context.Context, id jobs.ID, token, message, cause string, patch map[string]any) (bool, error) {
	if cause != "" {
		s.refused.Add(1)
		return false, errors.New("ERROR: invalid byte sequence (SQLSTATE 22021)")
	}
	return s.Store.Fail(ctx, id, token, message, cause, patch)
}

// An outcome the database refuses for good is not retried: the plainer
// write follows at once, and the job ends on its first attempt.
func TestRefusedOutcomeFallsBackToAPlainOne(t *testing.T) {
	t.Parallel()
	b := newBench(t)
	store := &refusingStore{Store: b.store}
	cfg := fast()
	cfg.Logger = quiet
	queuetest.Start(t, b.dsn, store, queue.HandlerFunc(func(context.Context, queue.Job, queue.Reporter) error {
		return jobs.Fail("The video could not be converted.", errors.New("boom"))
	}), cfg, true)
	id := b.insert(1)[0]
	b.waitFor("the job failed", func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status = 'error'`, string(id)) == 1
	})
	if j := b.job(id); j.Metadata["attempt"] != float64(1) || store.refused.Load() != 1 || deref(j.Error) != "The video could not be converted." {
		t.Fatalf("attempt %v, refused %d times, error %v", j.Metadata["attempt"], store.refused.Load(), deref(j.Error))
	}
}
