package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/httpserver"
	"github.com/runops/runops/internal/logtest"
	"github.com/runops/runops/internal/wait"
)

// frontend stands in for the Next.js server.
func frontend(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/sop/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("X-Next", "1")
		w.WriteHeader(http.StatusInternalServerError) // the app's /sop/* page does this by design
		_, _ = io.WriteString(w, "<html>sop page for "+r.URL.Path+"?"+r.URL.RawQuery+"</html>")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Read it all first: an HTTP/1 handler cannot read the request once it
		// has started answering (no full duplex).
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Forwarded-Host-Seen", r.Header.Get("X-Forwarded-Host"))
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/_next/webpack-hmr", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "the frontend's own healthz")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFrontendProxy(t *testing.T) {
	t.Parallel()
	fe := frontend(t)
	target, _ := url.Parse(fe.URL)
	e := setup(t)
	h := api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, e.fake), FrontendURL: target,
		Logger: slog.New(slog.DiscardHandler)})
	e.srv.Config.Handler = httpserver.WithHealth(h, slog.New(slog.DiscardHandler))

	// A 500 from the app passes through unchanged, body, headers and query included.
	resp, err := http.Get(e.srv.URL + "/sop/abc?x=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 || string(body) != "<html>sop page for /sop/abc?x=1</html>" || resp.Header.Get("X-Next") != "1" {
		t.Fatalf("sop page: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// Bodies stream both ways.
	payload := strings.Repeat("0123456789", 100000)
	resp, err = http.Post(e.srv.URL+"/echo", "text/plain", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(body) != payload || resp.Header.Get("X-Forwarded-Host-Seen") == "" {
		t.Fatalf("echo: %d, %d bytes, %v", resp.StatusCode, len(body), resp.Header)
	}
	// API and health paths are ours, never proxied.
	e.do("GET", "/api/job-status/nope", "").expect(t, 400, nil)
	r := e.do("GET", "/healthz", "")
	r.expect(t, 200, map[string]any{"status": "ok"})
	// Whatever the method: the frontend's own /healthz never answers.
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS"} {
		for _, p := range []string{"/healthz", "/readyz"} {
			if r := e.do(m, p, ""); r.status != http.StatusMethodNotAllowed || strings.Contains(r.raw, "frontend") {
				t.Errorf("%s %s: %d %s", m, p, r.status, r.raw)
			}
		}
	}

	// A websocket (next dev's HMR) is tunnelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/_next/webpack-hmr", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for _, m := range []string{"hello", "again"} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil || string(got) != "echo:"+m {
			t.Fatalf("websocket: %q %v", got, err)
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")

	// The app down: a 502, not a hang.
	fe.Close()
	resp, err = http.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("frontend down: %d", resp.StatusCode)
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	e := setup(t)
	objects := mustStorage(t, e.fake)
	e.srv.Config.Handler = httpserver.WithHealth(api.Handler(api.Options{Jobs: e.store, Objects: objects,
		Logger: slog.New(slog.DiscardHandler)}), slog.New(slog.DiscardHandler),
		httpserver.Check{Name: "database", Fn: e.store.Ping}, httpserver.Check{Name: "storage", Fn: objects.Ping})
	// A round of checks answers for a second: each change shows within it.
	until := func(what string, code int, checks map[string]any) {
		t.Helper()
		wait.For(t, what, 30*time.Second, func() bool {
			r := e.do("GET", "/readyz", "")
			got, _ := r.body["checks"].(map[string]any)
			return r.status == code && fmt.Sprint(got) == fmt.Sprint(checks)
		})
	}
	until("ready", 200, map[string]any{"database": "ok", "storage": "ok"})
	e.db.SetDown(true)
	until("the database said unavailable", 503, map[string]any{"database": "unavailable", "storage": "ok"})
	e.db.SetDown(false)
	e.fake.SetDown(true)
	until("storage said unavailable", 503, map[string]any{"database": "ok", "storage": "unavailable"})
	e.fake.SetDown(false)
	until("ready again", 200, map[string]any{"database": "ok", "storage": "ok"})
	e.do("GET", "/healthz", "").expect(t, 200, nil)
}

// A path that decodes to /api/… is never the frontend's, however it is
// spelled: encoded spellings get our JSON 404, and spellings that clean to
// /api/… are redirected to the clean path; nothing reaches the proxy.
func TestEncodedAPIPathsAreNeverProxied(t *testing.T) {
	t.Parallel()
	var reached atomic.Int32
	fe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		_, _ = io.WriteString(w, "the app's own route "+r.URL.Path)
	}))
	t.Cleanup(fe.Close)
	target, _ := url.Parse(fe.URL)
	e := setup(t)
	h := api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, e.fake), FrontendURL: target,
		Logger: slog.New(slog.DiscardHandler)})
	e.srv.Config.Handler = httpserver.WithHealth(h, slog.New(slog.DiscardHandler))
	noFollow := &http.Client{Transport: http.DefaultClient.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("POST", e.srv.URL+path, strings.NewReader(`{"jobId":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, path := range []string{"/%61pi/queue-job", "/api%2Fqueue-job", "/%61pi/get-upload-url", "/api/sop%2F..%2Fqueue-job"} {
		resp, body := send(path)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"error"`) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	for _, path := range []string{"//api/queue-job", "/./api/queue-job", "/%61pi/../api/queue-job"} {
		resp, body := send(path)
		if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/api/queue-job" {
			t.Errorf("%s: %d %v %s", path, resp.StatusCode, resp.Header, body)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d requests reached the frontend", n)
	}
	// The guard does not swallow what is the frontend's.
	if resp, body := send("/some/page"); resp.StatusCode != 200 || reached.Load() != 1 {
		t.Fatalf("a frontend page: %d %s", resp.StatusCode, body)
	}
}

// A proxied page whose body the frontend cuts off (or its client leaves)
// is counted and logged like every request, and what the proxy says of it
// goes to the service's own log: the server aborts such a request, and
// before, its line was never written and the proxy's went to stderr.
func TestACutOffProxiedPageIsLogged(t *testing.T) {
	t.Parallel()
	fe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		_, _ = io.WriteString(w, "half")
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(fe.Close)
	target, _ := url.Parse(fe.URL)
	e := setup(t)
	var logs logtest.Logs
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, e.fake), FrontendURL: target, Logger: logger})
	if resp, err := http.Get(e.srv.URL + "/page"); err == nil {
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	seen := func(s string) bool { return strings.Contains(logs.String(), s) }
	wait.For(t, "the cut-off page's line", 30*time.Second, func() bool { return seen(`"path":"/page"`) })
	wait.For(t, "the proxy's own words in the log", 30*time.Second, func() bool { return seen("ReverseProxy") })
}

// Behind a proxy it trusts (RUNOPS_TRUSTED_PROXIES), the frontend learns
// the browser's address and scheme from what that proxy said (https behind
// a load balancer that ends TLS); from anyone else, only runops' own view.
func TestTheFrontendSeesTheClientBehindATrustedProxy(t *testing.T) {
	t.Parallel()
	seen := make(chan http.Header, 2)
	fe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
	}))
	t.Cleanup(fe.Close)
	target, _ := url.Parse(fe.URL)
	e := setup(t)
	// What else a client may say of itself, which Next.js and app code
	// believe (x-forwarded-port, x-real-ip for rate limits): a trusted
	// proxy's is passed on, anyone else's is not.
	more := map[string]string{"X-Real-Ip": "203.0.113.7", "X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/admin",
		"X-Forwarded-Ssl": "on", "X-Forwarded-Server": "evil", "X-Original-Url": "/admin",
		"True-Client-Ip": "203.0.113.7", "X-Client-Ip": "203.0.113.7"}
	for _, c := range []struct {
		trusted                  []netip.Prefix
		wantFor, wantPr, wantHst string
	}{
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "203.0.113.7, 127.0.0.1", "https", "app.example.com"},
		{nil, "127.0.0.1", "http", strings.TrimPrefix(e.srv.URL, "http://")},
	} {
		e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, e.fake), FrontendURL: target,
			TrustedProxies: c.trusted, Logger: slog.New(slog.DiscardHandler)})
		req, _ := http.NewRequest("GET", e.srv.URL+"/page", nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "app.example.com")
		for k, v := range more {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := wait.Recv(t, seen, "the frontend's request")
		if h.Get("X-Forwarded-For") != c.wantFor || h.Get("X-Forwarded-Proto") != c.wantPr || h.Get("X-Forwarded-Host") != c.wantHst {
			t.Errorf("trusted %v: the frontend saw X-Forwarded-For %q, -Proto %q, -Host %q; want %q, %q, %q", c.trusted,
				h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"), c.wantFor, c.wantPr, c.wantHst)
		}
		for k, v := range more {
			if got := h.Get(k); (got == v) != (c.trusted != nil) {
				t.Errorf("trusted %v: the frontend saw %s %q from the client", c.trusted, k, got)
			}
		}
	}
}
