package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// Completion webhooks from real worker processes: a job completes while the
// receiver is down; the worker is stopped; the receiver comes back; a new
// worker delivers the event, signed, under the id it was recorded with.
func TestWebhookSurvivesAWorkerRestart(t *testing.T) {
	bin := recordingBinary(t)
	d, dsn := newDB(t)
	// The receiver's address is taken now and served only later: until then
	// every delivery attempt is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/hook"
	ln.Close()
	env := []string{"RUNOPS_WEBHOOK_URLS=" + url, "RUNOPS_WEBHOOK_SECRET=s3cret"}

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
	ln, err = net.Listen("tcp", strings.TrimPrefix(strings.TrimSuffix(url, "/hook"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, v1, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Runops-Signature"), "t="), ", v1=")
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write([]byte(ts + "." + string(body)))
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		mu.Lock()
		if v1 == hex.EncodeToString(mac.Sum(nil)) {
			got = append(got, ev)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	// The failed attempt's retry waits at most a couple of seconds.
	startWorker(t, bin, dsn, env...)
	d.waitFor("the event delivered by the new worker", func() bool {
		return d.scalar(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NOT NULL`, id).(int64) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0]["id"] != eventID || got[0]["type"] != "job.completed" || got[0]["job_id"] != id {
		t.Fatalf("received %v; want the one signed event %s", got, eventID)
	}
}
