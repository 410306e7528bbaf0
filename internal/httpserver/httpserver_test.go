package httpserver_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/httpserver"
	"github.com/runops/runops/internal/logtest"
	"github.com/runops/runops/internal/wait"
)

// A body that stops arriving does not hold its connection: once the read
// deadline passes the server closes it. (The test waits up to a minute for
// that close; without a deadline it would wait the whole minute and fail.)
func TestStalledBodyIsCut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		handled <- err
		if err != nil {
			http.Error(w, "slow body", http.StatusBadRequest)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- httpserver.Serve(ctx, ln, h, 200*time.Millisecond, time.Second, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /api/queue-job HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = io.Copy(io.Discard, bufio.NewReader(conn)) // until the server closes the connection
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the connection is still open a minute later")
	}
	if err := wait.Recv(t, handled, "the handler"); err == nil {
		t.Fatal("the handler read a whole body that never came")
	}
}

// A path the process owns (Own: /metrics as main.go mounts it) answers GET
// itself and any other method with 405, never handing it to the rest.
func TestOwnPathsAreNeverHandedOn(t *testing.T) {
	passed := false
	mux := httpserver.WithHealth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { passed = true }), slog.New(slog.DiscardHandler))
	httpserver.Own(mux, "/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "metrics") }))
	for _, c := range []struct {
		method, path string
		status       int
	}{{"GET", "/metrics", 200}, {"HEAD", "/metrics", 200}, {"POST", "/metrics", 405}, {"DELETE", "/healthz", 405}, {"OPTIONS", "/readyz", 405}} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || passed {
			t.Errorf("%s %s: %d (handed on: %v); want %d", c.method, c.path, rec.Code, passed, c.status)
		}
	}
}

// /readyz is public: however many ask, its checks (a storage request under
// the service key, a database ping) run at most once a second, and a
// failing one is logged once, when it starts failing, and again when it
// passes. Before, each GET ran every check and logged each failure.
func TestReadinessChecksAreShared(t *testing.T) {
	var calls atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	var logs logtest.Logs
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	mux := httpserver.WithHealth(http.NotFoundHandler(), log, httpserver.Check{Name: "storage", Fn: func(context.Context) error {
		calls.Add(1)
		if failing.Load() {
			return errors.New("connection refused")
		}
		return nil
	}})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	get := func() int {
		t.Helper()
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 10 {
				if code := get(); code != http.StatusServiceUnavailable {
					t.Errorf("/readyz %d while storage fails", code)
				}
			}
		})
	}
	wg.Wait()
	// One round a second at most: the rounds that can have started since.
	if n, most := calls.Load(), int64(time.Since(start)/time.Second)+1; n > most {
		t.Fatalf("100 probes ran the check %d times; at most %d", n, most)
	}
	failing.Store(false)
	wait.For(t, "/readyz to say ready again", 30*time.Second, func() bool { return get() == http.StatusOK })
	if n := strings.Count(logs.String(), "readiness check failed"); n != 1 {
		t.Errorf("%d lines about the failing check; want one:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "readiness check passes again") {
		t.Errorf("no line when the check passed again:\n%s", logs.String())
	}
}
