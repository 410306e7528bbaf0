package api_test

import (
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/supabasetest"
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

// As many edits of different SOPs at once as the API's pool has connections:
// each holds one for the SOP lock's transaction and must still be able to
// record the stored SOP's tag, which takes another. None may wait for a
// connection that only another waiting edit can give back (every one of
// them would end at the request's deadline, and the whole API with them).
// Each edit is held as it reads its SOP, inside the lock, until all have
// either reached that point or been kept from the lock by the locker (the
// Go stacks say which): with every connection a lock's, the edits could
// only wait for one another.
func TestConcurrentEditsDoNotExhaustThePool(t *testing.T) {
	t.Parallel()
	const n = 10 // setup's pool
	e := setup(t, func(o *api.Options) { o.RequestTimeout = 20 * time.Second })
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.withSOP("completed")
	}
	var entered atomic.Int32
	e.fake.OnRequest(func(op supabasetest.Op, _ string) {
		if op == supabasetest.OpDownload {
			entered.Add(1)
		}
	})
	_, release := e.fake.Block(supabasetest.OpDownload)
	got := make([]response, n)
	var done sync.WaitGroup
	for i, id := range ids {
		done.Add(1)
		go func() {
			defer done.Done()
			got[i] = e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"refund","updates":{"label":"Refund it"}}`)
		}()
	}
	for int(entered.Load())+waitingForLock() < n {
		runtime.Gosched()
	}
	release()
	done.Wait()
	for i, r := range got {
		if r.status != 200 {
			t.Errorf("edit %d: %d %s", i, r.status, r.raw)
		}
	}
}

// waitingForLock counts the goroutines the SOP locker keeps waiting for
// their turn at the lock (before they take a connection).
func waitingForLock() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "postgres.(*SOPLocker).waitTurn") {
			n++
		}
	}
	return n
}
