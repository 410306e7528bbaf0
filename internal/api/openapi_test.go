package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
	apitest.ServesDocument(t, e.srv.URL)
}

// HEAD is GET without the body (RFC 9110 §9.3.2: every general-purpose
// server supports both); a client or a monitor checking that the document is
// there must not hear 405, and it is never proxied either.
func TestOpenAPIHead(t *testing.T) {
	t.Parallel()
	front, _ := url.Parse("http://127.0.0.1:1")
	e := setup(t, func(o *api.Options) { o.FrontendURL = front })
	resp, err := http.Head(e.srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.ContentLength != int64(len(api.OpenAPI)) {
		t.Fatalf("HEAD /openapi.json: %d %q, length %d, want 200 application/json, %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, len(api.OpenAPI))
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

// The webhooks section describes Standard Webhooks deliveries: the
// document's own examples pass as deliveries, the payload of before
// (Runops-Signature, the fields at the top) does not.
func TestOpenAPIWebhooks(t *testing.T) {
	t.Parallel()
	doc, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(body []byte, headers ...string) error {
		r, _ := http.NewRequest("POST", "https://receiver.example/hook", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		return apitest.CheckWebhook(r, body)
	}
	standard := []string{"webhook-id", "3d0b1a52-7f7e-4f55-a1a9-5c7c0d2b9e11", "webhook-timestamp", "1796590000",
		"webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,3bJ1hR0dEBqkX3eQy1fG2v6Oj0sKx3pI9c+Q8bZ0vYk="}
	for _, name := range []string{"JobCompleted", "JobFailed"} {
		for _, example := range doc.Components.Schemas[name].Value.Examples {
			body, _ := json.Marshal(example)
			if err := deliver(body, standard...); err != nil {
				t.Errorf("%s example: %v", name, err)
			}
			if err := deliver(body, standard[:4]...); err == nil {
				t.Errorf("%s without webhook-signature passed", name)
			}
		}
	}
	old := []byte(`{"id":"3d0b1a52-7f7e-4f55-a1a9-5c7c0d2b9e11","type":"job.completed","job_id":"6f1c1c3e-2a7b-4c55-9d0e-8a1f3b2c4d5e",` +
		`"status":"completed","error":null,"sop_path":"sops/6f1c1c3e-2a7b-4c55-9d0e-8a1f3b2c4d5e.json","created_at":"2026-12-06T21:02:41Z",` +
		`"completed_at":"2026-12-06T21:04:09Z","timings":{}}`)
	if err := deliver(old, "Runops-Signature", "t=1796590000, v1=00"); err == nil {
		t.Error("a delivery of before passed as a Standard Webhooks delivery")
	}
	if err := deliver(old, standard...); err == nil {
		t.Error("the payload of before passed under Standard Webhooks headers")
	}
}

// The document's SOP examples are the repository's sample and its export,
// which the SOP tests serve and compare: they cannot drift from a real answer.
func TestOpenAPIExamplesAreTheSamples(t *testing.T) {
	t.Parallel()
	doc, err := apitest.Document()
	if err != nil {
		t.Fatal(err)
	}
	ok := doc.Paths.Value("/api/sop/{jobId}").Get.Responses.Status(200).Value.Content
	sample, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	_ = json.Unmarshal(sample, &want)
	example, _ := json.Marshal(ok.Get("application/json").Example.(map[string]any)["data"])
	_ = json.Unmarshal(example, &got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the JSON example's data in openapi.json is not docs/sample-sop.json (copy it there):\n%s", example)
	}
	md, err := os.ReadFile("testdata/sample-sop.md")
	if err != nil {
		t.Fatal(err)
	}
	if ok.Get("text/markdown").Example != string(md) {
		t.Error("the Markdown example in openapi.json is not testdata/sample-sop.md (copy it there)")
	}
}

// The tests that call the API (these, cmd/runops' and pipeline's) are checked through
// http.DefaultClient (apitest.Run). A client of their own would leave the
// check out without a word, so one may exist only on that client's Transport.
func TestEveryClientIsChecked(t *testing.T) {
	t.Parallel()
	own := regexp.MustCompile(`http\.Client\{[^}]*|new\(http\.Client\)|\.Client\(\)|http\.Transport\{`)
	for _, dir := range []string{".", "../../cmd/runops", "../pipeline"} {
		files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range own.FindAllString(string(src), -1) {
				if !strings.Contains(m, "Transport: http.DefaultClient.Transport") {
					t.Errorf("%s: %s — give it Transport: http.DefaultClient.Transport, so that its exchanges are checked", f, m)
				}
			}
		}
	}
}
