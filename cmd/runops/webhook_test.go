package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/runops/runops/internal/api/apitest"
)

// testWebhookSecret is a RUNOPS_WEBHOOK_SECRET made as docs/operations.md
// says: echo whsec_$(openssl rand -base64 32).
const testWebhookSecret = "whsec_Dn/4azeLajvmbbOiXpCwXowRhY8imR8mP4CDd5Z+BEA="

// verifyingWebhook is a receiver's handler: every request is verified with
// the Standard Webhooks library (a failure fails the test and is answered
// 401) and held to the OpenAPI document's webhooks, then handed to got with
// its parsed body.
func verifyingWebhook(t *testing.T, got func(id string, event map[string]any)) http.Handler {
	wh, err := standardwebhooks.NewWebhook(testWebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := wh.Verify(body, r.Header); err != nil {
			t.Errorf("a webhook did not verify with the Standard Webhooks library: %v\n%v\n%s", err, r.Header, body)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if err := apitest.CheckWebhook(r, body); err != nil {
			t.Errorf("a webhook the OpenAPI document does not describe: %v\n%s", err, body)
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		got(r.Header.Get("webhook-id"), ev)
		w.WriteHeader(http.StatusOK)
	})
}

// Completion webhooks from real worker processes: a job completes while the
// receiver is down; the worker is stopped; the receiver comes back; a new
// worker delivers the event, signed, under the id it was recorded with.
func TestWebhookSurvivesAWorkerRestart(t *testing.T) {
	bin := recordingBinary(t)
	d, dsn := newDB(t)
	// The receiver's address is taken now and served only later: until then
	// every delivery's try is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	env := []string{"RUNOPS_WEBHOOK_URLS=" + url, "RUNOPS_WEBHOOK_SECRET=" + testWebhookSecret}

	p := startWorker(t, bin, dsn, env...)
	id := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, id)
	d.waitFor("the job completed and a delivery failed", func() bool {
		return d.scalar(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND attempts > 0 AND delivered_at IS NULL`, id).(int64) == 1
	})
	eventID := d.scalar(`SELECT event_id::text FROM runops_webhooks WHERE job_id = $1`, id).(string)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.waitExit(t); err != nil {
		t.Fatalf("worker exit: %v", err)
	}

	var mu sync.Mutex
	var got []map[string]any
	var ids []string
	ln, err = net.Listen("tcp", strings.TrimPrefix(strings.TrimSuffix(url, "/hook"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: verifyingWebhook(t, func(id string, ev map[string]any) {
		mu.Lock()
		got, ids = append(got, ev), append(ids, id)
		mu.Unlock()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	// The failed try's retry waits at most a couple of seconds.
	startWorker(t, bin, dsn, env...)
	d.waitFor("the event delivered by the new worker", func() bool {
		return d.scalar(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NOT NULL`, id).(int64) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || ids[0] != eventID || got[0]["type"] != "job.completed" {
		t.Fatalf("received %v under ids %v; want the one signed event %s", got, ids, eventID)
	}
	if data, _ := got[0]["data"].(map[string]any); data["id"] != eventID || data["job_id"] != id || data["status"] != "completed" {
		t.Fatalf("event data %v", got[0]["data"])
	}
}
