// Package supabasetest is a stand-in for the two Supabase services this
// service talks to over HTTP: Storage (/storage/v1, storage server v1.70 as
// docs/dependencies.md describes it, odd parts included) and the auth server's
// GET /auth/v1/user. It speaks the real wire protocol, so the real client
// libraries (storage-go, supabase-go) run against it unchanged. Tests inject
// failures per operation (FailNext), hold requests (Block) or take the whole
// service down (SetDown). It is for tests only: objects live in a temp dir.
package supabasetest

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Op names one kind of request, for failure injection and counting.
type Op string

// The operations the stand-in serves.
const (
	OpSignUpload     Op = "sign-upload"     // POST /object/upload/sign/{bucket}/{path}
	OpSignedUpload   Op = "signed-upload"   // PUT  /object/upload/sign/{bucket}/{path}?token=
	OpInfo           Op = "info"            // GET  /object/info/{bucket}/{path}
	OpHead           Op = "head"            // HEAD /object/{bucket}/{path}
	OpList           Op = "list"            // POST /object/list/{bucket}
	OpDownload       Op = "download"        // GET  /object/authenticated/{bucket}/{path}
	OpUpload         Op = "upload"          // POST|PUT /object/{bucket}/{path}
	OpDelete         Op = "delete"          // DELETE /object/{bucket}[/{path}]
	OpSignDownload   Op = "sign-download"   // POST /object/sign/{bucket}/{path}
	OpSignDownloads  Op = "sign-downloads"  // POST /object/sign/{bucket} {"expiresIn","paths"}
	OpSignedDownload Op = "signed-download" // GET  /object/sign/{bucket}/{path}?token=
	OpBucket         Op = "bucket"          // GET  /bucket/{id}
	OpAuthUser       Op = "auth-user"       // GET  /auth/v1/user
)

// Bucket is a row of storage.buckets.
type Bucket struct {
	ID               string
	Public           bool
	FileSizeLimit    int64    // bytes; 0 = no limit
	AllowedMimeTypes []string // e.g. video/*; empty = any
}

// Server is a running stand-in. URL is the Supabase base URL (no /storage/v1).
type Server struct {
	URL    string
	Secret []byte
	// UploadURLExpiry is the server-wide lifetime of signed upload URLs.
	UploadURLExpiry time.Duration

	srv *httptest.Server
	dir string

	mu       sync.Mutex
	buckets  map[string]Bucket
	objects  map[string]*object // "bucket/path"
	failures map[Op][]failure
	blocks   map[Op]chan struct{}
	calls    map[Op]int
	down     bool
	seq      int
	onStore  func(key, file string)
	onReq    func(op Op, path string)
	tus      map[string]*tusUpload // resumable uploads in progress, by id
}

// OnRequest calls fn as every request that the stand-in serves arrives, with
// its operation and URL path (benchmarks time what a client asked for when).
func (s *Server) OnRequest(fn func(op Op, path string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onReq = fn
}

// OnStore calls fn after every object a client stores over HTTP (not Put or
// Seed), with its key ("videos/sops/<id>.json") and the file holding its
// bytes, before the client gets its answer: tests inspect what the service
// wrote there.
func (s *Server) OnStore(fn func(key, file string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onStore = fn
}

func (s *Server) inspector() func(key, file string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.onStore
}

type failure struct{ status int }

// New starts a stand-in with a private `videos` bucket configured as the
// migrations configure it (limit, video/* and application/json); it stops
// when the test ends.
func New(t testing.TB, videosLimit int64) *Server {
	t.Helper()
	s := &Server{
		Secret:          []byte("super-secret-jwt-token-with-at-least-32-characters-long"),
		UploadURLExpiry: 2 * time.Hour,
		dir:             t.TempDir(),
		buckets:         map[string]Bucket{},
		objects:         map[string]*object{},
		failures:        map[Op][]failure{},
		blocks:          map[Op]chan struct{}{},
		calls:           map[Op]int{},
	}
	s.buckets["videos"] = Bucket{ID: "videos", FileSizeLimit: videosLimit, AllowedMimeTypes: []string{"video/*", "application/json", "image/jpeg", "text/markdown"}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	t.Cleanup(func() {
		s.mu.Lock()
		for op, ch := range s.blocks {
			close(ch)
			delete(s.blocks, op)
		}
		s.mu.Unlock()
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

// SetBucket adds or replaces a bucket.
func (s *Server) SetBucket(b Bucket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[b.ID] = b
}

// FailNext makes the next n requests of op fail with status (429, 500 and 544
// come back with that HTTP status; every other status, as the real server
// does, as HTTP 400 with the status as a string in the body).
func (s *Server) FailNext(op Op, n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures[op] = append(s.failures[op], failure{status})
	}
}

// Block holds every request of op until the returned release is called (or
// the client gives up). Entered is closed when the first such request arrives.
func (s *Server) Block(op Op) (entered <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.blocks[op] = ch
	in := make(chan struct{})
	s.blocks[op+"#entered"] = in
	var once sync.Once
	return in, func() {
		once.Do(func() {
			s.mu.Lock()
			if s.blocks[op] == ch {
				delete(s.blocks, op)
				close(ch)
			}
			s.mu.Unlock()
		})
	}
}

// SetDown makes the service drop every connection without an answer (down)
// or serve again.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
	if down {
		s.srv.CloseClientConnections()
	}
}

// Calls counts the requests of op received so far (failed ones included).
func (s *Server) Calls(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// serveHTTP applies the test hooks, then routes.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	op, h := s.route(r)
	if op == "" {
		writeError(w, http.StatusNotFound, "not_found", "Route "+r.Method+":"+r.URL.Path+" not found")
		return
	}
	s.mu.Lock()
	s.calls[op]++
	onReq := s.onReq
	block := s.blocks[op]
	if in, ok := s.blocks[op+"#entered"]; ok && block != nil {
		close(in)
		delete(s.blocks, op+"#entered")
	}
	var fail *failure
	if fs := s.failures[op]; len(fs) > 0 {
		fail, s.failures[op] = &fs[0], fs[1:]
	}
	s.mu.Unlock()
	if onReq != nil {
		onReq(op, r.URL.Path)
	}
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if fail != nil {
		writeError(w, fail.status, "injected", "injected failure "+strconv.Itoa(fail.status))
		return
	}
	h(w, r)
}

// route maps a request to its operation and handler.
func (s *Server) route(r *http.Request) (Op, http.HandlerFunc) {
	p := r.URL.Path
	if p == "/auth/v1/user" && r.Method == http.MethodGet {
		return OpAuthUser, s.authUser
	}
	p, ok := strings.CutPrefix(p, "/storage/v1")
	if !ok {
		return "", nil
	}
	if op, h := s.tusRoute(r, p); op != "" {
		return op, h
	}
	m := r.Method
	switch {
	case strings.HasPrefix(p, "/object/upload/sign/"):
		rest := strings.TrimPrefix(p, "/object/upload/sign/")
		switch m {
		case http.MethodPut:
			return OpSignedUpload, func(w http.ResponseWriter, r *http.Request) { s.signedUpload(w, r, rest) }
		case http.MethodPost:
			return OpSignUpload, s.authedAt(rest, s.signUpload)
		}
	case strings.HasPrefix(p, "/object/sign/"):
		rest := strings.TrimPrefix(p, "/object/sign/")
		switch m {
		case http.MethodGet:
			return OpSignedDownload, func(w http.ResponseWriter, r *http.Request) { s.signedDownload(w, r, rest) }
		case http.MethodPost:
			if !strings.Contains(rest, "/") {
				return OpSignDownloads, s.authedAt(rest, s.signDownloads)
			}
			return OpSignDownload, s.authedAt(rest, s.signDownload)
		}
	case strings.HasPrefix(p, "/object/info/") && m == http.MethodGet:
		rest := strings.TrimPrefix(strings.TrimPrefix(p, "/object/info/"), "authenticated/")
		return OpInfo, s.authedAt(rest, s.info)
	case strings.HasPrefix(p, "/object/list/") && m == http.MethodPost:
		bucket := strings.TrimPrefix(p, "/object/list/")
		return OpList, s.authedAt(bucket, s.list)
	case strings.HasPrefix(p, "/object/"):
		rest := strings.TrimPrefix(p, "/object/")
		authenticated := strings.HasPrefix(rest, "authenticated/")
		rest = strings.TrimPrefix(rest, "authenticated/")
		switch {
		case m == http.MethodHead:
			return OpHead, s.authedAt(rest, s.download)
		case m == http.MethodGet:
			return OpDownload, s.authedAt(rest, s.download)
		case (m == http.MethodPost || m == http.MethodPut) && !authenticated:
			return OpUpload, s.authedAt(rest, s.upload)
		case m == http.MethodDelete && !authenticated:
			return OpDelete, s.authedAt(rest, s.remove)
		}
	case strings.HasPrefix(p, "/bucket/") && m == http.MethodGet:
		id := strings.TrimPrefix(p, "/bucket/")
		return OpBucket, s.authedAt(id, s.bucketInfo)
	}
	return "", nil
}

// authedAt is authed for a handler that also takes what the request's path
// names (an object, a bucket), cut from it by the route.
func (s *Server) authedAt(rest string, h func(http.ResponseWriter, *http.Request, string, string)) http.HandlerFunc {
	return s.authed(func(w http.ResponseWriter, r *http.Request, role string) { h(w, r, role, rest) })
}

// authed reads the caller's role from the Bearer JWT, as the storage server
// does: it ignores apikey and acts as the token's role.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || raw == "" {
			writeError(w, http.StatusForbidden, "Unauthorized", "headers must have required property 'authorization'")
			return
		}
		claims, err := s.parse(raw)
		if err != nil {
			writeError(w, http.StatusForbidden, "InvalidJWT", err.Error())
			return
		}
		role, _ := claims["role"].(string)
		h(w, r, role)
	}
}

func (s *Server) parse(raw string) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return s.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return nil, errors.New("jwt expired")
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			return nil, errors.New("invalid signature")
		}
		return nil, errors.New("jwt malformed")
	}
	return claims, nil
}

func (s *Server) sign(claims jwt.MapClaims) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.Secret)
	if err != nil {
		panic(err)
	}
	return tok
}

// ServiceRoleKey is the project's service_role key.
func (s *Server) ServiceRoleKey() string {
	return s.sign(jwt.MapClaims{"iss": "supabase-demo", "role": "service_role", "exp": 1983812996})
}

// ForeignServiceRoleKey is a service_role key of another project (signed with
// another secret), as a wrong or rotated SUPABASE_SERVICE_ROLE_KEY is: the
// server answers "403" InvalidJWT "invalid signature".
func (s *Server) ForeignServiceRoleKey() string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "supabase-demo", "role": "service_role", "exp": 1983812996}).
		SignedString([]byte("another-projects-secret-with-at-least-32-characters"))
	if err != nil {
		panic(err)
	}
	return tok
}

// AnonKey is the project's anon key.
func (s *Server) AnonKey() string {
	return s.sign(jwt.MapClaims{"iss": "supabase-demo", "role": "anon", "exp": 1983812996})
}

// UserToken is an access token of a signed-in user, valid for ttl (negative: expired).
func (s *Server) UserToken(userID string, ttl time.Duration) string {
	return s.sign(jwt.MapClaims{"sub": userID, "role": "authenticated", "aud": "authenticated",
		"email": userID + "@example.com", "exp": time.Now().Add(ttl).Unix()})
}

// writeError answers as the storage server does: HTTP 400 for almost
// everything, the real status as a string in the body.
func writeError(w http.ResponseWriter, status int, code, message string) {
	httpStatus := http.StatusBadRequest
	switch status {
	case 429, 500, 544, 416:
		httpStatus = status
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(httpStatus)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"statusCode": strconv.Itoa(status), "error": code, "message": message, "code": code,
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

// authUser is the auth server's GET /auth/v1/user.
func (s *Server) authUser(w http.ResponseWriter, r *http.Request) {
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims, err := s.parse(raw)
	role, _ := claims["role"].(string)
	if err == nil && role != "authenticated" {
		err = errors.New("not a user token")
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"code": 401, "error_code": "bad_jwt",
			"msg": "invalid JWT: unable to parse or verify signature, " + err.Error()})
		return
	}
	sub, _ := claims["sub"].(string)
	email, _ := claims["email"].(string)
	writeJSON(w, map[string]any{"id": sub, "aud": "authenticated", "role": "authenticated", "email": email,
		"app_metadata": map[string]any{"provider": "email"}, "user_metadata": map[string]any{},
		"created_at": time.Now().UTC().Format(time.RFC3339)})
}

func (s *Server) nextID() string {
	s.seq++
	return "00000000-0000-4000-8000-" + strings.Repeat("0", 12-len(strconv.Itoa(s.seq))) + strconv.Itoa(s.seq)
}

func (s *Server) tempFile() (*os.File, error) { return os.CreateTemp(s.dir, "obj-*") }
