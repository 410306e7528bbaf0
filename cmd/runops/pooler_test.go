package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/supabasetest"
)

// Everything but LISTEN through a real PgBouncer in transaction mode (what
// Supabase's port 6543 is), with 3 server connections for every client: an
// API process whose URL says pgbouncer=true, a worker process (claims,
// heartbeats, stages, outcomes, the SOP lock, webhooks, the janitor) whose
// URL does not say it, on a port that is not 6543, and `runops jobs`.
// Only the worker's listener connects directly.
func TestThroughATransactionPooler(t *testing.T) {
	d, direct := newDB(t)
	pooler := pgtest.NewBouncer(t, direct, 3)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	ai := geminitest.New(t, "test-key")
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	var hooks atomic.Int64
	receiver := httptest.NewServer(verifyingWebhook(t, func(string, map[string]any) { hooks.Add(1) }))
	t.Cleanup(receiver.Close)

	bin := binary(t)
	_, _, worker := startCommand(t, bin, "worker", pooler.URL, fake, "GOOGLE_GEMINI_BASE_URL="+ai.URL,
		"RUNOPS_LISTEN_DATABASE_URL="+direct, "RUNOPS_LEASE_TTL=3s", "RUNOPS_HEARTBEAT=200ms", "RUNOPS_SWEEP=500ms",
		"RUNOPS_RAW_RETENTION=1ms", "RUNOPS_WEBHOOK_URLS="+receiver.URL, "RUNOPS_WEBHOOK_SECRET="+testWebhookSecret)
	_, _, api := startCommand(t, bin, "api", pooler.URL+"&pgbouncer=true", fake)

	call := apiCaller(t, api, func() string { return "\npgbouncer:\n" + pooler.Log() })
	up := call("POST", "/api/get-upload-url", "")
	id, _ := up["jobId"].(string)
	video, err := os.ReadFile(mediatest.Make(t, t.TempDir(), "rec.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2}))
	if err != nil {
		t.Fatal(err)
	}
	put, _ := http.NewRequest("PUT", up["url"].(string), bytes.NewReader(video))
	put.Header.Set("Content-Type", "video/mp4")
	resp, err := http.DefaultClient.Do(put)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
	call("POST", "/api/queue-job", `{"jobId":"`+id+`"}`)
	completed := func(after string) func() bool {
		return func() bool {
			st := call("GET", "/api/job-status/"+id, "")
			if st["status"] == "error" {
				t.Fatalf("job failed: %v\npgbouncer:\n%s", st["error"], pooler.Log())
			}
			done, _ := st["completedAt"].(string)
			return st["status"] == "completed" && done != after
		}
	}
	d.waitFor("the job to complete", completed(""))
	first, _ := call("GET", "/api/job-status/"+id, "")["completedAt"].(string)
	call("PATCH", "/api/sop/"+id, `{"type":"update","nodeId":"open","updates":{"label":"Open the ticket"}}`)
	d.waitFor("the completion webhook", func() bool { return hooks.Load() >= 1 })
	d.waitFor("the janitor to delete the upload", func() bool {
		_, ok := fake.Object("videos/raw/" + id + ".mp4")
		return !ok
	})

	runops := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"jobs"}, args...)...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+pooler.URL, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("runops jobs %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := runops("list"); !strings.Contains(out, id) {
		t.Fatalf("jobs list does not show the job:\n%s", out)
	}
	fake.Put("videos/raw/"+id+".mp4", video, "video/mp4") // the upload again, for the rerun
	runops("requeue", id)
	d.waitFor("the requeued job to complete again", completed(first))

	// The worker's listener proved itself (it connects directly).
	resp, err = http.Get(worker + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("worker /readyz %d: %s", resp.StatusCode, body)
	}
}
