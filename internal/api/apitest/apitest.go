// Package apitest holds the API to its OpenAPI document (api.OpenAPI) in
// tests: it loads and validates the document, and its Transport checks every
// request a test sends to an /api path, and every answer, against it. Run
// installs that Transport in http.DefaultClient (hence http.Get, http.Post)
// for a whole test binary, on the client's side of the wire, so that no test
// leaves the check out by the way it builds or swaps the server's handler,
// and processes under test are checked like handlers in the test's own.
// A test with an http.Client of its own gives it http.DefaultClient.Transport.
// It must not be imported by anything but tests.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/runops/runops/internal/api"
)

// Load reads and validates an OpenAPI document: the loader resolves every
// $ref, and Validate checks the document against OpenAPI 3.1 and each
// example against its schema.
func Load(data []byte) (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("the document is OpenAPI %s, not 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("validate the OpenAPI document: %w", err)
	}
	return doc, nil
}

// ServesDocument checks that the process at base answers GET /openapi.json
// with the embedded document (which Run validates, once per test binary).
func ServesDocument(t testing.TB, base string) {
	t.Helper()
	resp, err := http.Get(base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(b, api.OpenAPI) {
		t.Fatalf("GET /openapi.json: %d %q, %d bytes; want the embedded document", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}
	// The embedded document itself is validated once per test binary (Run).
}

var (
	loadOnce sync.Once
	document *openapi3.T
	router   routers.Router
	loadErr  error
)

// Document is api.OpenAPI, loaded and validated once per test binary.
func Document() (*openapi3.T, error) {
	loadOnce.Do(func() {
		if document, loadErr = Load(api.OpenAPI); loadErr != nil {
			return
		}
		// The document has no servers: its paths are the full paths, on
		// whatever origin serves them. The router needs one to match
		// against, so it gets the origin's root, on a copy.
		withRoot := *document
		withRoot.Servers = openapi3.Servers{{URL: "/"}}
		router, loadErr = gorillamux.NewRouter(&withRoot)
	})
	return document, loadErr
}

func init() {
	// The API's media types that kin-openapi does not decode by itself.
	openapi3filter.RegisterBodyDecoder("text/markdown", openapi3filter.PlainBodyDecoder)
	openapi3filter.RegisterBodyDecoder("image/jpeg", openapi3filter.FileBodyDecoder)
}

// Transport checks the exchanges with /api paths against the document (see
// check) and passes everything else through untouched. A request or answer
// the document does not describe is an error of RoundTrip, recorded for Run
// to report even when the test ignores it.
type Transport struct {
	Next http.RoundTripper
}

func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/api" && !strings.HasPrefix(req.URL.Path, "/api/") {
		return t.Next.RoundTrip(req)
	}
	var sent []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		if sent, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(sent))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(sent)), nil }
	}
	resp, err := t.Next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(got))
	checked.Add(1)
	if err := check(req, sent, resp, got); err != nil {
		err = fmt.Errorf("openapi: %s %s answered %d, which internal/api/openapi.json does not allow: %w\nbody: %s",
			req.Method, req.URL.RequestURI(), resp.StatusCode, err, excerpt(got))
		record(err)
		return nil, err
	}
	return resp, nil
}

// check holds one exchange against the document:
//   - The answer must be one the document lists for the operation: its
//     status, its required headers, its media type and its schema.
//   - The request is checked too, but a request the document refuses is not
//     an error in itself: tests send malformed requests on purpose (a job id
//     that is not a UUID, a body that is not JSON, a priority out of range)
//     to see them refused. What is an error is the service accepting it:
//     a request the document refuses must get a 4xx, or the document and
//     the service disagree on what is valid. So no test needs to say that
//     it is malformed on purpose.
//   - A path or a method the document does not have must be answered 404 or
//     405 with the error body, as every unknown /api route is.
//   - A path that is not clean (/%61pi/../api/…) may be redirected to its
//     clean form, before any route.
//   - A CORS preflight is the browser's handshake, answered by the CORS
//     layer before any route: it is not an operation of the API.
func check(req *http.Request, sent []byte, resp *http.Response, got []byte) error {
	if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
		return nil
	}
	doc, err := Document()
	if err != nil {
		return err
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		if loc := path.Clean(req.URL.Path); resp.StatusCode/100 == 3 && resp.Header.Get("Location") == loc && loc != req.URL.Path {
			return nil // the server's mux sends a path that is not clean to its clean form
		}
		want := http.StatusNotFound
		if errors.Is(err, routers.ErrMethodNotAllowed) {
			want = http.StatusMethodNotAllowed
		}
		if resp.StatusCode != want {
			return fmt.Errorf("no such operation in the document (%v): want %d", err, want)
		}
		if req.Method == http.MethodHead {
			return nil
		}
		return checkError(doc, resp, got)
	}
	// kin-openapi leaves 3xx answers (a 304 to a revalidation) unchecked:
	// their status must be listed all the same.
	if route.Operation.Responses.Status(resp.StatusCode) == nil && route.Operation.Responses.Default() == nil {
		return fmt.Errorf("answered %d, which the document does not list for %s %s", resp.StatusCode, route.Method, route.Path)
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus: true, // a status the operation does not list is an error
		MultiError:            true,
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if sent != nil {
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(bytes.NewReader(sent))
		in.Request = r
	}
	reqErr := openapi3filter.ValidateRequest(req.Context(), in)
	// kin-openapi reads a JSON body up to its first value: `{…} trailing`
	// passes it. Such a body is not JSON, and no more valid than the rest.
	if mt := req.Header.Get("Content-Type"); reqErr == nil && route.Operation.RequestBody != nil && len(bytes.TrimSpace(sent)) > 0 &&
		strings.HasPrefix(mt, "application/json") && !json.Valid(sent) {
		reqErr = errors.New("the request body is not one JSON value")
	}
	if reqErr != nil && (resp.StatusCode < 400 || resp.StatusCode > 499) {
		return fmt.Errorf("the document refuses the request, yet it was not answered with a 4xx: %w", reqErr)
	}
	in.Request = req
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	out.SetBodyBytes(got)
	return openapi3filter.ValidateResponse(req.Context(), out)
}

// checkError holds the answer of an unknown route to the error body.
func checkError(doc *openapi3.T, resp *http.Response, got []byte) error {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	var v any
	if err := json.Unmarshal(got, &v); err != nil {
		return fmt.Errorf("the body is not JSON: %w", err)
	}
	return doc.Components.Schemas["Error"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020())
}

func excerpt(b []byte) string {
	const max = 600
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

var (
	checked    atomic.Int64
	mu         sync.Mutex
	violations []error
)

func record(err error) {
	mu.Lock()
	defer mu.Unlock()
	violations = append(violations, err)
}

// Run is the body of a TestMain: it checks the document, installs a
// Transport in http.DefaultClient, runs the tests with run (such
// as pgtest.Run) and fails the binary if any exchange broke the document,
// whether or not the test that made it noticed.
func Run(m *testing.M, run func(*testing.M) int) int {
	if _, err := Document(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Not in http.DefaultTransport itself: code under test clones it as an
	// *http.Transport, and its own calls (to storage, to Gemini) are not ours
	// to check.
	http.DefaultClient.Transport = &Transport{Next: http.DefaultTransport}
	code := run(m)
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "apitest: %d exchanges with /api checked against the OpenAPI document\n", checked.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		fmt.Fprintf(os.Stderr, "apitest: %d exchanges broke the OpenAPI document:\n", len(violations))
		for _, err := range violations {
			fmt.Fprintf(os.Stderr, "- %v\n", err)
		}
		code = 1
	}
	return code
}

// CheckWebhook holds a completion webhook as a receiver gets it (its
// headers and body) to the document's webhooks section: the event named by
// the body's type, its Standard Webhooks headers and its payload.
func CheckWebhook(r *http.Request, body []byte) error {
	doc, err := Document()
	if err != nil {
		return err
	}
	var ev struct{ Type string }
	if err := json.Unmarshal(body, &ev); err != nil {
		return fmt.Errorf("webhook body: %w", err)
	}
	item := doc.Webhooks[ev.Type]
	if item == nil || item.Post == nil {
		return fmt.Errorf("webhook of type %q: the document has no such event", ev.Type)
	}
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	route := &routers.Route{Spec: doc, Path: ev.Type, PathItem: item, Method: http.MethodPost, Operation: item.Post}
	return openapi3filter.ValidateRequest(r.Context(), &openapi3filter.RequestValidationInput{
		Request: req, Route: route, Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	})
}
