package postgres_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// lockedBuffer is a log destination the listener's goroutines and its
// probe timer write to at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A direct listener that heard its own probe and then lost its connection
// (within ProbeTimeout of the probe) did not "hear nothing": while it
// reconnects it is connecting, and it must never say (Problem, log) that its
// URL goes through a transaction pooler. The probe's timer only looks at
// Connected, which the disconnect reset, and at the token, which is replaced
// only once both channels are LISTENed again on the next connection.
func TestHeardListenerThatReconnectsIsNotCalledDeaf(t *testing.T) {
	t.Parallel()
	pool, direct := pgtest.Pool(t)
	proxy, dsn := pgtest.NewProxy(t, direct)
	store := postgres.NewJobStore(pool)
	var logs lockedBuffer
	heard := make(chan struct{}, 10)
	lost := make(chan error, 10)
	ev := &events{notified: make(chan jobs.ID, 10), woken: make(chan struct{}, 10)}
	l := &postgres.Listener{DSN: dsn, Events: ev, Send: store.Notify,
		// The reconnect comes well after the first probe's timer: the
		// listener is between connections when it fires.
		ReconnectDelay: 3 * postgres.ProbeTimeout,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
		OnConnect:      func() { heard <- struct{}{} },
		OnDisconnect:   func(err error) { lost <- err }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	await := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s; log:\n%s", what, logs.String())
		}
	}
	await("probe heard", heard)
	proxy.SetDown(true) // the connection drops right after its probe was heard
	select {
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never noticed its connection drop")
	}
	proxy.SetDown(false)
	await("probe heard after the reconnect", heard)
	if s := logs.String(); strings.Contains(s, "hears nothing") || strings.Contains(s, "hears notifications again") {
		t.Fatalf("a listener that heard its probe was called deaf while it reconnected:\n%s", s)
	}
}
