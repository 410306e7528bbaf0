package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/api/apitest"
	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// Every exchange of these tests with /api is held to the OpenAPI document
// (apitest.Run).
func TestMain(m *testing.M) { os.Exit(apitest.Run(m, pgtest.Run)) }

const publicBase = "https://project.example.test"

type env struct {
	t      *testing.T
	srv    *httptest.Server
	fake   *supabasetest.Server
	store  *postgres.JobStore
	db     *pgtest.Proxy
	direct *pgxpool.Pool
}

func setup(t *testing.T, mutate ...func(*api.Options)) *env {
	t.Helper()
	direct, dsn := pgtest.Pool(t)
	proxy, viaProxy := pgtest.NewProxy(t, dsn)
	pool := pgtest.Open(t, viaProxy, 10)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	objects, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ServiceRoleKey(),
		Bucket: jobs.Bucket, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	store := postgres.NewJobStore(pool)
	opts := api.Options{Jobs: store, Objects: objects, SOPs: postgres.NewSOPLocker(pool), Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mutate {
		m(&opts)
	}
	srv := httptest.NewServer(api.Handler(opts))
	t.Cleanup(srv.Close)
	return &env{t: t, srv: srv, fake: fake, store: store, db: proxy, direct: direct}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (e *env) do(method, path, body string, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	if strings.HasPrefix(path, "/api/sop/") && r.status == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var served struct{ Data json.RawMessage }
		_ = json.Unmarshal(raw, &served)
		soptest.Check(e.t, method+" "+path, served.Data)
	}
	return r
}

func (r response) expect(t *testing.T, status int, fields map[string]any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	for k, v := range fields {
		if r.body[k] != v {
			t.Fatalf("%s = %#v, want %#v (body %s)", k, r.body[k], v, r.raw)
		}
	}
}

func (e *env) upload(id string, size int64, contentType string) {
	e.fake.Seed("videos/raw/"+id+".mp4", size, contentType)
}

func queue(id string) string { return `{"jobId":"` + id + `"}` }

func TestGetUploadURL(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.do("POST", "/api/get-upload-url", "this body is ignored")
	r.expect(t, 200, nil)
	id, _ := r.body["jobId"].(string)
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 4 || u.String() != id {
		t.Fatalf("jobId %q is not a canonical v4 UUID", id)
	}
	signed, _ := r.body["url"].(string)
	if !strings.HasPrefix(signed, publicBase+"/storage/v1/object/upload/sign/videos/raw/"+id+".mp4?token=") {
		t.Fatalf("url %q", signed)
	}
	// What the browser does next: PUT the file with its type, no auth header.
	req, _ := http.NewRequest("PUT", e.fake.URL+strings.TrimPrefix(signed, publicBase), strings.NewReader("video bytes"))
	req.Header.Set("Content-Type", "video/quicktime")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("browser upload: %v %v", resp, err)
	}
	resp.Body.Close()
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, map[string]any{"jobId": id, "status": "queued"})

	for _, m := range []string{"GET", "PUT", "DELETE", "PATCH"} {
		e.do(m, "/api/get-upload-url", "").expect(t, 405, map[string]any{"error": "Method not allowed"})
	}
}

func TestGetUploadURLStorageOutage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.fake.SetDown(true)
	r := e.do("POST", "/api/get-upload-url", "")
	r.expect(t, 503, nil)
	if msg, _ := r.body["error"].(string); !strings.Contains(msg, "try again") || r.header.Get("Retry-After") == "" {
		t.Fatalf("outage answer: %s %v", r.raw, r.header)
	}
	e.fake.SetDown(false)
	e.do("POST", "/api/get-upload-url", "").expect(t, 200, nil)
	e.fake.FailNext(supabasetest.OpSignUpload, 1, 500)
	e.do("POST", "/api/get-upload-url", "").expect(t, 503, nil)
	e.do("POST", "/api/get-upload-url", "").expect(t, 200, nil)
}

// A storage server that refuses our service key is our configuration error:
// a 500 with a sentence (never a 503 a client would wait out), while an
// outage stays a 503.
func TestRefusedServiceKeyIsNotAnOutage(t *testing.T) {
	t.Parallel()
	var fake *supabasetest.Server
	e := setup(t)
	fake = e.fake
	bad, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ForeignServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: bad, SOPs: postgres.NewSOPLocker(e.direct), Logger: slog.New(slog.DiscardHandler)})
	id := uuid.NewString()
	e.upload(id, 1000, "video/mp4")
	for _, r := range []response{e.do("POST", "/api/get-upload-url", ""), e.do("POST", "/api/queue-job", queue(id)),
		e.do("GET", "/api/job-status/"+uuid.NewString(), ""), e.do("GET", "/api/sop/"+id, "")} {
		r.expect(t, 500, nil)
		if r.body["error"] == nil || r.header.Get("Retry-After") != "" {
			t.Fatalf("%s %v", r.raw, r.header)
		}
	}
}

func TestQueueJobBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, body := range []string{"", "{}", `{"jobId":""}`, `{"jobId":null}`, `{"other":"x"}`} {
		e.do("POST", "/api/queue-job", body).expect(t, 400, map[string]any{"error": "Missing jobId parameter"})
	}
	for _, body := range []string{`{"jobId":"nope"}`, `{"jobId":42}`, `{"jobId":"../../raw/x"}`, `{"jobId":["a"]}`} {
		e.do("POST", "/api/queue-job", body).expect(t, 400, map[string]any{"error": "jobId must be a UUID"})
	}
	for _, body := range []string{`{"jobId":`, `not json`, `[1,2]`} {
		r := e.do("POST", "/api/queue-job", body)
		r.expect(t, 400, nil)
		if r.body["error"] == nil {
			t.Fatalf("no error field: %s", r.raw)
		}
	}
	big := `{"jobId":"` + strings.Repeat("a", 70<<10) + `"}`
	e.do("POST", "/api/queue-job", big).expect(t, 413, map[string]any{"error": "Request body is too large"})
	e.do("GET", "/api/queue-job", "").expect(t, 405, map[string]any{"error": "Method not allowed"})
}

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

func TestQueueJobChecksTheUpload(t *testing.T) {
	t.Parallel()
	e := setup(t)
	missing := uuid.NewString()
	e.do("POST", "/api/queue-job", queue(missing)).expect(t, 404, map[string]any{"error": "Video file not found. Please upload again."})

	cases := []struct {
		name        string
		size        int64
		contentType string
		status      int
		says        string
	}{
		{"at the limit", jobs.MaxUploadBytes, "video/mp4", 200, ""},
		{"one byte over", jobs.MaxUploadBytes + 1, "video/mp4", 413, "larger than 750 MB, the limit"},
		{"not a video", 1000, "application/pdf", 415, "not a video"},
		{"no type", 1000, "", 415, "not a video"},
		{"empty", 0, "video/mp4", 400, "empty"},
		{"quicktime", 1000, "video/quicktime", 200, ""},
	}
	for _, tc := range cases {
		id := uuid.NewString()
		e.upload(id, tc.size, tc.contentType)
		r := e.do("POST", "/api/queue-job", queue(id))
		r.expect(t, tc.status, nil)
		msg, _ := r.body["error"].(string)
		if !strings.Contains(msg, tc.says) {
			t.Errorf("%s: %s", tc.name, r.raw)
		}
		_, err := e.store.Get(context.Background(), jobs.ID(id))
		if (tc.status == 200) != (err == nil) {
			t.Errorf("%s: row exists = %v", tc.name, err == nil)
		}
		if _, ok := e.fake.Object("videos/raw/" + id + ".mp4"); !ok {
			t.Errorf("%s: the upload was removed", tc.name)
		}
	}
}

func TestQueueJobRecordsAndIsIdempotent(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	e.upload(id, 12345, "video/mp4")
	// Upper case is accepted; everything uses the canonical form.
	e.do("POST", "/api/queue-job", queue(strings.ToUpper(id))).expect(t, 200, map[string]any{
		"jobId": id, "status": "queued", "message": "Video processing job has been queued"})
	j, err := e.store.Get(context.Background(), jobs.ID(id))
	if err != nil {
		t.Fatal(err)
	}
	up, _ := j.Metadata["upload"].(map[string]any)
	if j.Status != jobs.StatusQueued || up["size_bytes"] != float64(12345) || up["content_type"] != "video/mp4" {
		t.Fatalf("row: %+v", j)
	}
	// A repeat answers the job's current status and writes nothing.
	e.fake.SetDown(true) // storage is not even needed for a repeat
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, map[string]any{"jobId": id, "status": "queued"})
	e.fake.SetDown(false)
	e.setStatus(id, "completed")
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, map[string]any{"jobId": id, "status": "completed"})
}

func (e *env) setStatus(id, status string) {
	e.exec(`UPDATE jobs SET status=$2 WHERE job_id=$1`, id, status)
}

// exec runs SQL as a person in the dashboard would, bypassing the outage proxy.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.direct.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatal(err)
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestConcurrentQueueJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	e.upload(id, 1000, "video/mp4")
	const n = 20
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	created := make(chan bool, n)
	for range n {
		wg.Go(func() {
			r := e.do("POST", "/api/queue-job", queue(id))
			statuses <- r.status
			created <- r.body["message"] == "Video processing job has been queued"
		})
	}
	wg.Wait()
	close(statuses)
	close(created)
	for s := range statuses {
		if s != 200 {
			t.Fatalf("status %d", s)
		}
	}
	firsts := 0
	for c := range created {
		if c {
			firsts++
		}
	}
	if firsts != 1 {
		t.Fatalf("%d callers were told they queued the job; want 1", firsts)
	}
}

func TestOutagesAnswer503AndRecover(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	e.upload(id, 1000, "video/mp4")
	e.db.SetDown(true)
	r := e.do("POST", "/api/queue-job", queue(id))
	r.expect(t, 503, nil)
	if !strings.Contains(r.raw, "database") {
		t.Fatalf("message: %s", r.raw)
	}
	e.do("GET", "/api/job-status/"+id, "").expect(t, 503, nil)
	e.db.SetDown(false)
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/job-status/"+id, "").expect(t, 200, map[string]any{"status": "queued"})

	other := uuid.NewString()
	e.upload(other, 1000, "video/mp4")
	e.fake.SetDown(true)
	r = e.do("POST", "/api/queue-job", queue(other))
	r.expect(t, 503, nil)
	if !strings.Contains(r.raw, "storage") {
		t.Fatalf("message: %s", r.raw)
	}
	e.do("GET", "/api/job-status/"+other, "").expect(t, 503, nil)
	e.fake.SetDown(false)
	e.do("GET", "/api/job-status/"+other, "").expect(t, 200, map[string]any{"status": "uploaded"})
	e.do("POST", "/api/queue-job", queue(other)).expect(t, 200, map[string]any{"status": "queued"})
}

func TestJobStatus(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.do("GET", "/api/job-status/not-a-uuid", "").expect(t, 400, map[string]any{"error": "jobId must be a UUID"})
	unknown := uuid.NewString()
	e.do("GET", "/api/job-status/"+unknown, "").expect(t, 404, map[string]any{"error": "Job not found"})
	e.upload(unknown, 10, "video/mp4")
	e.do("GET", "/api/job-status/"+unknown, "").expect(t, 200, map[string]any{
		"jobId": unknown, "status": "uploaded", "message": "File uploaded but processing not started"})

	e.do("POST", "/api/queue-job", queue(unknown)).expect(t, 200, nil)
	r := e.do("GET", "/api/job-status/"+strings.ToUpper(unknown), "")
	r.expect(t, 200, map[string]any{"jobId": unknown, "status": "queued", "completedAt": nil, "error": nil, "stage": nil, "progress": nil})
	for _, k := range []string{"createdAt", "updatedAt"} {
		if _, err := time.Parse(time.RFC3339Nano, r.body[k].(string)); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("headers %v", r.header)
	}

	e.exec(`UPDATE jobs SET status='processing', metadata = metadata || '{"stage":"transcoding","progress":0.25}' WHERE job_id=$1`, unknown)
	e.do("GET", "/api/job-status/"+unknown, "").expect(t, 200, map[string]any{"status": "processing", "stage": "transcoding", "progress": 0.25})
	e.exec(`UPDATE jobs SET status='error', error='The video is 24 minutes long; the limit is 20 minutes.' WHERE job_id=$1`, unknown)
	e.do("GET", "/api/job-status/"+unknown, "").expect(t, 200, map[string]any{"status": "error", "error": "The video is 24 minutes long; the limit is 20 minutes."})
	e.exec(`UPDATE jobs SET status='completed', error=NULL, completed_at=now() WHERE job_id=$1`, unknown)
	r = e.do("GET", "/api/job-status/"+unknown, "")
	r.expect(t, 200, map[string]any{"status": "completed", "error": nil})
	if _, ok := r.body["completedAt"].(string); !ok {
		t.Fatalf("completedAt: %s", r.raw)
	}
	e.do("POST", "/api/job-status/"+unknown, "").expect(t, 405, map[string]any{"error": "Method not allowed"})
}

// job-status reads what it answers and nothing else of metadata: what a
// person wrote there that job-status does not show cannot break it, and
// what it shows is read as before (a non-number progress is null).
func TestJobStatusReadsOnlyWhatItAnswers(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for meta, want := range map[string]map[string]any{
		`{"stage": "extracting", "progress": 0.5, "attempts": "anything", "timings": [1e400]}`: {"stage": "extracting", "progress": 0.5},
		`{"stage": 7, "progress": "half"}`:  {"stage": nil, "progress": nil},
		`{"stage": null, "progress": null}`: {"stage": nil, "progress": nil},
		`{"progress": true}`:                {"stage": nil, "progress": nil},
		`{"progress": 1e400}`:               {"stage": nil, "progress": nil},
		`"not an object"`:                   {"stage": nil, "progress": nil},
		`{"owner": 42, "stage": "frames"}`:  {"stage": "frames"},
		`{"progress": 5}`:                   {"progress": 1.0},
		`{"progress": -0.5}`:                {"progress": 0.0},
	} {
		id := uuid.NewString()
		e.exec(`INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'processing', $2::jsonb)`, id, meta)
		want["status"], want["jobId"], want["error"], want["completedAt"] = "processing", id, nil, nil
		e.do("GET", "/api/job-status/"+id, "").expect(t, 200, want)
	}
}

// A status a person wrote by hand that is none of the app's four, and that
// no worker runs, is answered as error, with the row's error or a sentence
// that says what to do: the app's page stops polling and shows it, instead
// of spinning for good on a status it does not know (the contract's
// JobState holds every answer: apitest checks it).
func TestHandWrittenStatusesAreErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, c := range []struct{ status, errText, want string }{
		{"cancelled", "", `This job's status was set by hand to 'cancelled', which no worker runs. Set it to queued to process the video again.`},
		{"QUEUED", "", `This job's status was set by hand to 'QUEUED', which no worker runs. Set it to queued to process the video again.`},
		{"", "", `This job's status was set by hand to '', which no worker runs. Set it to queued to process the video again.`},
		{"paused", "Paused by the support team until Monday.", "Paused by the support team until Monday."},
	} {
		id := uuid.NewString()
		e.exec(`INSERT INTO jobs (job_id, status, error) VALUES ($1, $2, nullif($3, ''))`, id, c.status, c.errText)
		e.do("GET", "/api/job-status/"+id, "").expect(t, 200, map[string]any{"status": "error", "error": c.want})
		e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, map[string]any{"status": "error", "message": "Video processing job was already queued"})
	}
}

func TestUnknownAPIPaths(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, p := range []string{"/api/nope", "/api", "/api/job-status", "/api/job-status/", "/elsewhere"} {
		r := e.do("GET", p, "")
		r.expect(t, 404, nil)
		if r.body["error"] == nil {
			t.Fatalf("%s: %s", p, r.raw)
		}
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *api.Options) {
		o.RateLimit, o.RateWindow = 3, time.Hour
		o.TrustedProxies = mustPrefixes("127.0.0.1/32")
	})
	from := func(ip string) response { return e.do("POST", "/api/get-upload-url", "", "X-Forwarded-For", ip) }
	// A proxy may write the client's port: still the same client.
	for _, ip := range []string{"203.0.113.7", "203.0.113.7:5123", "192.0.2.50, 203.0.113.7:80"} {
		from(ip).expect(t, 200, nil)
	}
	r := from("203.0.113.7")
	r.expect(t, 429, nil)
	if r.header.Get("Retry-After") == "" || r.body["error"] == nil {
		t.Fatalf("429 answer: %v %s", r.header, r.raw)
	}
	// queue-job shares the client's budget; another client has its own.
	e.do("POST", "/api/queue-job", "{}", "X-Forwarded-For", "203.0.113.7").expect(t, 429, nil)
	from("198.51.100.1").expect(t, 200, nil)
	// An IPv6 client owns its /64: addresses in it share one budget.
	for _, ip := range []string{"2001:db8:1:2::5", "[2001:db8:1:2::6]:443", "2001:db8:1:2:aaaa::7"} {
		from(ip).expect(t, 200, nil)
	}
	from("2001:db8:1:2:ffff::1").expect(t, 429, nil)
	from("2001:db8:1:3::1").expect(t, 200, nil)
	// The status poll is never limited.
	for range 5 {
		e.do("GET", "/api/job-status/"+uuid.NewString(), "", "X-Forwarded-For", "203.0.113.7").expect(t, 404, nil)
	}
}

func TestRateLimitIgnoresForwardedForFromUntrustedPeers(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *api.Options) { o.RateLimit, o.RateWindow = 2, time.Hour })
	for i := range 2 {
		e.do("POST", "/api/get-upload-url", "", "X-Forwarded-For", "10.0.0."+string(rune('1'+i))).expect(t, 200, nil)
	}
	e.do("POST", "/api/get-upload-url", "", "X-Forwarded-For", "10.0.0.9").expect(t, 429, nil)
}

func TestAuthRequired(t *testing.T) {
	t.Parallel()
	var fake *supabasetest.Server
	e := setup(t, func(o *api.Options) { o.RequireAuth = true })
	fake = e.fake
	v, err := auth.New(fake.URL, fake.ServiceRoleKey(), 5*time.Second, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The handler was built before the verifier existed: rebuild with it.
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: mustStorage(t, fake), Auth: v,
		RequireAuth: true, Logger: slog.New(slog.DiscardHandler)})

	id := uuid.NewString()
	e.upload(id, 1000, "video/mp4")
	for _, h := range [][]string{nil, {"Authorization", "Bearer "}, {"Authorization", "Basic abc"},
		{"Authorization", "Bearer " + fake.UserToken("u1", -time.Minute)}, {"Authorization", "Bearer " + fake.AnonKey()}} {
		for _, call := range []func() response{
			func() response { return e.do("POST", "/api/get-upload-url", "", h...) },
			func() response { return e.do("POST", "/api/queue-job", queue(id), h...) },
			func() response { return e.do("GET", "/api/job-status/"+id, "", h...) },
		} {
			r := call()
			r.expect(t, 401, nil)
			if r.body["error"] == nil {
				t.Fatal(r.raw)
			}
		}
	}
	alice := []string{"Authorization", "Bearer " + fake.UserToken("a11ce000-0000-4000-8000-000000000001", time.Hour)}
	// The scheme's case does not matter.
	for _, scheme := range []string{"bearer ", "BEARER ", "Bearer  "} {
		e.do("GET", "/api/job-status/"+uuid.NewString(), "", "Authorization", scheme+fake.UserToken("a11ce000-0000-4000-8000-000000000001", time.Hour)).expect(t, 404, nil)
	}
	bob := []string{"Authorization", "Bearer " + fake.UserToken("b0b00000-0000-4000-8000-000000000002", time.Hour)}
	r := e.do("POST", "/api/get-upload-url", "", alice...)
	r.expect(t, 200, nil)
	id, _ = r.body["jobId"].(string)
	e.upload(id, 1000, "video/mp4")
	e.do("POST", "/api/queue-job", queue(id), alice...).expect(t, 200, map[string]any{"status": "queued"})
	j, _ := e.store.Get(context.Background(), jobs.ID(id))
	if j.Owner() != "a11ce000-0000-4000-8000-000000000001" {
		t.Fatalf("owner %q", j.Owner())
	}
	e.do("GET", "/api/job-status/"+id, "", alice...).expect(t, 200, map[string]any{"status": "queued"})
	e.do("GET", "/api/job-status/"+id, "", bob...).expect(t, 404, map[string]any{"error": "Job not found"})
	e.do("POST", "/api/queue-job", queue(id), bob...).expect(t, 404, nil)

	// The auth server down: 503, not 401.
	fake.SetDown(true)
	carol := []string{"Authorization", "Bearer " + fake.UserToken("c0c00000-0000-4000-8000-000000000003", time.Hour)}
	e.do("GET", "/api/job-status/"+id, "", carol...).expect(t, 503, nil)
}

func TestAuthOffByDefault(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.do("POST", "/api/get-upload-url", "").expect(t, 200, nil)
	id := uuid.NewString()
	e.upload(id, 10, "video/mp4")
	e.do("POST", "/api/queue-job", queue(id)).expect(t, 200, nil)
	j, _ := e.store.Get(context.Background(), jobs.ID(id))
	if j.Owner() != "" {
		t.Fatalf("owner %q without auth", j.Owner())
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *api.Options) { o.CORSOrigins = []string{"https://app.example.com"} })
	r := e.do("OPTIONS", "/api/queue-job", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "content-type")
	if r.status >= 300 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
		t.Fatalf("allowed origin: %d %v", r.status, r.header)
	}
	// The revalidation and the edit's condition the contract offers, from
	// another origin too.
	for _, h := range []string{"if-none-match", "if-match, content-type", "authorization, if-none-match"} {
		r := e.do("OPTIONS", "/api/sop/"+uuid.NewString(), "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "GET",
			"Access-Control-Request-Headers", h)
		if r.status >= 300 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Errorf("a preflight asking for %s: %d %v", h, r.status, r.header)
		}
	}
	r = e.do("POST", "/api/get-upload-url", "", "Origin", "https://evil.example.com")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin allowed: %v", r.header)
	}
	plain := setup(t)
	r = plain.do("POST", "/api/get-upload-url", "", "Origin", "https://app.example.com")
	if r.status != 200 || r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("no CORS configured: %v", r.header)
	}
}

type panickyStore struct{ api.JobStore }

func (panickyStore) Summary(context.Context, jobs.ID) (jobs.Summary, error) { panic("boom") }

func TestPanicBecomesJSON500(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: panickyStore{e.store}, Objects: mustStorage(t, e.fake),
		Logger: slog.New(slog.DiscardHandler)})
	e.do("GET", "/api/job-status/"+uuid.NewString(), "").expect(t, 500, map[string]any{"error": "Internal server error"})
	e.do("POST", "/api/get-upload-url", "").expect(t, 200, nil) // the server lives on
}

func mustStorage(t *testing.T, fake *supabasetest.Server) *storage.Client {
	c, err := storage.New(storage.Config{URL: fake.URL, PublicURL: publicBase, ServiceKey: fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRouteLabels: requests are counted by route pattern (docs/operations.md,
// "Metrics"), the same on every request of a route, however often its
// pattern was seen before; "unmatched" for a path no route serves. Not
// parallel: the counters are the process's.
func TestRouteLabels(t *testing.T) {
	e := setup(t)
	for _, c := range []struct{ method, path, route, code string }{
		{"GET", "/api/job-status/not-a-job", "/api/job-status/{jobId}", "400"},
		{"GET", "/api/sop/not-a-job", "/api/sop/{jobId}", "400"},
		{"GET", "/api/sop/not-a-job/frames/n1", "/api/sop/{jobId}/frames/{nodeId}", "400"},
		{"GET", "/elsewhere", "unmatched", "404"},
		// Paths and methods under /api that no route serves (they were
		// counted under the mount's pattern, /api/* or /api).
		{"GET", "/api/nope", "unmatched", "404"},
		{"GET", "/api", "unmatched", "404"},
		{"DELETE", "/api/job-status/not-a-job", "unmatched", "405"},
	} {
		counter := metrics.HTTPRequests.WithLabelValues(c.route, c.code)
		before := testutil.ToFloat64(counter)
		for range 3 {
			e.do(c.method, c.path, "")
		}
		// Counted once each answer is written: wait for it, then hold it.
		wait.For(t, c.method+" "+c.path+" counted under "+c.route, 30*time.Second, func() bool { return testutil.ToFloat64(counter)-before >= 3 })
		if got := testutil.ToFloat64(counter) - before; got != 3 {
			t.Errorf("%s %s three times: runops_http_requests_total{route=%q,code=%q} rose by %v", c.method, c.path, c.route, c.code, got)
		}
	}
}

// Every answer carries its request's id (docs/frontend-contract.md): the
// one the request brought in X-Request-Id, else one of its own, never
// another request's.
func TestRequestIDs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	seen := map[string]bool{}
	for range 20 {
		id := e.do("GET", "/api/job-status/not-a-job", "").header.Get("X-Request-Id")
		if id == "" || seen[id] {
			t.Fatalf("request id %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
	for _, brought := range []string{"from-the-proxy-42", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "Root=1-67891233-abcdef012345678912345678"} {
		if got := e.do("GET", "/api/nope", "", "X-Request-Id", brought).header.Get("X-Request-Id"); got != brought {
			t.Errorf("a request that brought the id %q got %q back", brought, got)
		}
	}
	// An id no proxy makes is not taken: one of 32 KiB would be written
	// into every line of its request, and one of quotes and spaces forge
	// fields in a text log.
	for _, brought := range []string{strings.Repeat("x", 32<<10), strings.Repeat("x", 129), `abc" level=ERROR msg="forged`, "a\tb", "ünïcode"} {
		got := e.do("GET", "/api/nope", "", "X-Request-Id", brought).header.Get("X-Request-Id")
		if got == brought || got == "" || seen[got] {
			t.Errorf("a request that brought %.40q got %.40q back", brought, got)
		}
		seen[got] = true
	}
}
