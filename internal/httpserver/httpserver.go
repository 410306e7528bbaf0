// Package httpserver runs an HTTP server with the hardening every runops
// process shares (header and idle timeouts, graceful shutdown) and serves the
// /healthz and /readyz probes, which are never proxied. It must not know what
// the checks or the routes are.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Check is one dependency for /readyz; it returns nil when reachable.
type Check struct {
	Name string
	Fn   func(context.Context) error
}

// NotReady is a check's answer when the reason is known and says more than
// "unavailable" (a key the dependency refuses, the process draining): /readyz
// shows Reason.
type NotReady struct{ Reason string }

func (n *NotReady) Error() string { return n.Reason }

// Degraded is a check's answer when the process works, in a lesser way an
// operator should know of (polling for jobs instead of listening): /readyz
// stays ready and shows Reason.
type Degraded struct{ Reason string }

func (d *Degraded) Error() string { return d.Reason }

// WithHealth serves /healthz (the process is alive) and /readyz (every check
// passes within 3 s) in front of next. The process's other routes of its
// own (/metrics) go on the mux it returns: one mux a request goes through.
//
// /readyz is public, and a round of checks costs the dependencies (a
// storage request under the service key, a database ping): requests share
// one round, and its answer serves for a second (readyFor), however many
// ask. A check's failure is logged when its answer changes, not at every
// probe, and so is its return.
func WithHealth(next http.Handler, log *slog.Logger, checks ...Check) *http.ServeMux {
	mux := http.NewServeMux()
	Own(mux, "/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	}))
	rd := &readiness{checks: checks, log: log, said: map[string]string{}}
	Own(mux, "/readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body := rd.answer(r.Context())
		writeJSON(w, code, body)
	}))
	mux.Handle("/", next)
	return mux
}

// readyFor is how long a round of readiness checks answers /readyz.
const readyFor = time.Second

// readiness is /readyz's last round: its answer and when it was made, and
// what each check said then.
type readiness struct {
	checks []Check
	log    *slog.Logger
	mu     sync.Mutex // held through a round: those who ask meanwhile get its answer
	at     time.Time
	code   int
	body   map[string]any
	said   map[string]string
}

func (rd *readiness) answer(ctx context.Context) (int, map[string]any) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.body != nil && time.Since(rd.at) < readyFor {
		return rd.code, rd.body
	}
	// Not cut short by the request that started it: others wait for it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	done := make(chan result, len(rd.checks))
	for _, c := range rd.checks {
		go func() { done <- result{c.Name, c.Fn(ctx)} }()
	}
	status, code := "ready", http.StatusOK
	results := map[string]string{}
	for range rd.checks {
		res := <-done
		results[res.name] = "ok"
		var d *Degraded
		var n *NotReady
		switch {
		case errors.As(res.err, &d):
			results[res.name] = d.Reason
		case errors.As(res.err, &n):
			results[res.name] = n.Reason
			status, code = "not ready", http.StatusServiceUnavailable
		case res.err != nil:
			results[res.name] = "unavailable"
			status, code = "not ready", http.StatusServiceUnavailable
		}
		rd.tell(res.name, results[res.name], res.err)
	}
	rd.at, rd.code, rd.body = time.Now(), code, map[string]any{"status": status, "checks": results}
	return rd.code, rd.body
}

// tell logs a check's answer when it differs from the last it gave.
func (rd *readiness) tell(name, said string, err error) {
	before, ok := rd.said[name]
	rd.said[name] = said
	switch {
	case ok && before == said:
	case said == "ok":
		if ok {
			rd.log.Info("readiness check passes again", "check", name)
		}
	case errors.As(err, new(*Degraded)):
		rd.log.Warn("degraded", "check", name, "reason", said)
	case errors.As(err, new(*NotReady)):
		rd.log.Warn("not ready", "check", name, "reason", said)
	default:
		rd.log.Warn("readiness check failed", "check", name, "error", err)
	}
}

// Own serves GET (and HEAD) of path with h on mux, and answers any other
// method with 405: a path of the process's own is never handed to the
// rest of mux (a proxied frontend) whatever the method.
func Own(mux *http.ServeMux, path string, h http.Handler) {
	mux.Handle("GET "+path, h)
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "Method not allowed"})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve answers on ln until ctx is done, then stops accepting and lets
// in-flight requests finish for up to grace. A request, body included, must
// arrive within readTimeout, or its connection is closed: API bodies are
// small (uploads go straight to storage), and a body that trickles in would
// hold a goroutine and a descriptor for as long as its client likes. Hijacked
// connections (proxied websockets) lose the deadline.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, readTimeout, grace time.Duration, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(10*time.Second, readTimeout),
		ReadTimeout:       readTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// No WriteTimeout: proxied pages stream and websockets stay open; API
		// handlers bound their own work.
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serveErr := <-errc; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	return err
}
