package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/httprate"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// request is what the API learns of a request on its way through: its id
// (logRequests) and who sent it (authenticate), one context value set once
// (a context value and a request copy each would cost three allocations).
type request struct {
	id        string
	user      string // a user's token's: the user's id
	service   bool   // the service role's token
	unmatched bool   // answered by no route: a path or method none serves
	answer    answer
}

// answer is the ResponseWriter the handlers write a request's answer to: it
// counts the status and bytes for the request's log line and metrics, as
// chi's WrapResponseWriter did, and lets through what the server's writer
// can do (flush, hijack for a proxied websocket, read from, through Unwrap
// for http.ResponseController).
type answer struct {
	http.ResponseWriter
	status int // the first final status written; 0 before
	bytes  int
}

func (a *answer) WriteHeader(code int) {
	switch {
	case code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols:
		a.ResponseWriter.WriteHeader(code) // informational: more follow
	case a.status == 0:
		a.status = code
		a.ResponseWriter.WriteHeader(code)
	}
}

func (a *answer) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	n, err := a.ResponseWriter.Write(b)
	a.bytes += n
	return n, err
}

func (a *answer) ReadFrom(src io.Reader) (int64, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	var n int64
	var err error
	if rf, ok := a.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(a.ResponseWriter, src)
	}
	a.bytes += int(n)
	return n, err
}

func (a *answer) Flush() {
	if f, ok := a.ResponseWriter.(http.Flusher); ok {
		if a.status == 0 {
			a.WriteHeader(http.StatusOK)
		}
		f.Flush()
	}
}

func (a *answer) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// SetWriteDeadline passes the deadline to the connection's writer, without
// an http.ResponseController (one allocation a request).
func (a *answer) SetWriteDeadline(t time.Time) error {
	if d, ok := a.ResponseWriter.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return d.SetWriteDeadline(t)
	}
	return http.ErrNotSupported
}

type requestKey struct{}

// requestOf is what the middleware learned of r (nothing outside it).
func requestOf(r *http.Request) *request {
	if q, ok := r.Context().Value(requestKey{}).(*request); ok {
		return q
	}
	return &request{}
}

// requestIDs makes the ids of requests that bring none (X-Request-Id):
// the host, a random part that tells this process from others, a count.
var requestIDs = struct {
	prefix string
	count  atomic.Uint64
}{prefix: requestIDPrefix()}

func requestIDPrefix() string {
	host, err := os.Hostname()
	if host == "" || err != nil {
		host = "localhost"
	}
	return host + "/" + rand.Text()[:10] + "-"
}

// newRequestID is the next id: the prefix, then the count in at least six
// digits.
func newRequestID() string {
	var digits [20]byte
	n := strconv.AppendUint(digits[:0], requestIDs.count.Add(1), 10)
	var b strings.Builder // one allocation: the id
	b.Grow(len(requestIDs.prefix) + max(6, len(n)))
	b.WriteString(requestIDs.prefix)
	for range 6 - len(n) {
		b.WriteByte('0')
	}
	b.Write(n)
	return b.String()
}

// broughtID is the id a request brings in X-Request-Id when a proxy could
// have made it: at most 128 characters of letters, digits and ._~:/@+=-
// (UUIDs, AWS's Root=1-…). Any other (32 KiB, quotes and spaces that forge
// a text log's fields) is not taken: "" and the request gets one of ours.
func broughtID(r *http.Request) string {
	id := r.Header.Get("X-Request-Id")
	if len(id) > 128 {
		return ""
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._~:/@+=-", c) >= 0) {
			return ""
		}
	}
	return id
}

// logRequests gives a request its id (the one it brings in X-Request-Id,
// when broughtID takes it, or a new one), sends it back, and writes one
// structured line per request with it.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		q := &request{id: broughtID(r), answer: answer{ResponseWriter: w}}
		if q.id == "" {
			q.id = newRequestID()
		}
		r = r.WithContext(context.WithValue(r.Context(), requestKey{}, q))
		w.Header().Set("X-Request-Id", q.id)
		// Deferred: a request the server aborts (a proxied body cut off:
		// http.ErrAbortHandler passes through recoverPanics) is counted
		// and logged too.
		defer s.logRequest(r, q, start)
		next.ServeHTTP(&q.answer, r)
	})
}

// logRequest counts and logs one request, with what was answered of it.
func (s *server) logRequest(r *http.Request, q *request, start time.Time) {
	// The route's pattern, never the raw path: one series per route.
	route := "unmatched"
	if !q.unmatched {
		route = s.routes.pattern(chi.RouteContext(r.Context()))
	}
	metrics.HTTPRequests.WithLabelValues(route, strconv.Itoa(q.answer.status)).Inc()
	metrics.HTTPSeconds.WithLabelValues(route).Observe(time.Since(start).Seconds())
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "http request",
		slog.String("request_id", q.id), slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", q.answer.status), slog.Int("bytes", q.answer.bytes),
		slog.Duration("duration", time.Since(start)), slog.String("client", s.clientIP(r)))
}

// routePatterns remembers chi's route patterns (RoutePattern joins and
// trims its parts anew at every call, six allocations a request) by the
// parts matched, which are the routes' own strings: as many as the routes.
type routePatterns struct {
	known atomic.Pointer[map[[4]string]string] // replaced whole, never changed
	mu    sync.Mutex                           // for a writer
}

// pattern is rc's route pattern, or "unmatched".
func (p *routePatterns) pattern(rc *chi.Context) string {
	if rc == nil || len(rc.RoutePatterns) > 4 {
		return patternOf(rc)
	}
	var key [4]string
	copy(key[:], rc.RoutePatterns)
	if known := p.known.Load(); known != nil {
		if v, ok := (*known)[key]; ok {
			return v
		}
	}
	v := patternOf(rc)
	p.mu.Lock()
	defer p.mu.Unlock()
	next := map[[4]string]string{key: v}
	if known := p.known.Load(); known != nil {
		maps.Copy(next, *known)
	}
	p.known.Store(&next)
	return v
}

func patternOf(rc *chi.Context) string {
	if v := rc.RoutePattern(); v != "" {
		return v
	}
	return "unmatched"
}

// recoverPanics turns a panic into a logged 500 instead of a dropped connection.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic", "request_id", requestOf(r).id, "panic", v, "stack", string(debug.Stack()))
				s.writeError(w, r, &Error{Status: http.StatusInternalServerError, Message: "Internal server error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// noStore: job state changes every few seconds; no cache may keep it.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Cache-Control"] = noStoreValue
		next.ServeHTTP(w, r)
	})
}

func (s *server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.o.MaxBodyBytes {
			s.writeError(w, r, &Error{Status: http.StatusRequestEntityTooLarge, Message: "Request body is too large"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// timeout bounds a request's work; backends turn the deadline into a 503.
// Its answer must be written within writeTimeouts request timeouts of its
// start: a client that stops reading an answer larger than the socket's
// buffers (a screenshot, an SOP of megabytes) would hold the handler, and
// the answer in memory, for good.
func (s *server) timeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.o.RequestTimeout)
		defer cancel()
		if d, ok := w.(interface{ SetWriteDeadline(time.Time) error }); ok {
			_ = d.SetWriteDeadline(time.Now().Add(writeTimeouts * s.o.RequestTimeout))
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// writeTimeouts is how many request timeouts an /api answer has to be
// written in: 2.5 minutes with the default 30 s, 10 MiB at 600 kbit/s.
const writeTimeouts = 5

// rateLimiter limits the public POSTs per client IP.
func (s *server) rateLimiter() func(http.Handler) http.Handler {
	if s.o.RateLimit <= 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	return httprate.LimitBy(s.o.RateLimit, s.o.RateWindow,
		func(r *http.Request) (string, error) { return rateKey(s.clientIP(r)), nil },
		httprate.WithLimitHandler(func(w http.ResponseWriter, r *http.Request) {
			// httprate has set Retry-After to the window length.
			writeJSON(w, http.StatusTooManyRequests, map[string]string{
				"error": "Too many requests; please wait a moment and try again."})
		}))
}

// rateKey is the rate limit's bucket for a client address: an IPv6 client
// controls a whole /64 (one subscriber's prefix), so that is the unit there.
func rateKey(client string) string {
	a, err := netip.ParseAddr(client)
	if err != nil || a.Is4() {
		return client
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}

// parseHop reads an address as proxies write it in X-Forwarded-For: bare
// ("203.0.113.7", "2001:db8::1"), or with a port ("203.0.113.7:5123",
// "[2001:db8::1]:443").
func parseHop(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return a.Unmap(), err
}

// clientIP is the peer address, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For entry that is not itself a trusted proxy.
func (s *server) clientIP(r *http.Request) string {
	host, trusted := s.peer(r)
	if !trusted {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHop(hops[i])
		if err != nil {
			break // a forged or broken header: stop at what we can trust
		}
		if !s.trusted(a) {
			return a.String()
		}
	}
	return host
}

// peer is the address r came from, and whether it is a proxy in
// RUNOPS_TRUSTED_PROXIES.
func (s *server) peer(r *http.Request) (host string, trusted bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	return host, err == nil && s.trusted(a)
}

// fromTrustedProxy tells whether r came straight from a proxy in
// RUNOPS_TRUSTED_PROXIES.
func (s *server) fromTrustedProxy(r *http.Request) bool {
	_, trusted := s.peer(r)
	return trusted
}

func (s *server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// authenticate checks the Supabase user token a request carries: a valid one
// makes the request that user's, an invalid one is refused (401). Without a
// token the request is anonymous, unless RUNOPS_REQUIRE_AUTH requires one.
func (s *server) authenticate(next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("Authorization") == "" && !s.o.RequireAuth {
			next.ServeHTTP(w, r)
			return nil
		}
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="runops"`)
			return &Error{Status: http.StatusUnauthorized, Message: "Sign in required: send Authorization: Bearer <access token>"}
		}
		if s.serviceRole(token) {
			requestOf(r).service = true
			next.ServeHTTP(w, r)
			return nil
		}
		user, err := s.o.Auth.Verify(r.Context(), token)
		switch {
		case errors.Is(err, jobs.ErrInvalidToken):
			w.Header().Set("WWW-Authenticate", `Bearer realm="runops", error="invalid_token"`)
			return &Error{Status: http.StatusUnauthorized, Message: "Your session is invalid or has expired; please sign in again"}
		case errors.Is(err, jobs.ErrUnavailable):
			return unavailable("Sign-in checking", err)
		case err != nil:
			return &Error{Status: http.StatusInternalServerError, Message: "Could not check your session", Cause: err}
		}
		requestOf(r).user = user
		next.ServeHTTP(w, r)
		return nil
	})
}

// bearer reads "Bearer <token>"; the scheme's case does not matter (RFC 7235).
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

// ServiceRoler recognises the project's service-role tokens that are JWTs
// (auth.Local, with the project's JWT secret or keys).
type ServiceRoler interface {
	ServiceRole(token string) bool
}

// serviceRole tells whether token is the service role's: the project's
// service-role key (Options.ServiceRoleKey) or, with a local verifier, a
// token signed by the project whose role is service_role.
func (s *server) serviceRole(token string) bool {
	if k := s.o.ServiceRoleKey; k != "" && subtle.ConstantTimeCompare([]byte(token), []byte(k)) == 1 {
		return true
	}
	sr, ok := s.o.Auth.(ServiceRoler)
	return ok && sr.ServiceRole(token)
}

// isServiceRole tells whether the request came with the service role's
// token: a server-side integration, which sees every job and may set a
// queued job's priority.
func isServiceRole(r *http.Request) bool {
	return requestOf(r).service
}

// userOf returns the authenticated user's id, if the request was authenticated.
func userOf(r *http.Request) (userID string, ok bool) {
	q := requestOf(r)
	return q.user, q.user != ""
}
