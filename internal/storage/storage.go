// Package storage is the Supabase Storage adapter: one small client for the
// bucket that holds every object of a job. storage-go is used where it is
// correct (signing upload URLs, deleting) and walled off from its known bugs
// (docs/dependencies.md): a fresh storage-go client per call, so its shared, mutable
// header map is never shared between goroutines or calls; calls bounded by a
// context. Everything storage-go gets wrong (streaming downloads, object info,
// sized uploads, statuses) goes through net/http here. The package knows
// nothing of jobs' life cycle, HTTP handlers or SQL.
package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	storage_go "github.com/supabase-community/storage-go"

	"github.com/runops/runops/internal/jobs"
)

// Error is an error answer of the storage server. Status is the real status,
// which the server sends as a string in the body of an HTTP 400; it is 0 when
// only the message is known (errors that came through storage-go).
type Error struct {
	Op      string
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("storage %s: %s", e.Op, e.Message)
	}
	return fmt.Sprintf("storage %s: %d %s: %s", e.Op, e.Status, e.Code, e.Message)
}

// Is lets callers branch with errors.Is on jobs.ErrObjectMissing (the
// object, or its bucket, does not exist), jobs.ErrRefusedKey
// and jobs.ErrUnavailable.
func (e *Error) Is(target error) bool {
	switch target {
	case jobs.ErrObjectMissing:
		return e.missing()
	case jobs.ErrRefusedKey:
		return e.refusedKey()
	case jobs.ErrUnavailable:
		// Status 0: storage-go kept only the message; a server that refuses a
		// well-formed request from the service role is treated as an outage,
		// unless what it says is that our key is wrong.
		return !e.refusedKey() && (e.Status == 0 || e.Status == http.StatusTooManyRequests || e.Status >= 500 ||
			e.Status == http.StatusRequestTimeout || e.Status == http.StatusLocked || // a slow request; an object another upload holds
			e.Status == http.StatusNotFound && !e.missing())
	}
	return false
}

// missing: the storage server says the object or its bucket does not exist
// ("404" NoSuchKey, NoSuchBucket; "not_found" from servers older than the
// codes). A 404 without one comes from something in front of it — a gateway
// with no route while it reloads (Kong's "no Route matched with those
// values") — and is an outage: taken for a missing object, it failed a job
// for good with "no upload".
func (e *Error) missing() bool {
	return e.Status == http.StatusNotFound && (e.Code == "NoSuchKey" || e.Code == "NoSuchBucket" || e.Code == "not_found")
}

// refusedKey: the server refused the service key itself ("403" InvalidJWT,
// "invalid signature", "jwt malformed", "jwt expired"). A gateway's 401/403
// without that code is left as it is.
func (e *Error) refusedKey() bool {
	if e.Status != 0 && e.Status != http.StatusForbidden && e.Status != http.StatusUnauthorized {
		return false
	}
	m := strings.ToLower(e.Message)
	return e.Code == "InvalidJWT" || strings.Contains(m, "invalid signature") || strings.Contains(m, "jwt malformed") ||
		strings.Contains(m, "jwt expired") || strings.Contains(m, "invalid jwt")
}

// Config says where Storage is and as whom to call it.
type Config struct {
	URL        string // how the server reaches Supabase, e.g. http://127.0.0.1:54321
	PublicURL  string // how browsers reach it (signed upload URLs); defaults to URL
	ServiceKey string // service_role key: never logged
	Bucket     string
	// Timeout bounds every call but streaming bodies; default 15s.
	Timeout time.Duration
}

// Client talks to one bucket. It is safe for concurrent use.
type Client struct {
	base, publicBase string // .../storage/v1
	key, bucket      string
	timeout          time.Duration
	http             *http.Client
}

// New checks cfg and returns a client; it does not call the server.
func New(cfg Config) (*Client, error) {
	if cfg.PublicURL == "" {
		cfg.PublicURL = cfg.URL
	}
	for name, u := range map[string]string{"storage URL": cfg.URL, "public storage URL": cfg.PublicURL} {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("%s %q is not an absolute http(s) URL", name, u)
		}
	}
	if cfg.ServiceKey == "" || cfg.Bucket == "" {
		return nil, errors.New("storage: service key and bucket are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 60 * time.Second
	// Every job makes several requests, many jobs run at once, and all go to
	// one host: the default of 2 idle connections per host would close most
	// of them after each request and pay a new TCP (and TLS) handshake for
	// the next.
	tr.MaxIdleConnsPerHost = idleConnsPerHost
	return &Client{
		base:       strings.TrimRight(cfg.URL, "/") + "/storage/v1",
		publicBase: strings.TrimRight(cfg.PublicURL, "/") + "/storage/v1",
		key:        cfg.ServiceKey, bucket: cfg.Bucket, timeout: cfg.Timeout,
		http: &http.Client{Transport: tr},
	}, nil
}

// idleConnsPerHost is how many connections to Storage stay open between
// requests (more than a worker's concurrency, with the API's own calls).
const idleConnsPerHost = 64

// lib returns a new storage-go client bound to ctx: its option headers live
// in one map per client that later calls (and other goroutines) would
// otherwise see, and its requests carry no context of their own.
func (c *Client) lib(ctx context.Context) (*storage_go.Client, error) {
	l := storage_go.NewClient(c.base, c.key, map[string]string{"apikey": c.key})
	if err := bindContext(l, ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// bindContext makes every request of l carry ctx, so that a call given up on
// is cancelled on the wire too: storage-go builds its requests without a
// context and sends them through an http.Client with no timeout, so an
// abandoned call would otherwise keep its goroutine and connection until the
// server answers, if ever. storage-go exposes neither, so the client's
// unexported http.Client field is reached by reflection; the layout is
// checked here and by the tests, and a storage-go that changes it fails
// loudly instead of leaking (docs/dependencies.md).
func bindContext(l *storage_go.Client, ctx context.Context) error {
	f := reflect.ValueOf(l).Elem().FieldByName("session")
	if !f.IsValid() || f.Type() != reflect.TypeFor[http.Client]() {
		return errors.New("storage: storage-go's client no longer holds an http.Client named session; update bindContext")
	}
	hc := (*http.Client)(unsafe.Pointer(f.UnsafeAddr()))
	hc.Transport = ctxTransport{ctx: ctx, next: hc.Transport}
	return nil
}

// ctxTransport sends each request with ctx (storage-go's own transport,
// which adds its headers, still does the sending).
type ctxTransport struct {
	ctx  context.Context
	next http.RoundTripper
}

func (t ctxTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return t.next.RoundTrip(r.WithContext(t.ctx))
}

// viaLib runs a storage-go call bounded by ctx and the client's timeout;
// the call's requests are cancelled with it.
func viaLib[T any](ctx context.Context, c *Client, op string, call func(*storage_go.Client) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var zero T
	l, err := c.lib(ctx)
	if err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(l)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		if r.err == nil {
			return r.v, nil
		}
		var se *storage_go.StorageError
		if errors.As(r.err, &se) {
			// storage-go's Status is always 0 (the server's statusCode is a
			// string); only the message survives.
			return r.v, &Error{Op: op, Message: se.Message}
		}
		return r.v, fmt.Errorf("storage %s: %w: %w", op, jobs.ErrUnavailable, r.err)
	case <-ctx.Done():
		return zero, fmt.Errorf("storage %s: %w: %w", op, jobs.ErrUnavailable, ctx.Err())
	}
}

// SignUpload returns an absolute URL, reachable from the browser, to which a
// client PUTs the object at path (no upsert: a second upload is refused).
func (c *Client) SignUpload(ctx context.Context, path string) (string, error) {
	res, err := viaLib(ctx, c, "sign upload", func(l *storage_go.Client) (storage_go.SignedUploadUrlResponse, error) {
		return l.CreateSignedUploadUrl(c.bucket, path)
	})
	if err != nil {
		return "", err
	}
	// storage-go returns the server's url as it is: relative to the storage base.
	if !strings.HasPrefix(res.Url, "/object/upload/sign/") {
		return "", &Error{Op: "sign upload", Message: "unexpected signed url " + strconv.Quote(res.Url)}
	}
	return c.publicBase + res.Url, nil
}

// Remove deletes the objects at paths; missing ones are ignored. Storage
// takes at most removeAtOnce a request: more go in several.
func (c *Client) Remove(ctx context.Context, paths ...string) error {
	for batch := range slices.Chunk(paths, removeAtOnce) {
		if _, err := viaLib(ctx, c, "remove", func(l *storage_go.Client) ([]storage_go.FileUploadResponse, error) {
			return l.RemoveFile(c.bucket, batch)
		}); err != nil {
			return err
		}
	}
	return nil
}

// removeAtOnce is the most objects Supabase Storage deletes in one request.
const removeAtOnce = 1000

// List returns the names of the objects directly inside folder ("frames/<id>"),
// relative to it; sub-folders are left out.
func (c *Client) List(ctx context.Context, folder string) ([]string, error) {
	const page = 1000
	var names []string
	for offset := 0; ; offset += page {
		files, err := viaLib(ctx, c, "list", func(l *storage_go.Client) ([]storage_go.FileObject, error) {
			return l.ListFiles(c.bucket, folder, storage_go.FileSearchOptions{Limit: page, Offset: offset})
		})
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if f.Id != "" { // a folder has no id
				names = append(names, f.Name)
			}
		}
		if len(files) < page {
			return names, nil
		}
	}
}

// SignDownload returns a URL, reachable from this server, that reads the
// object for ttl without credentials (Range requests work).
func (c *Client) SignDownload(ctx context.Context, path string, ttl time.Duration) (string, error) {
	res, err := viaLib(ctx, c, "sign download", func(l *storage_go.Client) (storage_go.SignedUrlResponse, error) {
		return l.CreateSignedUrl(c.bucket, path, int(max(ttl.Seconds(), 1)))
	})
	// storage-go prefixes this URL itself, with the server-side base.
	return res.SignedURL, err
}

// SignPublicDownloads signs many objects in one request (storage's
// POST /object/sign/{bucket} with the paths), for links a person opens (in
// a wiki page, a browser): each URL is on the public base and reads its
// object for ttl without credentials. A path storage does not sign (no
// such object) is left out of the answer.
func (c *Client) SignPublicDownloads(ctx context.Context, paths []string, ttl time.Duration) (map[string]string, error) {
	signed := map[string]string{}
	if len(paths) == 0 {
		return signed, nil // the server wants at least one path
	}
	req := struct {
		ExpiresIn int      `json:"expiresIn"`
		Paths     []string `json:"paths"`
	}{int(max(ttl.Seconds(), 1)), paths}
	var res []struct {
		Path      string  `json:"path"`
		SignedURL *string `json:"signedURL"`
		Error     *string `json:"error"`
	}
	if err := c.doJSON(ctx, "sign downloads", http.MethodPost, "/object/sign/"+c.bucket, req, &res); err != nil {
		return nil, err
	}
	for _, r := range res {
		if r.SignedURL == nil || r.Error != nil {
			continue
		}
		// Relative to the storage base, as the single-path answer is.
		if !strings.HasPrefix(*r.SignedURL, "/object/sign/") {
			return nil, &Error{Op: "sign downloads", Message: "unexpected signed url " + strconv.Quote(*r.SignedURL)}
		}
		signed[r.Path] = c.publicBase + *r.SignedURL
	}
	return signed, nil
}

// Stat returns the object's size and content type, or jobs.ErrObjectMissing.
func (c *Client) Stat(ctx context.Context, path string) (jobs.ObjectInfo, error) {
	var info jobs.ObjectInfo
	err := c.doJSON(ctx, "info", http.MethodGet, "/object/info/"+c.bucket+"/"+path, nil, &info)
	return info, err
}

// Ping checks that Storage answers and the bucket exists.
func (c *Client) Ping(ctx context.Context) error {
	var b struct {
		ID string `json:"id"`
	}
	return c.doJSON(ctx, "bucket", http.MethodGet, "/bucket/"+c.bucket, nil, &b)
}

// Download streams the object; the caller closes the body. Size is the
// Content-Length the server announced (-1 if none).
func (c *Client) Download(ctx context.Context, path string) (body io.ReadCloser, size int64, err error) {
	return c.DownloadVersion(ctx, path, "")
}

// DownloadVersion is Download of the object as its version (an ETag's
// digest) names it: the version goes in the query string, so that a CDN
// that keeps an earlier copy under the bare URL (hosted Supabase's basic
// CDN, docs/dependencies.md) asks Storage. Storage itself ignores it.
func (c *Client) DownloadVersion(ctx context.Context, path, version string) (body io.ReadCloser, size int64, err error) {
	p := "/object/authenticated/" + c.bucket + "/" + path
	if version != "" {
		p += "?version=" + url.QueryEscape(version)
	}
	resp, err := c.do(ctx, "download", http.MethodGet, p, nil, -1, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// Upload stores exactly size bytes from r at path (upsert), streamed with a
// Content-Length so that the bucket's size limit applies.
func (c *Client) Upload(ctx context.Context, path string, r io.Reader, size int64, contentType string) error {
	// no-cache: what we store changes (an SOP edited, a screenshot covered
	// again on a rerun), and a CDN copy kept for an hour would serve the
	// earlier bytes (docs/dependencies.md, "Supabase Storage").
	h := http.Header{"Content-Type": {contentType}, "X-Upsert": {"true"}, "Cache-Control": {"no-cache"}}
	resp, err := c.do(ctx, "upload", http.MethodPost, "/object/"+c.bucket+"/"+path, io.NopCloser(r), size, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return nil
}

// doJSON sends one request (with body as JSON, unless nil) and decodes its
// answer into into, within the client's timeout.
func (c *Client) doJSON(ctx context.Context, op, method, path string, body, into any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var in io.ReadCloser
	size, h := int64(-1), http.Header(nil)
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("storage %s: %w", op, err)
		}
		in, size, h = io.NopCloser(bytes.NewReader(b)), int64(len(b)), http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := c.do(ctx, op, method, path, in, size, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(into); err != nil {
		return fmt.Errorf("storage %s: %w: decode answer: %w", op, jobs.ErrUnavailable, err)
	}
	return nil
}

// do sends one request with the service role's credentials and turns an
// error answer into *Error, reading the real status from the body.
func (c *Client) do(ctx context.Context, op, method, path string, body io.ReadCloser, size int64, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w", op, err)
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("apikey", c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("storage %s: %w: %w", op, jobs.ErrUnavailable, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return nil, parseError(op, resp.StatusCode, raw)
}

func parseError(op string, httpStatus int, raw []byte) *Error {
	var body struct {
		StatusCode json.RawMessage `json:"statusCode"`
		Error      string          `json:"error"`
		Code       string          `json:"code"`
		Message    string          `json:"message"`
	}
	e := &Error{Op: op, Status: httpStatus, Message: http.StatusText(httpStatus)}
	if json.Unmarshal(raw, &body) != nil {
		return e
	}
	// "404" (a string, as the server sends it) or 404.
	if n, err := strconv.Atoi(strings.Trim(string(body.StatusCode), `"`)); err == nil && n > 0 {
		e.Status = n
	}
	e.Code = body.Code
	if e.Code == "" {
		e.Code = body.Error
	}
	if body.Message != "" {
		e.Message = body.Message
	}
	return e
}
