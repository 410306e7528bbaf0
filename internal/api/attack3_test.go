package api_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/runops/runops/internal/api"
)

// A body is one JSON value: `{…} trailing` or two objects back to back are
// not the application/json the document describes, and an edit or a queueing
// made of one must be refused, not read up to its first value.
func TestBodyWithTrailingDataIsRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	edit := `{"type":"update","nodeId":"refund","updates":{"label":"Refund it"}}`
	for _, body := range []string{edit + ` trailing`, edit + `{"type":"delete","nodeId":"refund"}`, edit + `]`} {
		e.do("PATCH", "/api/sop/"+id, body).expect(t, 400, map[string]any{"error": "Request body must be a JSON object"})
	}
	queued := e.withSOP("error")
	e.upload(queued, 1<<20, "video/mp4")
	e.do("POST", "/api/queue-job", `{"jobId":"`+queued+`"} {"jobId":"`+id+`"}`).
		expect(t, 400, map[string]any{"error": "Request body must be a JSON object"})
	e.do("GET", "/api/sop/"+id, "").expect(t, 200, nil)
	if n := nodeOf(t, e.do("GET", "/api/sop/"+id, ""), "refund"); n == nil || n["label"] == "Refund it" {
		t.Fatalf("the edit with trailing data was applied: %v", n)
	}
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
