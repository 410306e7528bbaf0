// Package queuetest holds test support for the queue engine: a handler that
// proves runs of one job never overlap (Advisory), a worker started as the
// binary wires one (Start), and the loads and latencies of the queue's
// benchmarks (load.go). Tests use it, also in the test binary cmd/runops's
// process tests start as runops; production code must not.
package queuetest

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
)

// RunsTable records every run the Advisory handler starts.
const RunsTable = `CREATE TABLE test_runs (job_id uuid, token text, worker text, overlapped bool,
  at timestamptz DEFAULT clock_timestamp())`

// Advisory wraps work in a handler that takes pg_try_advisory_lock on the job
// over a connection of its own for the whole run and records in test_runs
// whether it got it (overlapped = it did not: another run held it), with the
// process id as the worker.
func Advisory(pool *pgxpool.Pool, work func(ctx context.Context, j queue.Job) error) queue.Handler {
	pid := strconv.Itoa(os.Getpid())
	return queue.HandlerFunc(func(ctx context.Context, j queue.Job, _ queue.Reporter) error {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, string(j.ID)).Scan(&got); err != nil {
			return err
		}
		if got {
			defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, string(j.ID))
		}
		if _, err := conn.Exec(context.WithoutCancel(ctx), `INSERT INTO test_runs (job_id, token, worker, overlapped) VALUES ($1, $2, $3, $4)`,
			string(j.ID), j.Token, pid, !got); err != nil {
			return err
		}
		return work(ctx, j)
	})
}

// Started is a worker running against a real database, with its listener.
type Started struct {
	Worker    *queue.Worker
	Connected chan struct{} // a value per (re)connect of the listener
	Lost      chan struct{} // a value per lost listener connection
	Cancel    func()        // as SIGTERM: stop claiming, drain
	Stop      func()        // Cancel, then wait until the worker has returned
}

// Start runs a worker over store with handler h, as `runops worker` wires it:
// with a listener on dsn when listen is set (returning once it has connected),
// polling only otherwise. It stops when the test ends.
func Start(t testing.TB, dsn string, store queue.Store, h queue.Handler, cfg queue.Config, listen bool) *Started {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := queue.New(store, h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Started{Worker: w, Connected: make(chan struct{}, 100), Lost: make(chan struct{}, 100), Cancel: cancel}
	var wg sync.WaitGroup
	if listen {
		l := &postgres.Listener{DSN: dsn, Events: w, ReconnectDelay: 200 * time.Millisecond, Logger: cfg.Logger,
			OnConnect:    func() { s.Connected <- struct{}{} },
			OnDisconnect: func(error) { s.Lost <- struct{}{} },
		}
		wg.Go(func() { _ = l.Run(ctx) })
	}
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	var once sync.Once
	s.Stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(s.Stop)
	if listen {
		select {
		case <-s.Connected:
		case <-time.After(30 * time.Second):
			t.Fatal("listener never connected")
		}
	}
	return s
}
