package api_test

import (
	"context"
	"testing"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/supabasetest"
)

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
