package pipeline_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/pipeline"
)

// The Files API in trouble, as the real SDK meets it (geminitest.Intercept):
// every step that never answers ends by its deadline and is tried again, and
// every answer that broke off on the way is a passing failure. Before, a
// files.get or an upload chunk that never answered held the job for ever
// (its lease renewed), and a cut-off body, a gateway's page on a chunk and
// a 429's wait on the upload's start ended the job or were not honoured.

// short makes the Files API's deadlines a test's.
func short(c *pipeline.Config) {
	c.FileActiveTimeout = 5 * time.Second
	c.FileCallTimeout = 500 * time.Millisecond
	c.GenerateTimeout = 2 * time.Second
}

// apiError answers as the API does when it refuses: status, and its JSON
// error (details "" for none).
func apiError(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

// once answers the first n requests of an operation with answer, and lets
// the others through.
func once(n int32, answer func(w http.ResponseWriter, r *http.Request)) func(http.ResponseWriter, *http.Request) bool {
	var seen atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) bool {
		if seen.Add(1) > n {
			return false
		}
		answer(w, r)
		return true
	}
}

func TestAFilesCallThatNeverAnswersIsTriedAgain(t *testing.T) {
	t.Parallel()
	for _, op := range []geminitest.Op{geminitest.OpFileGet, geminitest.OpUploadChunk, geminitest.OpUploadStart} {
		t.Run(string(op), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, short)
			r.ai.Intercept(op, once(2, geminitest.Hang))
			if j := r.finished(r.submit(r.video(), nil)); outcome(j) != done {
				t.Fatalf("a %s that never answered, twice: %s", op, outcome(j))
			}
		})
	}
}

func TestAnAnswerCutOffOnTheWayIsTriedAgain(t *testing.T) {
	t.Parallel()
	for op, partial := range map[geminitest.Op]string{
		geminitest.OpGenerate: `{"candidates":[{"content":{"parts":[{"text":"{\"ti`,
		geminitest.OpFileGet:  `{"name":"files/`,
	} {
		t.Run(string(op), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.ai.Intercept(op, once(1, func(w http.ResponseWriter, _ *http.Request) { geminitest.CutOff(w, partial) }))
			if j := r.finished(r.submit(r.video(), nil)); outcome(j) != done {
				t.Fatalf("a %s cut off once: %s", op, outcome(j))
			}
		})
	}
}

// A gateway's page on an upload chunk has none of the upload protocol's
// headers: the SDK tries the chunk three times, then fails with "read on
// closed response body" (docs/dependencies.md), a passing failure.
func TestAGatewayErrorOnAnUploadChunkIsTriedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Intercept(geminitest.OpUploadChunk, once(3, func(w http.ResponseWriter, _ *http.Request) {
		geminitest.GatewayError(w, http.StatusBadGateway)
	}))
	if j := r.finished(r.submit(r.video(), nil)); outcome(j) != done {
		t.Fatalf("a gateway's 502s on an upload chunk: %s", outcome(j))
	}
}

// The upload's start request's error is text only in the SDK (%s): the
// wait its 429 asks for (RetryInfo) is read from that text too.
func TestAQuotaWaitOnTheUploadsStartIsHonoured(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Intercept(geminitest.OpUploadStart, once(2, apiError(http.StatusTooManyRequests,
		`{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"20s"}]}}`)))
	j := r.finished(r.submit(r.video(), nil))
	r.mu.Lock()
	sleeps := append([]time.Duration(nil), r.sleeps...)
	r.mu.Unlock()
	if outcome(j) != done || !containsRun(sleeps, 20*time.Second, 20*time.Second) {
		t.Fatalf("the server asked for 20 s between tries; the waits were %v (%s)", sleeps, outcome(j))
	}
}

// A passing failure of a file's deletion is tried again: a file left costs
// the customer's quota for 48 hours.
func TestAFilesDeletionIsTriedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Intercept(geminitest.OpFileDelete, once(1, apiError(http.StatusServiceUnavailable,
		`{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`)))
	if j := r.finished(r.submit(r.video(), nil)); outcome(j) != done {
		t.Fatal(outcome(j))
	}
	r.waitFor("the file deleted", func() bool { return len(r.ai.Files()) == 0 && len(r.ai.Deleted()) == 1 })
}

// A previous attempt's file still PROCESSING (its lease was lost while
// Gemini prepared it) is waited for, not left in the quota while another is
// uploaded; one that cannot be used (another slim copy's) is deleted.
func TestAPreviousAttemptsFileIsUsedOrDeleted(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		sameSHA bool
		uploads int
	}{{"processing still", true, 1}, {"another slim copy's", false, 2}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			first, slim, f := r.previousAttempt()
			r.ai.ActivateAfter = 3 // the worker's first look finds it PROCESSING
			sha := slim["sha256"]
			if !c.sameSHA {
				sha = strings.Repeat("0", 64)
			}
			second := r.submitWithSlimOf(first, map[string]any{"slim": slim, "gemini": map[string]any{"file_name": f.Name,
				"slim_sha256": sha, "file_expires_at": time.Now().Add(47 * time.Hour).Format(time.RFC3339Nano)}})
			if j := r.finished(second); outcome(j) != done {
				t.Fatal(outcome(j))
			}
			// The first job's upload, the previous file, and this job's own.
			if n := r.ai.Uploads(); n != 1+c.uploads {
				t.Errorf("%d uploads in all; want %d", n, 1+c.uploads)
			}
			r.waitFor("no file left", func() bool { return len(r.ai.Files()) == 0 })
		})
	}
}

// A request the API refuses for good (400 INVALID_ARGUMENT: the input is
// more than the model takes) is not told as an outage to wait out.
func TestARefusedRequestIsNotAnOutage(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Script(geminitest.Error(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", ""))
	j := r.finished(r.submit(r.video(), nil))
	if outcome(j) != "The AI service refused to process this recording; try a shorter one, and contact support if it keeps happening." {
		t.Fatalf("a permanent 400 ended as %q", outcome(j))
	}
	if len(r.ai.Requests()) != 1 {
		t.Fatalf("%d generate calls: a refused request was asked again", len(r.ai.Requests()))
	}
}

// The tokens of the calls a run made are recorded however it ends: they
// were billed (here an answer cut off, then a blocked one).
func TestTheTokensOfARunThatFailsAreRecorded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.ai.Script(geminitest.Text(`{"title":"cut`, "MAX_TOKENS"), geminitest.Blocked())
	j := r.finished(r.submit(r.video(), nil))
	g, _ := j.Metadata["gemini"].(map[string]any)
	if j.Status != "error" || g["calls"] != float64(2) || g["usage"] == nil {
		t.Fatalf("ended %q after 2 billed calls; metadata.gemini = %v", outcome(j), g)
	}
}
