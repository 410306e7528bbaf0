// Package api serves the HTTP API the existing Runops frontend calls
// (docs/frontend-contract.md): signed upload URLs, queueing, job status, the
// SOP and its edits. It declares the small interfaces it needs from the job
// store, object storage and the auth server, in its own and package jobs'
// types; cmd wires the implementations. It must not run jobs (that is the
// worker's) nor build SQL or storage requests itself.
package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/cors"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/privacy"
)

// JobStore is what the API needs of public.jobs.
type JobStore interface {
	// Summary reads what the API answers with of a job, without the rest
	// of its metadata; SOPSummary adds the entity tags recorded for its SOP
	// and its step node's screenshot (node "": none).
	Summary(ctx context.Context, id jobs.ID) (jobs.Summary, error)
	SOPSummary(ctx context.Context, id jobs.ID, node string) (jobs.Summary, error)
	Enqueue(ctx context.Context, id jobs.ID, metadata map[string]any) (jobs.Job, bool, error)
	// RecordUpload remembers who an upload URL was issued to ("": anonymous).
	RecordUpload(ctx context.Context, id jobs.ID, owner string) error
}

// ObjectStore is what the API needs of the videos bucket.
type ObjectStore interface {
	SignUpload(ctx context.Context, path string) (string, error)
	Stat(ctx context.Context, path string) (jobs.ObjectInfo, error)
	Download(ctx context.Context, path string) (io.ReadCloser, int64, error)
	// DownloadVersion is Download of the object as version (the MD5 digest
	// of its bytes) names it; "" is Download.
	DownloadVersion(ctx context.Context, path, version string) (io.ReadCloser, int64, error)
	Upload(ctx context.Context, path string, r io.Reader, size int64, contentType string) error
	Remove(ctx context.Context, paths ...string) error
	// SignPublicDownloads signs many objects in one request: a URL per
	// path, which a person's browser reads the object at for ttl; a path
	// with no object is left out.
	SignPublicDownloads(ctx context.Context, paths []string, ttl time.Duration) (map[string]string, error)
}

// Authenticator tells who an access token belongs to.
type Authenticator interface {
	Verify(ctx context.Context, token string) (userID string, err error)
}

// Options configure the API.
type Options struct {
	Jobs    JobStore
	Objects ObjectStore
	SOPs    SOPLocker
	Auth    Authenticator // checks the tokens requests carry; required when RequireAuth
	Logger  *slog.Logger
	// ServiceRoleKey (SUPABASE_SERVICE_ROLE_KEY): a request that carries it
	// as its bearer token is the service role's (server-side integrations).
	ServiceRoleKey string

	RequireAuth    bool
	RateLimit      int           // requests per RateWindow per client on the POSTs; 0 = off
	RateWindow     time.Duration //
	TrustedProxies []netip.Prefix
	CORSOrigins    []string
	FrontendURL    *url.URL // non-/api paths are proxied here when set

	MaxBodyBytes   int64         // 0: defaultMaxBodyBytes
	RequestTimeout time.Duration // 0: defaultRequestTimeout

	// Privacy finds the sensitive values an edit must not store, as the
	// worker's does; nil when RUNOPS_REDACT is off.
	Privacy *privacy.Detector
}

// The API's own limits: a JSON body (an SOP edit is the largest), and a
// request's time.
const (
	defaultMaxBodyBytes   = 64 << 10
	defaultRequestTimeout = 30 * time.Second
)

// Handler returns the whole HTTP surface but health checks: /api/*, its
// OpenAPI document at /openapi.json and, with a frontend URL, everything
// else proxied to the Next.js server.
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBodyBytes
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = defaultRequestTimeout
	}
	s := &server{o: o, log: o.Logger}

	r := chi.NewRouter()
	r.Use(s.logRequests, s.recoverPanics, s.ownAPIPaths)
	r.Get("/openapi.json", serveOpenAPI)
	r.Head("/openapi.json", serveOpenAPI) // GET without the body (the server drops it)
	r.Route("/api", func(r chi.Router) {
		r.Use(noStore)
		if len(o.CORSOrigins) > 0 {
			r.Use(cors.Handler(cors.Options{
				AllowedOrigins: o.CORSOrigins,
				AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodOptions},
				AllowedHeaders: []string{"Content-Type", "Authorization", "If-Match", "If-None-Match", "X-Request-Id"},
				ExposedHeaders: []string{"ETag", "Retry-After", "X-Request-Id"},
				MaxAge:         600,
			}))
		}
		r.Use(s.limitBody, s.timeout)
		r.NotFound(s.notFound)
		r.MethodNotAllowed(s.handle(func(_ http.ResponseWriter, r *http.Request) error {
			requestOf(r).unmatched = true
			return &Error{Status: http.StatusMethodNotAllowed, Message: "Method not allowed"}
		}))
		limited := r.With(s.rateLimiter())
		if o.Auth != nil {
			r = r.With(s.authenticate)
			limited = limited.With(s.authenticate)
		}
		limited.Post("/get-upload-url", s.handle(s.getUploadURL))
		limited.Post("/queue-job", s.handle(s.queueJob))
		r.Get("/job-status/{jobId}", s.handle(s.jobStatus))
		r.Get("/sop/{jobId}", s.handle(s.getSOP))
		r.Get("/sop/{jobId}/frames/{nodeId}", s.handle(s.getFrame))
		// Edits are rate-limited too, with a budget of their own.
		r.With(s.rateLimiter()).Patch("/sop/{jobId}", s.handle(s.patchSOP))
	})
	if o.FrontendURL != nil {
		r.NotFound(newFrontendProxy(o.FrontendURL, s.fromTrustedProxy, o.Logger).ServeHTTP)
	} else {
		r.NotFound(s.notFound)
	}
	return r
}

// ownAPIPaths answers 404 itself for a path that decodes to /api/… but is
// spelled otherwise (/%61pi/queue-job, /api%2Fqueue-job). The router matches
// the raw spelling, so without this such a request would miss every /api
// route — and with it auth, rate limit and body limit — and be proxied to
// the frontend, which decodes it into the app's own /api routes. Paths that
// clean to /api (//api/…, /./api/…) are redirected to their clean form by
// the health mux in front (httpserver.WithHealth) before they get here.
func (s *server) ownAPIPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A path spelled as it decodes has no RawPath: nothing to clean.
		if r.URL.RawPath != "" {
			if p := path.Clean("/" + r.URL.Path); p == "/api" || strings.HasPrefix(p, "/api/") {
				noStore(http.HandlerFunc(s.notFound)).ServeHTTP(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// notFound is the JSON 404 of every path nobody serves.
func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	requestOf(r).unmatched = true
	s.handle(func(http.ResponseWriter, *http.Request) error {
		return &Error{Status: http.StatusNotFound, Message: "Not found"}
	})(w, r)
}

type server struct {
	o      Options
	log    *slog.Logger
	edits  editLocks
	routes routePatterns
}
