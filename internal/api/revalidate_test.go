package api_test

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/supabasetest"
)

// storageReads counts the requests that read an object or its info.
func (e *env) storageReads() int {
	return e.fake.Calls(supabasetest.OpDownload) + e.fake.Calls(supabasetest.OpInfo) + e.fake.Calls(supabasetest.OpHead)
}

// A revalidated SOP (If-None-Match with the ETag it was served with) is
// answered 304 from the tag its writer recorded, without reading storage;
// an SOP no writer recorded (placed by hand) is read, and a revalidation
// of it is still answered 304; any other tag gets the document.
func TestARevalidatedSOPIsNotReadFromStorage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")

	// Placed by hand: no tag recorded, read from storage, 304 when unchanged.
	first := e.do("GET", "/api/sop/"+id, "")
	first.expect(t, 200, nil)
	tag := first.header.Get("ETag")
	reads := e.storageReads()
	r := e.do("GET", "/api/sop/"+id, "", "If-None-Match", tag)
	if r.status != 304 || r.header.Get("ETag") != tag || r.raw != "" {
		t.Fatalf("revalidation of an unrecorded SOP: %d %v %q", r.status, r.header, r.raw)
	}
	if e.storageReads() == reads {
		t.Fatal("an SOP with no recorded tag was answered without reading it")
	}

	// An edit records the tag of what it stores.
	edited := e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Open the customer's ticket"}}`)
	edited.expect(t, 200, nil)
	newTag := edited.header.Get("ETag")
	if newTag == "" || newTag == tag {
		t.Fatalf("the edit's ETag %q (before: %q)", newTag, tag)
	}
	reads = e.storageReads()
	for _, h := range []string{newTag, `"stale", ` + newTag, "W/" + newTag, "*"} {
		r = e.do("GET", "/api/sop/"+id, "", "If-None-Match", h)
		if r.status != 304 || r.header.Get("ETag") != newTag || r.raw != "" {
			t.Fatalf("If-None-Match %s: %d %v %q", h, r.status, r.header, r.raw)
		}
	}
	if e.storageReads() != reads {
		t.Fatalf("revalidations read storage %d times", e.storageReads()-reads)
	}

	// The old tag, or none, gets the document as it is now, with its tag.
	for _, h := range []string{tag, ""} {
		r = e.do("GET", "/api/sop/"+id, "", "If-None-Match", h)
		r.expect(t, 200, nil)
		if r.header.Get("ETag") != newTag || nodeOf(t, r, "open")["label"] != "Open the customer's ticket" {
			t.Fatalf("If-None-Match %q: %v %s", h, r.header, r.raw)
		}
	}
	// The Markdown export has no tag: it is always sent.
	e.do("GET", "/api/sop/"+id+"?format=md", "", "If-None-Match", newTag).expect(t, 200, nil)
	// A revalidation never shows a job to someone who may not see it.
	owned := e.withSOP("completed")
	e.exec(`UPDATE jobs SET metadata = jsonb_build_object('owner', $2::text) WHERE job_id = $1`, owned, uuid.NewString())
	e.do("GET", "/api/sop/"+owned, "", "If-None-Match", "*").expect(t, 404, map[string]any{"error": "SOP not found"})
}

// A step's screenshot is served with an ETag; revalidated against the tag
// recorded when the worker stored it, it is answered 304 without reading
// storage; once an edit deletes the step, its tag is gone and it is 404.
func TestARevalidatedScreenshotIsNotReadFromStorage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	e.fake.Put("videos/frames/"+id+"/check.jpg", []byte("\xff\xd8 a jpeg of the payments dashboard"), "image/jpeg")
	r := e.do("GET", "/api/sop/"+id+"/frames/check", "")
	r.expect(t, 200, nil)
	tag := r.header.Get("ETag")
	if tag == "" {
		t.Fatalf("no ETag: %v", r.header)
	}
	reads := e.storageReads()
	if r := e.do("GET", "/api/sop/"+id+"/frames/check", "", "If-None-Match", tag); r.status != 304 {
		t.Fatalf("unrecorded screenshot revalidated: %d", r.status)
	}
	if e.storageReads() == reads {
		t.Fatal("a screenshot with no recorded tag was answered without reading it")
	}

	// As the worker records it before storing it.
	locker := postgres.NewSOPLocker(e.direct)
	if err := locker.RecordFrames(context.Background(), jobs.ID(id), map[string]string{"check": tag, "open": `"other"`}); err != nil {
		t.Fatal(err)
	}
	reads = e.storageReads()
	if r := e.do("GET", "/api/sop/"+id+"/frames/check", "", "If-None-Match", tag); r.status != 304 || r.header.Get("ETag") != tag {
		t.Fatalf("recorded screenshot revalidated: %d %v", r.status, r.header)
	}
	if e.storageReads() != reads {
		t.Fatal("a recorded screenshot's revalidation read storage")
	}
	// Changed since: the new bytes, with another tag.
	e.fake.Put("videos/frames/"+id+"/check.jpg", []byte("\xff\xd8 the dashboard after the refund"), "image/jpeg")
	if err := locker.RecordFrames(context.Background(), jobs.ID(id), map[string]string{"check": `"newer"`}); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/api/sop/"+id+"/frames/check", "", "If-None-Match", tag)
	if r.status != 200 || r.raw != "\xff\xd8 the dashboard after the refund" || r.header.Get("ETag") == tag {
		t.Fatalf("changed screenshot: %d %v %q", r.status, r.header, r.raw)
	}

	// Deleting the step drops its tag with its screenshot.
	e.do("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"check"}`).expect(t, 200, nil)
	var left string
	if err := e.direct.QueryRow(context.Background(), `SELECT frames::text FROM runops_stored_tags WHERE job_id = $1`, id).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != `{"open": "\"other\""}` {
		t.Fatalf("recorded screenshot tags after the delete: %s", left)
	}
	e.do("GET", "/api/sop/"+id+"/frames/check", "", "If-None-Match", `"newer"`).expect(t, 404, map[string]any{"error": "Screenshot not found"})
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
	} {
		id := uuid.NewString()
		e.exec(`INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'processing', $2::jsonb)`, id, meta)
		want["status"], want["jobId"], want["error"], want["completedAt"] = "processing", id, nil, nil
		e.do("GET", "/api/job-status/"+id, "").expect(t, 200, want)
	}
}
