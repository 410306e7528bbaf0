package postgres

import (
	"context"
	"crypto/rand"
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

// ProbeChannel carries the listener's proof of itself (ProbeTimeout).
const ProbeChannel = "runops_listener_probe"

// listenChannels is how many channels a Listener LISTENs on: Channel and
// ProbeChannel (Run).
const listenChannels = 2

// ProbeTimeout is how long a listener waits for its own probe.
const ProbeTimeout = time.Second

// Listener LISTENs on Channel over its own connection, dialled anew on every
// (re)connect, and hands what it hears to the worker's Events: every
// notification to Notify (which must not block), and a Wake after every
// successful LISTEN, since what was queued while it was disconnected has to
// be found by a scan then.
//
// A LISTEN that "succeeds" proves nothing: through a transaction pooler it
// is accepted and then hears nothing. So on every connect the listener sends
// itself a notification from another connection (Send) and counts itself
// connected only once it hears it, within ProbeTimeout; otherwise it says so
// (log, Connected false, Problem) and the worker goes on finding jobs by its
// sweep every RUNOPS_SWEEP.
type Listener struct {
	DSN    string
	Events queue.Events
	// Send sends a notification from a connection other than the
	// listener's (the worker's pool). Nil: a connection of its own to DSN,
	// opened for the probe and closed.
	Send           func(ctx context.Context, channel, payload string) error
	ReconnectDelay time.Duration // default 1s (pgxlisten's own default is a minute)
	OnConnect      func()        // optional, once the probe is heard (tests, readiness)
	OnDisconnect   func(error)   // optional
	Logger         *slog.Logger

	connected atomic.Bool
	probe     atomic.Pointer[string] // the token of the probe in flight
	deaf      atomic.Bool            // the last probe was not heard in time
	listened  atomic.Int32           // channels LISTENed on the connection in use
}

// Connected tells whether the listener is LISTENing now, proven by its probe.
func (l *Listener) Connected() bool { return l.connected.Load() }

// Problem says why the listener is not connected, for /readyz.
func (l *Listener) Problem() string {
	switch {
	case l.connected.Load():
		return ""
	case l.deaf.Load():
		return "LISTEN hears nothing (RUNOPS_LISTEN_DATABASE_URL goes through a transaction pooler?): polling every RUNOPS_SWEEP"
	default:
		return "not listening (connecting): polling every RUNOPS_SWEEP"
	}
}

// Run listens until ctx is done.
func (l *Listener) Run(ctx context.Context) error {
	delay := l.ReconnectDelay
	if delay <= 0 {
		delay = time.Second
	}
	log := l.log()
	pl := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			l.listened.Store(0)
			return pgx.Connect(ctx, l.DSN) // a new connection every time
		},
		// pgxlisten reports here what broke the connection (dial, LISTEN,
		// waiting); handler errors cannot reach it (HandleNotification).
		LogError: func(ctx context.Context, err error) {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return // shutting down
			}
			// A probe sent on a connection that broke can no longer be
			// heard: its timer must not call this listener deaf.
			l.probe.Store(nil)
			if l.connected.Swap(false) && l.OnDisconnect != nil {
				l.OnDisconnect(err)
			}
			log.Warn("job listener: connection problem; reconnecting", "error", err, "in", delay)
		},
		ReconnectDelay: delay,
	}
	pl.Handle(Channel, (*listenHandler)(l))
	pl.Handle(ProbeChannel, (*probeHandler)(l))
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

// HandleBacklog runs right after LISTEN on every (re)connect: the scan for
// what was queued meanwhile.
func (h *listenHandler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
	h.Events.Wake()
	(*Listener)(h).probeOnceListening(ctx)
	return nil
}

// HandleBacklog runs right after LISTEN on the probe channel on every
// (re)connect.
func (h *probeHandler) HandleBacklog(ctx context.Context, _ string, _ *pgx.Conn) error {
	(*Listener)(h).probeOnceListening(ctx)
	return nil
}

// probeOnceListening sends the probe once both channels are LISTENed on the
// connection (pgxlisten LISTENs them in no set order, one statement each, and
// reads notifications only once all are). Never before the last LISTEN: a
// transaction pooler hands a server connection's notification to whichever
// client runs a statement on it, so the other channel's LISTEN could carry
// the probe back, and a listener that hears nothing would count itself
// heard.
func (l *Listener) probeOnceListening(ctx context.Context) {
	if l.listened.Add(1) == listenChannels {
		l.sendProbe(ctx)
	}
}

// sendProbe notifies ProbeChannel with a new token and, unless the listener
// hears it within ProbeTimeout, reports that it does not hear.
func (l *Listener) sendProbe(ctx context.Context) {
	token := rand.Text()
	l.probe.Store(&token)
	send := l.Send
	if send == nil {
		send = func(ctx context.Context, channel, payload string) error {
			conn, err := pgx.Connect(ctx, l.DSN)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			_, err = conn.Exec(ctx, notify, channel, payload)
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := send(sctx, ProbeChannel, token)
	cancel()
	if err != nil {
		// The database is not answering: the connection's own errors will
		// tell; try again with the next connect.
		l.log().Warn("job listener: could not send its probe", "error", err)
	}
	time.AfterFunc(ProbeTimeout, func() {
		if ctx.Err() != nil || l.connected.Load() || l.probe.Load() != &token {
			return
		}
		if !l.deaf.Swap(true) {
			l.log().Error("job listener: LISTEN succeeded but hears nothing, not even its own probe: " +
				"RUNOPS_LISTEN_DATABASE_URL must be a direct (or session-mode) connection, not a transaction pooler. " +
				"Picking up jobs by polling every RUNOPS_SWEEP instead.")
		}
	})
}

type probeHandler Listener

// HandleNotification takes the listener's own probe as proof that it hears;
// other listeners' probes are ignored.
func (h *probeHandler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	l := (*Listener)(h)
	if tok := l.probe.Load(); tok == nil || n.Payload != *tok || l.connected.Swap(true) {
		return nil
	}
	if l.deaf.Swap(false) {
		l.log().Info("job listener: hears notifications again")
	}
	if l.OnConnect != nil {
		l.OnConnect()
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
