package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/sop"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// sampleID is the job id docs/sample-sop.json is written for.
const sampleID = "00000000-0000-4000-8000-000000000000"

// withSOP stores the sample SOP for a completed job and returns its id.
func (e *env) withSOP(status string) string {
	e.t.Helper()
	return e.withSOPOf(uuid.NewString(), status)
}

// withSOPOf stores the sample SOP, made for job id (its screenshots in that
// job's folder), for a job with status.
func (e *env) withSOPOf(id, status string) string {
	e.t.Helper()
	b, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		e.t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte(sampleID), []byte(id))
	d, err := sop.Parse(b)
	if err != nil {
		e.t.Fatal(err)
	}
	sop.Repair(d, id)
	out, _ := sop.Marshal(d)
	e.fake.Put("videos/sops/"+id+".json", out, "application/json")
	e.exec(`INSERT INTO jobs (job_id, status) VALUES ($1, $2)`, id, status)
	return id
}

func nodeOf(t *testing.T, r response, id string) map[string]any {
	t.Helper()
	data, _ := r.body["data"].(map[string]any)
	public, _ := data["public"].(map[string]any)
	nodes, _ := public["nodes"].([]any)
	for _, n := range nodes {
		if m := n.(map[string]any); m["id"] == id {
			return m
		}
	}
	return nil
}

func TestGetSOP(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	r := e.do("GET", "/api/sop/"+id, "")
	r.expect(t, 200, map[string]any{"job_id": id})
	data, _ := r.body["data"].(map[string]any)
	meta, _ := data["meta"].(map[string]any)
	if meta["title"] != "Refund a duplicate card charge" || r.body["created_at"] == nil || r.body["updated_at"] == nil || r.header.Get("ETag") == "" {
		t.Fatalf("%s %v", r.raw, r.header)
	}
	e.do("GET", "/api/sop/"+uuid.NewString(), "").expect(t, 404, map[string]any{"error": "SOP not found"})
	e.do("GET", "/api/sop/nope", "").expect(t, 400, map[string]any{"error": "jobId must be a UUID"})
}

func TestPatchSOP(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	path := "/api/sop/" + id

	r := e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"Open the support ticket","context":"00:00:06"}}`)
	r.expect(t, 200, map[string]any{"job_id": id})
	if n := nodeOf(t, r, "open"); n["label"] != "Open the support ticket" || n["context"] != "00:00:06" || n["intent"] != "See what the customer reports" {
		t.Fatalf("updated node %v", n)
	}
	if n := nodeOf(t, e.do("GET", path, ""), "open"); n["label"] != "Open the support ticket" {
		t.Fatal("update not stored")
	}

	// Delete a loop child: its edges and steps go with it.
	r = e.do("PATCH", path, `{"type":"delete","nodeId":"refund"}`)
	r.expect(t, 200, nil)
	if nodeOf(t, r, "refund") != nil || strings.Contains(r.raw, `"source":"refund"`) || strings.Contains(r.raw, `"target":"refund"`) ||
		strings.Contains(r.raw, `"node_id":"refund"`) {
		t.Fatalf("refund not fully deleted: %s", r.raw)
	}
	if each := nodeOf(t, r, "each"); fmt.Sprint(each["children"]) != "[note]" {
		t.Fatalf("loop children %v", each["children"])
	}

	// Deleting a decision's branch keeps the branch: its yes edge goes on
	// where the deleted loop went (TestADeleteJoinsTheFlowAroundIt).
	r = e.do("PATCH", path, `{"type":"delete","nodeId":"each"}`)
	r.expect(t, 200, nil)
	if !strings.Contains(r.raw, `{"source":"check","target":"reply","condition":"yes","decision_path":"Y"}`) {
		t.Fatalf("the decision lost its yes branch: %s", r.raw)
	}

	e.do("PATCH", path, `{"type":"delete","nodeId":"ghost"}`).expect(t, 404, map[string]any{"error": "Node not found"})
	e.do("PATCH", "/api/sop/"+uuid.NewString(), `{"type":"delete","nodeId":"open"}`).expect(t, 404, map[string]any{"error": "SOP not found"})
	for _, bad := range []string{`{"type":"rename","nodeId":"open"}`, `{"type":"update","nodeId":"open"}`, `{"type":"update","updates":{"label":"x"}}`,
		`{"type":"update","nodeId":"open","updates":{"id":"x"}}`, `{"type":"update","nodeId":"open","updates":{"label":7}}`,
		`{"type":"update","nodeId":"open","updates":{"label":null}}`, `{"type":"delete","nodeId":"open","updates":{}}`, `{"type":`, `[]`} {
		r := e.do("PATCH", path, bad)
		r.expect(t, 400, nil)
		if r.body["error"] == nil {
			t.Fatalf("%s: %s", bad, r.raw)
		}
	}
	// A body that is no object says so, not that a field of no name has the
	// wrong type.
	for _, bad := range []string{`[1]`, `5`, `"x"`, `true`} {
		e.do("PATCH", path, bad).expect(t, 400, map[string]any{"error": "Request body must be a JSON object"})
	}
	e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":7}}`).expect(t, 400,
		map[string]any{"error": "Malformed SOP edit: updates has the wrong type"})
	// Keys as the contract spells them: encoding/json matched them in any
	// case, and this deleted a step. A delete with "updates", null too, is
	// not one (the OpenAPI document: a delete has no updates).
	e.do("PATCH", path, `{"TYPE":"delete","NODEID":"reply"}`).expect(t, 400,
		map[string]any{"error": `Malformed SOP edit: "NODEID" is not a field; the field is "nodeId"`})
	e.do("PATCH", path, `{"type":"delete","nodeId":"reply","updates":null}`).expect(t, 400,
		map[string]any{"error": `a delete takes no "updates"`})
	if nodeOf(t, e.do("GET", path, ""), "reply") == nil {
		t.Fatal("a refused edit deleted the step")
	}
	e.do("PATCH", path, `{"type":"update","nodeId":"reply","updates":{"label":"Tell them"},"jobId":"x"}`).expect(t, 200, nil)
}

func TestPatchSOPWhileGenerating(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, status := range []string{"queued", "processing"} {
		id := e.withSOP(status)
		e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"x"}}`).expect(t, 409, nil)
	}
}

func TestPatchSOPIfMatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	path := "/api/sop/" + id
	tag := e.do("GET", path, "").header.Get("ETag")
	upd := `{"type":"update","nodeId":"open","updates":{"label":"A"}}`
	e.do("PATCH", path, upd, "If-Match", `"stale"`).expect(t, 412, nil)
	r := e.do("PATCH", path, upd, "If-Match", tag)
	r.expect(t, 200, nil)
	e.do("PATCH", path, upd, "If-Match", tag).expect(t, 412, nil) // the tag moved on
	// If-Match compares strongly (RFC 9110, 13.1.1): a weak tag never matches.
	e.do("PATCH", path, upd, "If-Match", "W/"+r.header.Get("ETag")).expect(t, 412, nil)
	e.do("PATCH", path, upd, "If-Match", `"other", `+r.header.Get("ETag")).expect(t, 200, nil)
	// If-None-Match compares weakly: a weak tag of the SOP is a 304.
	if got := e.do("GET", path, "", "If-None-Match", "W/"+e.do("GET", path, "").header.Get("ETag")).status; got != 304 {
		t.Errorf("If-None-Match with the weak tag: %d", got)
	}
}

// Concurrent edits of different nodes all survive: the read-modify-write is
// serialised per job.
func TestConcurrentPatchesAllSurvive(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	nodes := []string{"open", "check", "each", "refund", "note", "reply", "explain", "done"}
	var wg sync.WaitGroup
	for i := range 40 { // five rounds over the nodes, all at once
		n := nodes[i%len(nodes)]
		wg.Go(func() {
			r := e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"`+n+`","updates":{"intent":"edited `+n+`"}}`)
			if r.status != 200 {
				t.Errorf("%s: %d %s", n, r.status, r.raw)
			}
		})
	}
	wg.Wait()
	r := e.do("GET", "/api/sop/"+id, "")
	for _, n := range nodes {
		if got := nodeOf(t, r, n)["intent"]; got != "edited "+n {
			t.Errorf("%s: intent %v (an edit was lost)", n, got)
		}
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

// A document stored by an earlier version, with triggers the viewer cannot
// print (config {} or null, types it does not know), is served repaired; a
// PATCH stores the repaired document; a document that cannot be repaired is
// refused with a sentence, never served.
func TestLegacySOPIsServedRepaired(t *testing.T) {
	t.Parallel()
	e := setup(t)
	legacy, err := os.ReadFile("../sop/testdata/legacy-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	e.fake.Put("videos/sops/"+id+".json", legacy, "application/json")
	e.exec(`INSERT INTO jobs (job_id, status) VALUES ($1, 'completed')`, id)

	triggers := func(r response) string {
		data, _ := r.body["data"].(map[string]any)
		public, _ := data["public"].(map[string]any)
		var out []string
		for _, tr := range public["triggers"].([]any) {
			m := tr.(map[string]any)
			out = append(out, fmt.Sprintf("%v=%q", m["type"], m["config"]))
		}
		return strings.Join(out, " ")
	}
	const want = `manual="" cron="" event="" manual=""`
	r := e.do("GET", "/api/sop/"+id, "")
	r.expect(t, 200, map[string]any{"job_id": id})
	if got := triggers(r); got != want {
		t.Fatalf("triggers %s, want %s", got, want)
	}
	if nodeOf(t, r, "open")["label"] != "Open the ticket" {
		t.Fatal("the rest of the document did not survive the repair")
	}
	r = e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Open it"}}`, "If-Match", r.header.Get("ETag"))
	r.expect(t, 200, nil)
	if got := triggers(r); got != want {
		t.Fatalf("after PATCH: triggers %s", got)
	}
	obj, _ := e.fake.Object("videos/sops/" + id + ".json")
	stored, _ := os.ReadFile(obj.File)
	soptest.Check(t, "the SOP stored by PATCH", stored)

	damaged := uuid.NewString()
	e.fake.Put("videos/sops/"+damaged+".json", []byte(`{"meta":{"title":"T"},"public":{"nodes":[{"id":"a","type":"task","label":{"text":"A"}}]}}`), "application/json")
	for _, method := range []string{"GET", "PATCH"} {
		r := e.do(method, "/api/sop/"+damaged, `{"type":"delete","nodeId":"a"}`)
		r.expect(t, 409, nil)
		if msg, _ := r.body["error"].(string); !strings.Contains(msg, "public.nodes[0].label") {
			t.Fatalf("%s: %s", method, r.raw)
		}
	}
}

// An edit that cannot have the SOP lock in time (another process's edit, or
// the worker's write, holds it) is told to try again; it never waits for as
// long as the holder takes, holding a connection.
func TestPatchSOPWhileLockedElsewhere(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	tx, err := e.direct.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(context.Background(), `SELECT pg_advisory_xact_lock(hashtextextended('runops-sop:' || $1, 0))`, id); err != nil {
		t.Fatal(err)
	}
	r := e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"x"}}`)
	r.expect(t, 503, nil)
	if msg, _ := r.body["error"].(string); !strings.Contains(msg, "try again") || r.header.Get("Retry-After") == "" {
		t.Fatalf("%s %v", r.raw, r.header)
	}
	_ = tx.Rollback(context.Background())
	e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"x"}}`).expect(t, 200, nil)
}

// PATCH never stores what could not be read back (413, the SOP unchanged),
// and each edited field has a bound (400): no series of edits can make an
// SOP unreadable, and so uneditable.
func TestPatchSOPIsBounded(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	path := "/api/sop/" + id
	long := strings.Repeat("x", 60000) // under the 64 KiB body limit
	for _, field := range []string{"label", "intent", "context"} {
		r := e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"`+field+`":"`+long+`"}}`)
		if r.status != 400 || !strings.Contains(fmt.Sprint(r.body["error"]), "at most") {
			t.Fatalf("a %d-character %s: %d %s", len(long), field, r.status, r.raw)
		}
	}
	// A document just under the read limit, as another tool may have left
	// it: an edit that would take it over is refused.
	var doc map[string]any
	if err := json.Unmarshal(stored(t, e, id), &doc); err != nil {
		t.Fatal(err)
	}
	// As the API writes it: 200 bytes under the limit.
	asWritten := func() []byte {
		b, _ := json.Marshal(doc)
		d, err := sop.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := sop.Marshal(d)
		return out
	}
	doc["meta"].(map[string]any)["purpose"] = ""
	doc["meta"].(map[string]any)["purpose"] = strings.Repeat("p", 10<<20-len(asWritten())-200)
	big := asWritten()
	e.fake.Put("videos/sops/"+id+".json", big, "application/json")
	e.do("GET", path, "").expect(t, 200, nil)
	r := e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"`+strings.Repeat("L", 400)+`"}}`)
	r.expect(t, 413, nil)
	if got := stored(t, e, id); !bytes.Equal(got, big) {
		t.Fatal("the refused edit changed the stored SOP")
	}
	e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"Open"}}`).expect(t, 200, nil)
}

// stored is the SOP document of id as the storage stand-in holds it.
func stored(t *testing.T, e *env, id string) []byte {
	t.Helper()
	o, ok := e.fake.Object("videos/sops/" + id + ".json")
	if !ok {
		t.Fatal("no stored SOP")
	}
	b, err := os.ReadFile(o.File)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// What a person types goes through the worker's detectors: stored as a
// described variable, never as typed.
func TestEditsAreRedacted(t *testing.T) {
	t.Parallel()
	det, err := privacy.NewDetector([]string{`CUST-\d{6}`})
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, func(o *api.Options) { o.Privacy = det })
	id := uuid.NewString()
	e.withSOPOf(id, "completed")
	r := e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Mail jane@acme.io about CUST-004211","context":"pay with 4242 4242 4242 4242"}}`)
	r.expect(t, 200, nil)
	obj, _ := e.fake.Object("videos/sops/" + id + ".json")
	stored, _ := os.ReadFile(obj.File)
	for _, v := range []string{"jane@acme.io", "acme.io", "CUST-004211", "4242"} {
		if bytes.Contains(stored, []byte(v)) || strings.Contains(r.raw, v) {
			t.Errorf("%q was stored or answered", v)
		}
	}
	d, err := sop.Load(stored, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range d.Public.Nodes {
		if n.ID == "open" && (n.Label != "Mail {{EMAIL_1}} about {{VALUE_1}}" || n.Context != "pay with {{CARD_NUMBER_1}}") {
			t.Errorf("open: %q / %q", n.Label, n.Context)
		}
	}
	for _, name := range []string{"EMAIL_1", "VALUE_1", "CARD_NUMBER_1"} {
		if d.Public.Variables[name] == "" {
			t.Errorf("no variable %s in %v", name, d.Public.Variables)
		}
	}
}

// A body sent as text/plain is read as JSON, as the OpenAPI document says:
// a browser's fetch with a string body and no header sends text/plain.
// (Every exchange of a test is held to the document.)
func TestABodySentAsTextIsReadAsJSON(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	e.upload(id, 1<<20, "video/mp4")
	e.do("POST", "/api/queue-job", `{"jobId":"`+id+`"}`, "Content-Type", "text/plain;charset=UTF-8").expect(t, 200, map[string]any{"status": "queued"})
	sopID := e.withSOP("completed")
	e.do("PATCH", "/api/sop/"+sopID, `{"type":"update","nodeId":"refund","updates":{"label":"Refund it"}}`,
		"Content-Type", "text/plain").expect(t, 200, nil)
}

// behindCDN serves the API with its storage behind the CDN hosted Supabase
// puts in front of Storage (supabasetest.CDN), as e's own options do.
func (e *env) behindCDN(smart bool) *supabasetest.CDN {
	e.t.Helper()
	cdn := supabasetest.NewCDN(e.t, e.fake.URL, smart)
	objects, err := storage.New(storage.Config{URL: cdn.URL, PublicURL: publicBase, ServiceKey: e.fake.ServiceRoleKey(),
		Bucket: jobs.Bucket, Timeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv.Config.Handler = api.Handler(api.Options{Jobs: e.store, Objects: objects, SOPs: postgres.NewSOPLocker(e.direct),
		Logger: slog.New(slog.DiscardHandler)})
	return cdn
}

// Behind the basic CDN, which keeps a download's answer for the object's
// max-age: an SOP stored before (max-age=3600, as supabase-js and earlier
// releases wrote it) and read once is kept there. An edit then reads the
// SOP as it is now, not the kept copy, and so does the next GET: two edits
// in a row keep both. Before, the second edit was made on the kept copy and
// dropped the first, and the GET between them served the copy.
func TestEditsBehindTheBasicCDNKeepEachOther(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cdn := e.behindCDN(false)
	id := e.withSOP("completed")
	path := "/api/sop/" + id
	e.do("GET", path, "").expect(t, 200, nil) // the viewer loads it: the CDN keeps it
	e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"Edit A"}}`).expect(t, 200, nil)
	if l := nodeOf(t, e.do("GET", path, ""), "open")["label"]; l != "Edit A" {
		t.Errorf("the GET after the edit serves %q", l)
	}
	e.do("PATCH", path, `{"type":"update","nodeId":"reply","updates":{"label":"Edit B"}}`).expect(t, 200, nil)
	if b := stored(t, e, id); !bytes.Contains(b, []byte(`"Edit A"`)) || !bytes.Contains(b, []byte(`"Edit B"`)) {
		t.Errorf("the stored SOP lost an edit:\n%.400s", b)
	}
	if cdn.Hits() == 0 {
		t.Fatal("the CDN answered nothing from a kept copy: the test proves nothing")
	}
}

// Behind the Smart CDN, which keeps every download's answer until it
// learns, within a minute, that the object changed: an edit in that minute
// is refused with a 503 and Retry-After, not made on the kept copy, and a
// GET says the same rather than serve the copy. The first edit stays.
func TestEditsBehindTheSmartCDNWaitForIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.behindCDN(true)
	id := e.withSOP("completed")
	path := "/api/sop/" + id
	e.do("GET", path, "").expect(t, 200, nil)
	e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"Edit A"}}`).expect(t, 200, nil)
	for _, r := range []response{
		e.do("GET", path, ""),
		e.do("PATCH", path, `{"type":"update","nodeId":"reply","updates":{"label":"Edit B"}}`),
	} {
		r.expect(t, 503, map[string]any{"error": "File storage is still serving an earlier copy of this SOP; try again in a minute."})
		if r.header.Get("Retry-After") != "60" {
			t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
		}
	}
	if b := stored(t, e, id); !bytes.Contains(b, []byte(`"Edit A"`)) {
		t.Errorf("the stored SOP lost the first edit:\n%.400s", b)
	}
}

// An edit whose lock's connection ends while its upload is on its way
// is stored all the same; once that upload lands it is what is stored, and
// nobody followed it: the edit answers 200 with the document, and the
// screenshot of the step it deleted is removed. Before, it answered 503
// ("try again": a retried delete then found no step) and the screenshot
// stayed in storage, readable there.
func TestAnEditStoredAsItsLocksConnectionEndedStands(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	e.fake.Put("videos/frames/"+id+"/refund.jpg", []byte("\xff\xd8\xff\xe0 jpeg"), "image/jpeg")
	entered, release := e.fake.Block(supabasetest.OpUpload)
	answer := e.later("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"refund"}`)
	wait.Recv(t, entered, "the edit's upload")
	pgtest.EndAdvisoryHolders(t, e.direct)
	release()
	if r := answer(); r.status != 200 || !strings.Contains(r.raw, `"job_id"`) || strings.Contains(r.raw, `"id":"refund"`) {
		t.Fatalf("the stored edit answered %d: %.300s", r.status, r.raw)
	}
	if nodeOf(t, e.do("GET", "/api/sop/"+id, ""), "refund") != nil {
		t.Fatal("the deleted step is served (the test proves nothing)")
	}
	if _, ok := e.fake.Object("videos/frames/" + id + "/refund.jpg"); ok {
		t.Error("the deleted step's screenshot is still in storage")
	}
}

// An SOP stored again between a GET's two reads of it (its object info,
// then its bytes), by an edit elsewhere or the worker, is served as it is
// now, not taken for a CDN's kept copy: the info is read again. Before,
// the GET answered 503 "try again in a minute" with no CDN at all.
func TestAnSOPStoredBetweenTheTwoReadsIsServed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	entered, release := e.fake.Block(supabasetest.OpDownload)
	answer := e.later("GET", "/api/sop/"+id, "")
	wait.Recv(t, entered, "the GET's download")
	b := stored(t, e, id) // stored again, the same document written otherwise
	e.fake.Put("videos/sops/"+id+".json", bytes.Replace(b, []byte(`"label"`), []byte(`"label" `), 1), "application/json")
	release()
	if r := answer(); r.status != 200 {
		t.Fatalf("a GET with a store between its reads: %d %s", r.status, r.raw)
	}
}

// later sends a request in the background; the function it returns waits
// for its answer.
func (e *env) later(method, path, body string) func() response {
	done := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			e.t.Error(err)
			done <- response{}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		done <- response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	}()
	return func() response {
		e.t.Helper()
		return wait.Recv(e.t, done, method+" "+path+"'s answer")
	}
}

// An edit that deletes no screenshot reads the stored SOP once, its tag
// recorded by the edit before it: the tag is forgotten before the edit
// takes the SOP lock (SOPLocker.ForgetSOP), so its store need not let the
// lock go and read everything again. Before, every edit after the first
// read it twice.
func TestAnEditReadsTheSOPOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	path := "/api/sop/" + id
	var mu sync.Mutex
	count := map[supabasetest.Op]int{}
	e.fake.OnRequest(func(op supabasetest.Op, p string) {
		mu.Lock()
		defer mu.Unlock()
		if strings.HasSuffix(p, "sops/"+id+".json") {
			count[op]++
		}
	})
	for i, label := range []string{"Edit A", "Edit B"} {
		mu.Lock()
		clear(count)
		mu.Unlock()
		e.do("PATCH", path, `{"type":"update","nodeId":"open","updates":{"label":"`+label+`"}}`).expect(t, 200, nil)
		mu.Lock()
		if count[supabasetest.OpDownload] != 1 {
			t.Errorf("edit %d: storage asked %v for the SOP; want one download", i+1, count)
		}
		mu.Unlock()
	}
}

// A delete joins the flow around what it removes, as the viewer needs it
// (docs/frontend-contract.md: decisions branch with yes/no, a loop's last child goes
// back with next, the loop leaves with all_processed, the first edge starts
// at the first real task): deleting a decision's branch, a loop's last
// step, the step after a loop or a whole loop answers the edited document.
// Before, the step after a loop took the loop's exit with it (200, a loop
// with no all_processed), the loop's last step its next edge, and a
// branch's delete was refused (409).
func TestADeleteJoinsTheFlowAroundIt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	type edge struct{ source, target, condition string }
	for node, want := range map[string][]edge{
		"explain": {{"open", "check", "start"}, {"check", "each", "yes"}, {"check", "done", "no"}, {"refund", "note", ""},
			{"note", "refund", "next"}, {"each", "reply", "all_processed"}, {"reply", "done", ""}},
		"note": {{"open", "check", "start"}, {"check", "each", "yes"}, {"check", "explain", "no"},
			{"each", "reply", "all_processed"}, {"reply", "done", ""}, {"explain", "done", ""}, {"refund", "refund", "next"}}, // a loop of one step goes back to it
		"reply": {{"open", "check", "start"}, {"check", "each", "yes"}, {"check", "explain", "no"}, {"refund", "note", ""},
			{"note", "refund", "next"}, {"each", "done", "all_processed"}, {"explain", "done", ""}},
		"each": {{"open", "check", "start"}, {"check", "reply", "yes"}, {"check", "explain", "no"},
			{"reply", "done", ""}, {"explain", "done", ""}},
	} {
		id := e.withSOP("completed")
		r := e.do("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"`+node+`"}`)
		r.expect(t, 200, nil)
		var body struct{ Data sop.Document }
		if err := json.Unmarshal([]byte(r.raw), &body); err != nil {
			t.Fatal(err)
		}
		var got []edge
		for _, ed := range body.Data.Public.Edges {
			got = append(got, edge{ed.Source, ed.Target, ed.Condition})
		}
		if !slices.Equal(got, want) {
			t.Errorf("after deleting %s the edges are\n%v\nwant\n%v", node, got, want)
		}
	}
}

// A blank label is a bad body (400), as docs/frontend-contract.md has it, not a 409.
func TestABlankLabelIsABadBody(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":" "}}`).expect(t, 400, nil)
}

// An SOP the previous version stored and tagged (the worker's StoreTagged):
// a loop whose model gave no next edge, a start edge left unmarked — both
// valid then. The tag recorded for it must stay the tag of what GET serves
// (docs/frontend-contract.md, "Revalidation": "a recorded tag is always
// that of what is stored and shown").
func TestATagRecordedBeforeIsStillWhatIsServed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uuid.NewString()
	const old = `{"meta":{"id":"ID","title":"Refunds","version":"1.0.0","goal":"","purpose":"","owner":[]},"public":{"triggers":[],"nodes":[{"id":"open","type":"task","label":"Open the queue","intent":"","context":"","children":[],"id_path":"1"},{"id":"each","type":"loop","label":"Each refund","intent":"","context":"","children":["refund","note"],"id_path":"2"},{"id":"refund","type":"task","label":"Refund","intent":"","context":"","children":[],"parentId":"each","id_path":"2.1"},{"id":"note","type":"task","label":"Note it","intent":"","context":"","children":[],"parentId":"each","id_path":"2.2"},{"id":"done","type":"task","label":"Close","intent":"","context":"","children":[],"id_path":"3"}],"edges":[{"source":"open","target":"each"},{"source":"refund","target":"note"},{"source":"each","target":"done","condition":"all_processed"}],"variables":{},"clarification_requests":[]},"private":{"skills":[],"steps":[],"artifacts":[]}}`
	var stored bytes.Buffer
	if err := json.Indent(&stored, bytes.ReplaceAll([]byte(old), []byte(`"ID"`), []byte(`"`+id+`"`)), "", "  "); err != nil {
		t.Fatal(err)
	}
	e.exec(`INSERT INTO jobs (job_id, status) VALUES ($1, 'completed')`, id)
	recorded, err := postgres.NewSOPLocker(e.direct).StoreTagged(context.Background(), jobs.ID(id), stored.Bytes(), nil, nil, func() error {
		e.fake.Put("videos/sops/"+id+".json", stored.Bytes(), "application/json")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.do("GET", "/api/sop/"+id, "", "If-None-Match", recorded).expect(t, 304, nil)
	if tag := e.do("GET", "/api/sop/"+id, "").header.Get("ETag"); tag != recorded {
		t.Errorf("GET serves %s; the tag recorded (and answered 304 above) is %s", tag, recorded)
	}
	r := e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Open the refund queue"}}`, "If-Match", recorded)
	if r.status != 200 {
		t.Errorf("an edit on the copy the server just called current: %d %s", r.status, r.raw)
	}
}
