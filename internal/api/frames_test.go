package api_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

var update = flag.Bool("update", false, "rewrite the golden files from what the code makes")

// withFrames stores a JPEG for every screenshot the sample SOP of job id names.
func (e *env) withFrames(id string) map[string]string {
	e.t.Helper()
	frames := map[string]string{}
	for _, node := range []string{"open", "check", "refund", "reply"} {
		body := "\xff\xd8\xff\xe0 jpeg of " + node
		e.fake.Put("videos/frames/"+id+"/"+node+".jpg", []byte(body), "image/jpeg")
		frames[node] = body
	}
	return frames
}

func TestFramesAreServedUnderTheSOPsRules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	withLocalAuth(t, e, testSecret, "", false)
	alice := []string{"Authorization", "Bearer " + token(t, []byte(testSecret), "alice", "authenticated", time.Hour)}
	bob := []string{"Authorization", "Bearer " + token(t, []byte(testSecret), "bob", "authenticated", time.Hour)}
	id := uuid.NewString()
	e.withSOPOf(id, "completed")
	e.exec(`UPDATE runops_uploads SET owner = 'alice' WHERE job_id = $1`, id)
	frames := e.withFrames(id)

	r := e.do("GET", "/api/sop/"+id+"/frames/refund", "", alice...)
	if r.status != 200 || r.raw != frames["refund"] || r.header.Get("Content-Type") != "image/jpeg" ||
		r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("%d %v %q", r.status, r.header, r.raw)
	}
	for name, c := range map[string]struct {
		path    string
		headers []string
		status  int
	}{
		"someone else's job": {"/api/sop/" + id + "/frames/refund", bob, 404},
		"anonymous":          {"/api/sop/" + id + "/frames/refund", nil, 404},
		"a step not shown":   {"/api/sop/" + id + "/frames/each", alice, 404},
		"no such step":       {"/api/sop/" + id + "/frames/nope", alice, 404},
		// The stored frames exist, but only a node's own screenshot is served.
		"a path, not an id": {"/api/sop/" + id + "/frames/" + url.PathEscape("../raw/"+id), alice, 404},
		"a bad job id":      {"/api/sop/nope/frames/open", alice, 400},
		"no SOP":            {"/api/sop/" + uuid.NewString() + "/frames/open", alice, 404},
	} {
		r := e.do("GET", c.path, "", c.headers...)
		if r.status != c.status || r.body["error"] == nil {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	// A shown step whose frame is gone from storage.
	e.fake.Delete("videos/frames/" + id + "/open.jpg")
	e.do("GET", "/api/sop/"+id+"/frames/open", "", alice...).expect(t, 404, map[string]any{"error": "Screenshot not found"})
}

func TestDeletingAStepDeletesItsScreenshot(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	e.withSOPOf(id, "completed")
	e.withFrames(id)
	r := e.do("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"refund"}`)
	r.expect(t, 200, nil)
	if _, ok := e.fake.Object("videos/frames/" + id + "/refund.jpg"); ok {
		t.Fatal("the deleted step's screenshot is still stored")
	}
	for _, kept := range []string{"open", "check", "reply"} {
		if _, ok := e.fake.Object("videos/frames/" + id + "/" + kept + ".jpg"); !ok {
			t.Errorf("%s's screenshot went too", kept)
		}
	}
	e.do("GET", "/api/sop/"+id+"/frames/refund", "").expect(t, 404, nil)
	// Storage unavailable for two tries of the removal: the third removes it.
	e.fake.FailNext(supabasetest.OpDelete, 2, 503)
	e.do("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"check"}`).expect(t, 200, nil)
	if _, ok := e.fake.Object("videos/frames/" + id + "/check.jpg"); ok {
		t.Fatal("a screenshot whose removal storage refused twice is still stored")
	}
	// An edit of a step's text keeps its screenshot.
	e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Open it"}}`).expect(t, 200, nil)
	if r := e.do("GET", "/api/sop/"+id+"/frames/open", ""); r.status != 200 {
		t.Fatalf("after an update: %d", r.status)
	}
}

// The Markdown of the sample SOP, as the API answers it, is the golden file
// (go test ./internal/api -run Markdown -update rewrites it; read the diff).
func TestMarkdownExport(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.withSOPOf(sampleID, "completed")
	frames := e.withFrames(sampleID)
	r := e.do("GET", "/api/sop/"+sampleID+"?format=md", "")
	if r.status != 200 || r.header.Get("Content-Type") != "text/markdown; charset=utf-8" {
		t.Fatalf("%d %v %s", r.status, r.header, r.raw)
	}
	golden := "testdata/sample-sop.md"
	if *update {
		if err := os.WriteFile(golden, []byte(r.raw), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if r.raw != string(want) {
		t.Fatalf("the Markdown differs from %s:\n%s", golden, r.raw)
	}
	// Accept asks for the same.
	if a := e.do("GET", "/api/sop/"+sampleID, "", "Accept", "text/markdown, */*;q=0.1"); a.raw != r.raw {
		t.Fatalf("with Accept: text/markdown: %d %s", a.status, a.raw)
	}
	// Signed image links work without credentials, from the public URL, for
	// 7 days; all of them signed in one request.
	one, many := e.fake.Calls(supabasetest.OpSignDownload), e.fake.Calls(supabasetest.OpSignDownloads)
	s := e.do("GET", "/api/sop/"+sampleID+"?format=md&images=signed", "")
	if got := [2]int{e.fake.Calls(supabasetest.OpSignDownload) - one, e.fake.Calls(supabasetest.OpSignDownloads) - many}; got != [2]int{0, 1} {
		t.Errorf("signing the links took %d single and %d many-path requests; want one many-path request", got[0], got[1])
	}
	prefix := "](" + publicBase + "/storage/v1/object/sign/videos/frames/" + sampleID + "/"
	if s.status != 200 || strings.Count(s.raw, "![Screenshot of step ") != 4 || strings.Contains(s.raw, "/api/sop/") ||
		strings.Count(s.raw, prefix) != 4 {
		t.Fatalf("signed links:\n%s", s.raw)
	}
	_, rest, _ := strings.Cut(s.raw, prefix+"refund.jpg?token=")
	tok, _, _ := strings.Cut(rest, ")")
	var claims struct{ Exp, Iat int64 }
	parts := strings.Split(tok, ".")
	if len(parts) == 3 {
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		_ = json.Unmarshal(payload, &claims)
	}
	if claims.Exp-claims.Iat != 7*24*3600 {
		t.Errorf("signed for %d s; want 7 days", claims.Exp-claims.Iat)
	}
	// The link reads the image with no credentials (the stand-in is the public URL here).
	resp, err := http.Get(e.fake.URL + "/storage/v1/object/sign/videos/frames/" + sampleID + "/refund.jpg?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != frames["refund"] {
		t.Errorf("signed link: %d %q", resp.StatusCode, body)
	}
	// A screenshot storage no longer has is left out; the others stay.
	e.fake.Delete("videos/frames/" + sampleID + "/check.jpg")
	if s := e.do("GET", "/api/sop/"+sampleID+"?format=md&images=signed", ""); s.status != 200 ||
		strings.Count(s.raw, prefix) != 3 || strings.Contains(s.raw, prefix+"check.jpg") {
		t.Errorf("with one screenshot gone: %d\n%s", s.status, s.raw)
	}
	for _, bad := range []string{"?format=xml", "?format=md&images=public", "?images=signed"} {
		r := e.do("GET", "/api/sop/"+sampleID+bad, "")
		if r.status != http.StatusBadRequest || r.body["error"] == nil {
			t.Errorf("%s: %d %s", bad, r.status, r.raw)
		}
	}
}

// A client that stops reading an answer larger than the socket's buffers
// (an 8 MiB screenshot) does not hold its handler, and the answer in
// memory, past a few request timeouts: it held them for good.
func TestAClientThatStopsReadingDoesNotHoldItsHandler(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *api.Options) { o.RequestTimeout = 200 * time.Millisecond })
	id := uuid.NewString()
	e.withSOPOf(id, "completed")
	e.fake.Put("videos/frames/"+id+"/refund.jpg", append([]byte("\xff\xd8\xff\xe0"), bytes.Repeat([]byte("j"), 8<<20)...), "image/jpeg")
	var inFlight atomic.Int32
	h := e.srv.Config.Handler
	e.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		h.ServeHTTP(w, r)
	})
	c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /api/sop/"+id+"/frames/refund HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the handler to begin", 10*time.Second, func() bool { return inFlight.Load() == 1 })
	wait.For(t, "the handler to give up on the client", 30*time.Second, func() bool { return inFlight.Load() == 0 })
}
