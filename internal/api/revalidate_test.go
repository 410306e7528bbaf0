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
	e.exec(`UPDATE runops_uploads SET owner = $2 WHERE job_id = $1`, owned, uuid.NewString())
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

// A tag recorded for a write that then failed names bytes this write never
// stored, but the same bytes may have been served before: an edit undone
// (label A, then B, then A again) whose store fails leaves B in storage and
// A's tag recorded. A client still holding A's copy must get B, not 304.
func TestAnUndoneEditWhoseStoreFailedIsNotRevalidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	set := func(label string) response {
		return e.do("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"`+label+`"}}`)
	}
	a := set("Alpha")
	a.expect(t, 200, nil)
	tagA := a.header.Get("ETag") // a viewer keeps this copy
	set("Beta").expect(t, 200, nil)
	e.fake.FailNext(supabasetest.OpUpload, 1, 500)
	if r := set("Alpha"); r.status < 500 {
		t.Fatalf("the undo whose store failed: %d %s", r.status, r.raw)
	}
	r := e.do("GET", "/api/sop/"+id, "", "If-None-Match", tagA)
	if r.status != 200 || nodeOf(t, r, "open")["label"] != "Beta" {
		t.Fatalf("the viewer holding the first edit's copy revalidated: %d %q; storage holds the label Beta", r.status, r.raw)
	}
}

// The same for a screenshot: a step deleted by an edit, then its screenshot
// taken again by a run (the same bytes: the same second of the same upload)
// that ended before storing its SOP. The SOP in storage has no such step:
// a client holding the old screenshot's tag is answered 404, not 304.
func TestAScreenshotOfAStepTheSOPNoLongerHasIsNotRevalidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("completed")
	jpeg := []byte("\xff\xd8 a jpeg of the payments dashboard")
	e.fake.Put("videos/frames/"+id+"/check.jpg", jpeg, "image/jpeg")
	r := e.do("GET", "/api/sop/"+id+"/frames/check", "")
	r.expect(t, 200, nil)
	tag := r.header.Get("ETag")
	e.do("PATCH", "/api/sop/"+id, `{"type":"delete","nodeId":"check"}`).expect(t, 200, nil)

	// A run stores the step's screenshot again (its tag forgotten first, to
	// be recorded with the SOP that shows it), then fails before its SOP is
	// stored.
	if err := postgres.NewSOPLocker(e.direct).RecordFrames(context.Background(), jobs.ID(id), map[string]string{"check": ""}); err != nil {
		t.Fatal(err)
	}
	e.fake.Put("videos/frames/"+id+"/check.jpg", jpeg, "image/jpeg")

	for _, h := range []string{tag, "*"} {
		e.do("GET", "/api/sop/"+id+"/frames/check", "", "If-None-Match", h).expect(t, 404, map[string]any{"error": "Screenshot not found"})
	}
}

// If-None-Match: * asks whether there is anything at all: an SOP whose
// tag was recorded but whose store never happened is not there (404).
func TestAnSOPRecordedButNeverStoredIsNotThere(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := e.withSOP("failed")
	e.fake.Delete("videos/sops/" + id + ".json")
	// A worker forgot the SOP's tag to store its own, then lost storage
	// before storing it.
	if err := postgres.NewSOPLocker(e.direct).RecordSOP(context.Background(), jobs.ID(id), "", nil); err != nil {
		t.Fatal(err)
	}
	e.do("GET", "/api/sop/"+id, "", "If-None-Match", "*").expect(t, 404, nil)
}
