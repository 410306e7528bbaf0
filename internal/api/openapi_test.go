package api_test

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/api/apitest"
)

// The document validates, and GET /openapi.json answers exactly it.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	doc, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || len(doc.Webhooks) != 2 {
		t.Fatalf("openapi %q with webhooks %v", doc.OpenAPI, doc.Webhooks)
	}
	front, _ := url.Parse("http://127.0.0.1:1") // nothing there: the document must not be proxied
	e := setup(t, func(o *api.Options) { o.FrontendURL = front })
	resp, err := http.Get(e.srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(body, api.OpenAPI) {
		t.Fatalf("GET /openapi.json: %d %q, %d bytes, want the embedded document", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	if _, err := apitest.Load(body); err != nil {
		t.Fatal(err)
	}
}

// The router's /api routes and the document's operations are the same set.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	doc, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	front, _ := url.Parse("http://127.0.0.1:1")
	// Every option that adds middleware, so that no route hides behind one.
	h := api.Handler(api.Options{Auth: nil, RateLimit: 1, CORSOrigins: []string{"https://app.example"}, FrontendURL: front})
	var routed []string
	err = chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if route == "/api" || strings.HasPrefix(route, "/api/") {
			routed = append(routed, method+" "+route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(documented)
	slices.Sort(routed)
	for _, r := range routed {
		if !slices.Contains(documented, r) {
			t.Errorf("the router has %s, the document does not", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routed, d) {
			t.Errorf("the document has %s, the router does not", d)
		}
	}
	if t.Failed() {
		t.Logf("router: %q\ndocument: %q", routed, documented)
	}
}
