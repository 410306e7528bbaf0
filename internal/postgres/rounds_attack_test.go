package postgres_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// lockedJobs opens a store over a fresh database with one queued job, and
// takes an ACCESS EXCLUSIVE lock on public.jobs, so that every statement
// reading it waits until release is called.
func lockedJobs(t *testing.T) (store *postgres.JobStore, id jobs.ID, release func()) {
	t.Helper()
	ctx := context.Background()
	pool, err := postgres.OpenPool(ctx, pgtest.New(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	id = jobs.ID(uuid.NewString())
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'queued', '{"owner": "alice"}')`, id); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE public.jobs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var once bool
	release = func() {
		if !once {
			once = true
			_ = tx.Rollback(ctx)
		}
	}
	t.Cleanup(release)
	return postgres.NewJobStore(pool), id, release
}

// until yields until cond holds.
func until(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}

type summaryAnswer struct {
	sum jobs.Summary
	err error
}

// Claim (3): a read whose context ends stops waiting and the round goes
// on. But a round's statement runs under the deadline of the read that
// opened it: when that read's deadline has passed (it left already), every
// other read of the round fails with "context deadline exceeded" (an
// outage: a 503 through job-status) though its own request has all its time
// left and the database is answering. With equal RequestTimeouts this
// cascades: a statement stuck behind a lock ends only after its leader's
// deadline (plus pgx's cancel delay), so the next round's first reader's
// deadline has often passed too, and that whole round fails at once.
func TestRoundsAReadFailsWithTheDeadlineOfAnotherRequest(t *testing.T) {
	t.Parallel()
	store, id, release := lockedJobs(t)
	bg := context.Background()
	answers := make(chan summaryAnswer, 3)
	ask := func(ctx context.Context) {
		sum, err := store.Summary(ctx, id)
		answers <- summaryAnswer{sum, err}
	}
	// Two statements run (behind the lock).
	go ask(bg)
	go ask(bg)
	until(func() bool { running, _ := store.StatusReads(); return running == 2 })

	// A request with a near deadline opens the next round; another, with
	// no deadline at all, joins it; then the first one's deadline passes
	// while both wait, and it leaves.
	near, cancel := context.WithTimeout(bg, 2*time.Second)
	defer cancel()
	left := make(chan error, 1)
	go func() {
		_, err := store.Summary(near, id)
		left <- err
	}()
	until(func() bool { _, waiting := store.StatusReads(); return waiting == 1 })
	mine := make(chan summaryAnswer, 1)
	go func() {
		sum, err := store.Summary(bg, id)
		mine <- summaryAnswer{sum, err}
	}()
	until(func() bool { _, waiting := store.StatusReads(); return waiting == 2 })
	if err := <-left; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read past its deadline got %v", err)
	}
	release()
	for range 2 {
		if a := <-answers; a.err != nil || !a.sum.Found {
			t.Fatalf("a read of a running statement got %+v", a)
		}
	}
	if a := <-mine; a.err != nil || !a.sum.Found || a.sum.Owner != "alice" {
		t.Fatalf("a read with no deadline, of a database that answers, got %+v (%v is %v: 503 through job-status); want its row",
			a.sum, a.err, errors.Is(a.err, jobs.ErrUnavailable))
	}
}

// Claim (3) again: the read that begins a statement runs it itself, with
// its context's cancellation removed, so when its request ends (the client
// went away) it keeps waiting for the statement — behind a lock, until the
// deadline — holding its handler and a connection. Before rounds, a
// cancelled request's statement was cancelled and the read returned.
func TestRoundsTheReadThatBeginsAStatementStopsWaitingWhenItsRequestEnds(t *testing.T) {
	t.Parallel()
	store, id, release := lockedJobs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan summaryAnswer, 1)
	go func() {
		sum, err := store.Summary(ctx, id)
		got <- summaryAnswer{sum, err}
	}()
	until(func() bool { running, _ := store.StatusReads(); return running == 1 })
	cancel()
	// A guard against waiting for ever, not a timing assertion: the lock
	// is held until the read returns, or until the guard gives up.
	select {
	case a := <-got:
		if !errors.Is(a.err, context.Canceled) {
			t.Fatalf("a read whose request ended got %+v, %v; want context.Canceled", a.sum, a.err)
		}
	case <-time.After(20 * time.Second):
		release()
		a := <-got
		t.Fatalf("a read whose request had ended still waited for its statement; it returned %+v, %v only when the lock was released",
			a.sum, a.err)
	}
}

// Summary refuses a malformed id before any statement (so that it cannot
// fail a round); but the error it wraps says "the database cannot answer
// now" (ErrUnavailable: a 503 with Retry-After, which a client retries for
// ever), where the statement of old failed as a plain error (22P02).
func TestSummaryOfAMalformedIDIsNotAnOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := postgres.OpenPool(ctx, pgtest.New(t), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewJobStore(pool)
	for _, read := range []func() error{
		func() error { _, err := store.Summary(ctx, "not-a-uuid"); return err },
		func() error { _, err := store.SOPSummary(ctx, "not-a-uuid", "n1"); return err },
	} {
		if err := read(); err == nil || errors.Is(err, jobs.ErrUnavailable) {
			t.Errorf("a malformed id: %v; ErrUnavailable: %v; want an error that is not an outage", err, errors.Is(err, jobs.ErrUnavailable))
		}
	}
}
