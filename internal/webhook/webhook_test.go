package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/webhook"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const secret = "receiver-secret"

// receiver is a real local endpoint that checks every signature and records
// what it was sent; down makes it drop connections, fail the next answers 500.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	got  []map[string]any
	down atomic.Bool
	fail atomic.Int32
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.down.Load() {
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
		}
		body, _ := io.ReadAll(req.Body)
		sig := req.Header.Get("Runops-Signature")
		ts, v1, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ", v1=")
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(ts + "." + string(body)))
		if want := hex.EncodeToString(mac.Sum(nil)); v1 != want {
			t.Errorf("bad signature %q", sig)
		}
		var ev map[string]any
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		r.mu.Lock()
		r.got = append(r.got, ev)
		r.mu.Unlock()
		if r.fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) received() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.got...)
}

// finish runs one job to the outcome through the worker's own statements.
func finish(t *testing.T, q *postgres.QueueStore, exec func(string, ...any), fail bool) jobs.ID {
	t.Helper()
	id := jobs.ID(uuid.NewString())
	exec(`INSERT INTO jobs (job_id) VALUES ($1)`, string(id))
	got, err := q.Claim(context.Background(), "w", 1, time.Minute)
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	o := queue.Outcome{ID: id, Token: got[0].Token, Status: jobs.StatusCompleted, Patch: map[string]any{"timings": map[string]any{"probing_ms": 5}}}
	if fail {
		o.Status, o.Message, o.Cause = jobs.StatusError, "The video is damaged.", "ffmpeg: exit 1"
	}
	ok, err := q.Finish(context.Background(), o)
	if err != nil || !ok {
		t.Fatalf("outcome: %v %v", ok, err)
	}
	return id
}

// database is a fresh migrated database with helpers to change and count rows.
func database(t *testing.T) (*pgxpool.Pool, func(string, ...any), func(string, ...any) int) {
	pool, _ := pgtest.Pool(t)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return pool, exec, count
}

func deliverer(store *postgres.JobStore) *webhook.Deliverer {
	return &webhook.Deliverer{Store: store.Webhooks(), Secret: []byte(secret), Client: &http.Client{Timeout: 5 * time.Second},
		Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
}

// deliverUntil runs delivery rounds until cond holds (retries come about a
// second apart: a generous deadline, never a duration assertion).
func deliverUntil(t *testing.T, d *webhook.Deliverer, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if _, err := d.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond) // pacing the rounds
	}
}

// Outcomes the worker records become signed events, written with the
// outcome and delivered at least once under one id: a 500 is retried, a
// receiver that is down while the deliverer restarts gets it afterwards; a
// person's dashboard edit sends nothing.
func TestEventsAreDeliveredAtLeastOnce(t *testing.T) {
	pool, exec, count := database(t)
	flaky, steady := newReceiver(t), newReceiver(t)
	flaky.fail.Store(1)
	store := postgres.NewJobStore(pool)
	q := postgres.NewQueueStore(pool).SendEvents([]string{flaky.srv.URL, steady.srv.URL})

	done := finish(t, q, exec, false)
	failed := finish(t, q, exec, true)
	if n := count(`SELECT count(*) FROM runops_webhooks`); n != 4 {
		t.Fatalf("%d events; want one per outcome and URL", n)
	}
	// A person's edit is not the service's outcome.
	person := uuid.NewString()
	exec(`INSERT INTO jobs (job_id) VALUES ($1)`, person)
	exec(`UPDATE jobs SET status = 'completed' WHERE job_id = $1`, person)
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1`, person); n != 0 {
		t.Fatal("a dashboard edit sent an event")
	}

	d := deliverer(store)
	deliverUntil(t, d, "every event delivered", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NOT NULL`) == 4
	})
	got := flaky.received()
	if len(got) != 3 { // the 500, its retry, the other event
		t.Fatalf("flaky receiver got %d requests", len(got))
	}
	ids := map[any]int{}
	for _, ev := range got {
		ids[ev["id"]]++
	}
	if len(ids) != 2 {
		t.Fatalf("event ids %v: a retry must carry the same id", ids)
	}
	for _, ev := range steady.received() {
		switch ev["job_id"] {
		case string(done):
			if ev["type"] != "job.completed" || ev["status"] != "completed" || ev["sop_path"] != "sops/"+string(done)+".json" || ev["completed_at"] == nil {
				t.Errorf("completed event %v", ev)
			}
		case string(failed):
			if ev["type"] != "job.failed" || ev["error"] != "The video is damaged." || ev["sop_path"] != nil {
				t.Errorf("failed event %v", ev)
			}
		default:
			t.Errorf("event %v", ev)
		}
		if timings, _ := ev["timings"].(map[string]any); timings["probing_ms"] != float64(5) {
			t.Errorf("timings %v", ev["timings"])
		}
	}

	// The receiver is down while the deliverer "restarts": the event waits.
	steady.down.Store(true)
	later := finish(t, q, exec, false)
	deliverUntil(t, d, "a failed attempt", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND url = $2 AND attempts > 0 AND last_error IS NOT NULL`, string(later), steady.srv.URL) == 1
	})
	steady.down.Store(false)
	restarted := deliverer(store)
	deliverUntil(t, restarted, "the event delivered after the restart", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NOT NULL`, string(later)) == 2
	})
}

// Many deliverers at once: each attempt is made by one of them.
func TestOneDelivererPerAttempt(t *testing.T) {
	pool, exec, _ := database(t)
	ctx := context.Background()
	r := newReceiver(t)
	store := postgres.NewJobStore(pool)
	q := postgres.NewQueueStore(pool).SendEvents([]string{r.srv.URL})
	const n = 30
	for range n {
		finish(t, q, exec, false)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := deliverer(store).Once(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var delivered int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NOT NULL`).Scan(&delivered); err != nil {
		t.Fatal(err)
	}
	if got := len(r.received()); got != delivered || delivered != n {
		t.Fatalf("%d requests for %d delivered events of %d", got, delivered, n)
	}
}

func TestSignAndBackoff(t *testing.T) {
	at := time.Unix(1700000000, 0)
	if got := webhook.Sign([]byte("s"), []byte(`{}`), at); !strings.HasPrefix(got, "t=1700000000, v1=") || len(got) != len("t=1700000000, v1=")+64 {
		t.Fatalf("signature %q", got)
	}
	for n, want := range map[int][2]time.Duration{1: {800 * time.Millisecond, 1200 * time.Millisecond}, 2: {1600 * time.Millisecond, 2400 * time.Millisecond},
		30: {48 * time.Minute, 72 * time.Minute}} {
		if d := webhook.Backoff(n); d < want[0] || d > want[1] {
			t.Errorf("backoff after %d tries: %s", n, d)
		}
	}
}

// A redirect is never followed: a signed POST turned into a body-less GET
// whose 2xx counts as delivered, or the signed request bounced to another
// host, would both be wrong. A 3xx is retried like a 5xx.
func TestRedirectsAreNotDeliveries(t *testing.T) {
	pool, exec, count := database(t)
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	bouncer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := http.StatusFound
		if r.URL.Path == "/307" {
			code = http.StatusTemporaryRedirect // would resend the signed body
		}
		http.Redirect(w, r, other.URL+"/took-it", code)
	}))
	t.Cleanup(bouncer.Close)
	q := postgres.NewQueueStore(pool).SendEvents([]string{bouncer.URL + "/302", bouncer.URL + "/307"})
	id := finish(t, q, exec, false)
	if _, err := deliverer(postgres.NewJobStore(pool)).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NULL AND last_error LIKE 'answered 30%'`, string(id)); n != 2 {
		t.Fatalf("%d of 2 redirected deliveries are pending with the 3xx as their error", n)
	}
	if elsewhere.Load() != 0 {
		t.Fatalf("the redirect target got %d requests", elsewhere.Load())
	}
}

// A round ends inside the lease it took its deliveries under, whatever the
// receivers do (here: never answer, with a client timeout far beyond the
// lease); what it did not try goes back untried, due at once.
func TestARoundEndsInsideItsLease(t *testing.T) {
	pool, exec, count := database(t)
	hang := make(chan struct{})
	var requests atomic.Int64
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(func() { close(hang); silent.Close() })
	q := postgres.NewQueueStore(pool).SendEvents([]string{silent.URL})
	for range 5 {
		finish(t, q, exec, false)
	}
	d := deliverer(postgres.NewJobStore(pool))
	d.Client = &http.Client{Timeout: time.Hour}
	d.Lease = 2 * time.Second
	if _, err := d.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d attempts started in a round whose first attempt outlasted it", n)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE attempts = 1 AND next_at > now()`); n != 1 {
		t.Fatalf("%d deliveries counted as tried; want the one that was cut", n)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE attempts = 0 AND next_at <= now()`); n != 4 {
		t.Fatalf("%d deliveries handed back untried; want 4", n)
	}
}
