package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// Channel is the NOTIFY channel of public.jobs (see the jobs migration).
const Channel = "runops_jobs"

// Notification is the payload the jobs trigger sends.
type Notification struct {
	JobID  jobs.ID     `json:"job_id"`
	Op     string      `json:"op"` // INSERT, UPDATE or DELETE
	Status jobs.Status `json:"status"`
}

// Listener LISTENs on Channel over its own connection, dialled anew on every
// (re)connect, and hands what it hears to the worker's Events: every
// notification to Notify (which must not block), and a Wake after every
// successful LISTEN, since what was queued while it was disconnected has to
// be found by a scan then.
type Listener struct {
	DSN            string
	Events         queue.Events
	ReconnectDelay time.Duration // default 1s (pgxlisten's own default is a minute)
	OnConnect      func()        // optional, after Events.Wake (tests, readiness)
	OnDisconnect   func(error)   // optional
	Logger         *slog.Logger

	connected atomic.Bool
}

// Connected tells whether the listener is LISTENing now.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Run listens until ctx is done.
func (l *Listener) Run(ctx context.Context) error {
	delay := l.ReconnectDelay
	if delay <= 0 {
		delay = time.Second
	}
	log := l.log()
	pl := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.Connect(ctx, l.DSN) // a new connection every time
		},
		// pgxlisten reports here what broke the connection (dial, LISTEN,
		// waiting); handler errors cannot reach it (HandleNotification).
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return // shutting down
			}
			if l.connected.Swap(false) && l.OnDisconnect != nil {
				l.OnDisconnect(err)
			}
			log.Warn("job listener: connection problem; reconnecting", "error", err, "in", delay)
		},
		ReconnectDelay: delay,
	}
	pl.Handle(Channel, (*listenHandler)(l))
	err := pl.Listen(ctx)
	l.connected.Store(false)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (l *Listener) log() *slog.Logger {
	if l.Logger == nil {
		return slog.Default()
	}
	return l.Logger
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

type listenHandler Listener

func (h *listenHandler) log() *slog.Logger { return (*Listener)(h).log() }

// HandleNotification hands a notification over. A payload that is not ours
// (anyone may pg_notify this channel) is logged and dropped here: an error
// returned to pgxlisten would reach LogError, which means a lost connection.
func (h *listenHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	var p Notification
	if err := json.Unmarshal([]byte(n.Payload), &p); err != nil || p.JobID == "" {
		h.log().Warn("job listener: ignoring a notification that is not a job's", "payload", truncate(n.Payload, 200))
		return nil
	}
	h.Events.Notify(p.JobID, p.Status)
	return nil
}

// HandleBacklog runs right after LISTEN on every (re)connect.
func (h *listenHandler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	(*Listener)(h).connected.Store(true)
	h.Events.Wake()
	if h.OnConnect != nil {
		h.OnConnect()
	}
	return nil
}

// IsTransactionPooler tells whether dsn points at a transaction-mode pooler
// (Supabase's port 6543, or a pgbouncer=true flag), where LISTEN does not work
// and prepared statements must not be cached.
func IsTransactionPooler(dsn string) bool {
	u, err := url.Parse(dsn)
	if err != nil {
		return false
	}
	return u.Port() == "6543" || u.Query().Get("pgbouncer") == "true"
}
