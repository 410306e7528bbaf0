package webhook_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/wait"
	"github.com/runops/runops/internal/webhook"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

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

// refusing is a receiver holding secret that expects to refuse what it
// gets, and a queue store sending it the events of the jobs it ends.
func refusing(t *testing.T, pool *pgxpool.Pool, secret string) (*webhook.Receiver, *postgres.QueueStore) {
	r := webhook.NewReceiver(t, secret)
	r.ExpectRefusals()
	return r, postgres.NewQueueStore(pool).SendEvents([]string{r.URL})
}

// deliverer signs with secret, a value of RUNOPS_WEBHOOK_SECRET read as
// the process reads it.
func deliverer(t *testing.T, store *postgres.JobStore, secret string) *webhook.Deliverer {
	t.Helper()
	keys, err := webhook.ParseSecrets(secret)
	if err != nil {
		t.Fatal(err)
	}
	return &webhook.Deliverer{Store: store.Webhooks(), Keys: keys, Client: &http.Client{Timeout: 5 * time.Second},
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

// A receiver listed twice gets one event an outcome, and the outcome is
// written: a second row under the same key failed every outcome (and every
// rescue) of the fleet.
func TestAURLListedTwiceGetsOneEvent(t *testing.T) {
	pool, exec, count := database(t)
	r := webhook.NewReceiver(t, webhook.SecretOld)
	finish(t, postgres.NewQueueStore(pool).SendEvents([]string{r.URL, r.URL}), exec, false)
	if n := count(`SELECT count(*) FROM runops_webhooks`); n != 1 {
		t.Fatalf("%d events for one outcome to one receiver", n)
	}
}

// A receiver's password and query, where a token often rides, stay out of
// the log lines and the stored errors of its failed deliveries.
func TestAReceiversSecretsStayOutOfLogsAndErrors(t *testing.T) {
	pool, exec, count := database(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there: the delivery fails with the URL in its error
	finish(t, postgres.NewQueueStore(pool).SendEvents([]string{"http://alice:s3cretpw@" + addr + "/hook?token=tok123"}), exec, false)
	var logs strings.Builder
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	d.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	if _, err := d.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := pool.QueryRow(context.Background(), `SELECT coalesce(last_error, '') FROM runops_webhooks`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if count(`SELECT count(*) FROM runops_webhooks WHERE last_error IS NOT NULL`) != 1 || !strings.Contains(logs.String(), "delivery failed") {
		t.Fatalf("the delivery did not fail as the test needs: %q\n%s", stored, logs.String())
	}
	for _, secret := range []string{"s3cretpw", "tok123"} {
		if strings.Contains(logs.String(), secret) || strings.Contains(stored, secret) {
			t.Errorf("%q is in the log or the stored error:\n%s\n%s", secret, logs.String(), stored)
		}
	}
}

// Outcomes the worker records become signed events, written with the
// outcome and delivered at least once under one webhook-id: a 500 is
// retried under the same id, a receiver that is down while the deliverer
// restarts gets it afterwards; a person's dashboard edit sends nothing.
func TestEventsAreDeliveredAtLeastOnce(t *testing.T) {
	pool, exec, count := database(t)
	flaky, steady := webhook.NewReceiver(t, webhook.SecretOld), webhook.NewReceiver(t, webhook.SecretOld)
	flaky.Fail.Store(1)
	store := postgres.NewJobStore(pool)
	q := postgres.NewQueueStore(pool).SendEvents([]string{flaky.URL, steady.URL})

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

	d := deliverer(t, store, webhook.SecretOld)
	deliverUntil(t, d, "every event delivered", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NOT NULL`) == 4
	})
	got := flaky.Verified()
	if len(got) != 3 { // the 500, its retry, the other event
		t.Fatalf("flaky receiver got %d requests", len(got))
	}
	// The retry of the refused try carries its id and body; the other
	// event has another id; each is the event's id in the outbox and in
	// its data.
	byID := map[string][]webhook.Received{}
	for _, r := range got {
		byID[r.ID] = append(byID[r.ID], r)
		if r.Data()["id"] != r.ID {
			t.Errorf("webhook-id %s, data.id %v", r.ID, r.Data()["id"])
		}
		if n := count(`SELECT count(*) FROM runops_webhooks WHERE event_id::text = $1 AND url = $2`, r.ID, flaky.URL); n != 1 {
			t.Errorf("webhook-id %q is not an event of the outbox", r.ID)
		}
	}
	if retried := byID[got[0].ID]; len(byID) != 2 || len(retried) != 2 || string(retried[0].Body) != string(retried[1].Body) {
		t.Fatalf("webhook-ids %q, %q, %q: the retry must carry its event's id and body, another event another id", got[0].ID, got[1].ID, got[2].ID)
	}
	steadyGot := steady.Verified()
	if len(steadyGot) != 2 {
		t.Fatalf("steady receiver got %d requests", len(steadyGot))
	}
	for _, r := range steadyGot {
		if byID[r.ID] == nil {
			t.Errorf("event %s has another id at another URL", r.ID)
		}
		ev, data := r.Event, r.Data()
		if ts, _ := time.Parse(time.RFC3339, ev["timestamp"].(string)); time.Since(ts) > time.Hour || time.Until(ts) > time.Minute {
			t.Errorf("event timestamp %v is not the event's time", ev["timestamp"])
		}
		switch data["job_id"] {
		case string(done):
			if ev["type"] != "job.completed" || data["type"] != "job.completed" || data["status"] != "completed" ||
				data["sop_path"] != "sops/"+string(done)+".json" || data["completed_at"] == nil {
				t.Errorf("completed event %s", r.Body)
			}
		case string(failed):
			if ev["type"] != "job.failed" || data["type"] != "job.failed" || data["error"] != "The video is damaged." || data["sop_path"] != nil {
				t.Errorf("failed event %s", r.Body)
			}
		default:
			t.Errorf("event %s", r.Body)
		}
		if timings, _ := data["timings"].(map[string]any); timings["probing_ms"] != float64(5) {
			t.Errorf("timings %v", data["timings"])
		}
	}

	// The receiver is down while the deliverer "restarts": the event waits.
	steady.Down.Store(true)
	later := finish(t, q, exec, false)
	deliverUntil(t, d, "a failed try", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND url = $2 AND attempts > 0 AND last_error IS NOT NULL`, string(later), steady.URL) == 1
	})
	steady.Down.Store(false)
	restarted := deliverer(t, store, webhook.SecretOld)
	deliverUntil(t, restarted, "the event delivered after the restart", func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NOT NULL`, string(later)) == 2
	})
	all := steady.Verified()
	if last := all[len(all)-1]; last.Data()["job_id"] != string(later) || last.ID != all[len(all)-2].ID {
		t.Fatalf("after the restart: event %s under id %s; the dropped try had id %s", last.Body, last.ID, all[len(all)-2].ID)
	}
}

// While a secret is rotated (RUNOPS_WEBHOOK_SECRET holds the old and the
// new), every delivery verifies with either; once the old one is removed,
// a receiver still holding it refuses what comes.
func TestRotationSignsWithBothSecrets(t *testing.T) {
	pool, exec, count := database(t)
	old, updated := webhook.NewReceiver(t, webhook.SecretOld), webhook.NewReceiver(t, webhook.SecretNew)
	store := postgres.NewJobStore(pool)
	q := postgres.NewQueueStore(pool).SendEvents([]string{old.URL, updated.URL})
	finish(t, q, exec, false)
	if _, err := deliverer(t, store, webhook.SecretOld+" "+webhook.SecretNew).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NOT NULL`); n != 2 {
		t.Fatalf("%d of 2 deliveries accepted while rotating", n)
	}
	for _, r := range []*webhook.Receiver{old, updated} {
		got := r.Verified()
		if len(got) != 1 || len(strings.Fields(got[0].Signature)) != 2 {
			t.Fatalf("got %+v; want one delivery with two signatures", got)
		}
	}

	// The rotation is over: the old secret signs nothing any more.
	old.ExpectRefusals()
	finish(t, q, exec, false)
	if _, err := deliverer(t, store, webhook.SecretNew).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := updated.Verified(); len(got) != 2 {
		t.Fatalf("the new secret's receiver verified %d of 2", len(got))
	}
	if refused := old.Refused(); len(refused) != 1 || !errors.Is(refused[0], standardwebhooks.ErrNoMatchingSignature) {
		t.Fatalf("the old secret's receiver refused %v; want one missing signature", refused)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE url = $1 AND delivered_at IS NULL AND last_error = 'answered 401'`, old.URL); n != 1 {
		t.Fatalf("%d refused deliveries waiting for a retry; want 1", n)
	}
}

// A receiver holding another secret refuses every delivery; the deliveries
// wait for a retry, as after any refusal.
func TestWrongSecretDoesNotVerify(t *testing.T) {
	pool, exec, count := database(t)
	r, q := refusing(t, pool, webhook.SecretOther)
	finish(t, q, exec, false)
	finish(t, q, exec, true)
	// A receiver that refuses one delivery is not tried again that round:
	// the other goes in the next.
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld+" "+webhook.SecretNew)
	for range 2 {
		if _, err := d.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if !r.RefusedAll(standardwebhooks.ErrNoMatchingSignature) || len(r.Received()) != 2 {
		t.Fatalf("received %d, refused %v; want both refused for their signature", len(r.Received()), r.Refused())
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NULL AND last_error = 'answered 401'`); n != 2 {
		t.Fatalf("%d of 2 refused deliveries wait for a retry", n)
	}
}

// What a receiver gets more than five minutes after it was signed (here: a
// deliverer whose clock is six minutes behind) does not verify.
func TestOldTimestampDoesNotVerify(t *testing.T) {
	pool, exec, _ := database(t)
	r, q := refusing(t, pool, webhook.SecretOld)
	finish(t, q, exec, false)
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	d.SetClock(func() time.Time { return time.Now().Add(-6 * time.Minute) })
	if _, err := d.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r.RefusedAll(standardwebhooks.ErrMessageTooOld) {
		t.Fatalf("refused %v; want the delivery refused as too old", r.Refused())
	}
	if ts, _ := strconv.ParseInt(r.Received()[0].Timestamp, 10, 64); time.Since(time.Unix(ts, 0)) < 5*time.Minute {
		t.Fatalf("webhook-timestamp %d is not the try's (six minutes ago)", ts)
	}
}

// The signature covers the body, the id and the timestamp: a delivery
// changed on its way (by this proxy) does not verify.
func TestTamperedDeliveryDoesNotVerify(t *testing.T) {
	for name, tamper := range map[string]func(h http.Header, body []byte) []byte{
		"body": func(_ http.Header, body []byte) []byte {
			return []byte(strings.Replace(string(body), `"job.completed"`, `"job.failed"`, 1))
		},
		"id": func(h http.Header, body []byte) []byte {
			h.Set("webhook-id", uuid.NewString())
			return body
		},
		"timestamp": func(h http.Header, body []byte) []byte {
			ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
			h.Set("webhook-timestamp", strconv.FormatInt(ts-1, 10))
			return body
		},
	} {
		t.Run(name, func(t *testing.T) {
			pool, exec, _ := database(t)
			r := webhook.NewReceiver(t, webhook.SecretOld)
			r.ExpectRefusals()
			var changed atomic.Int64
			proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				body, _ := io.ReadAll(req.Body)
				h := req.Header.Clone()
				if tampered := tamper(h, body); string(tampered) != string(body) || h.Get("webhook-id") != req.Header.Get("webhook-id") ||
					h.Get("webhook-timestamp") != req.Header.Get("webhook-timestamp") {
					changed.Add(1)
					body = tampered
				}
				fwd, _ := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(string(body)))
				fwd.Header = h
				resp, err := http.DefaultClient.Do(fwd)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				w.WriteHeader(resp.StatusCode)
			}))
			t.Cleanup(proxy.Close)
			q := postgres.NewQueueStore(pool).SendEvents([]string{proxy.URL})
			finish(t, q, exec, false)
			if _, err := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld).Once(context.Background()); err != nil {
				t.Fatal(err)
			}
			if changed.Load() != 1 || !r.RefusedAll(standardwebhooks.ErrNoMatchingSignature) {
				t.Fatalf("changed %d deliveries; refused %v; want the changed one refused for its signature", changed.Load(), r.Refused())
			}
		})
	}
}

// Many deliverers at once: each try is made by one of them.
func TestOneDelivererPerTry(t *testing.T) {
	pool, exec, _ := database(t)
	ctx := context.Background()
	r := webhook.NewReceiver(t, webhook.SecretOld)
	store := postgres.NewJobStore(pool)
	q := postgres.NewQueueStore(pool).SendEvents([]string{r.URL})
	const n = 30
	for range n {
		finish(t, q, exec, false)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := deliverer(t, store, webhook.SecretOld).Once(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var delivered int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runops_webhooks WHERE delivered_at IS NOT NULL`).Scan(&delivered); err != nil {
		t.Fatal(err)
	}
	if got := len(r.Verified()); got != delivered || delivered != n {
		t.Fatalf("%d requests for %d delivered events of %d", got, delivered, n)
	}
}

// Sign agrees with the Standard Webhooks library's own test vector, and
// signs once per key; the secrets' shape is checked as the process reads them.
func TestSignAndBackoff(t *testing.T) {
	keys, err := webhook.ParseSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got := webhook.Sign(keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`)); got != want {
		t.Fatalf("signature %q; want %q", got, want)
	}
	if got := webhook.Sign(append(keys, keys[0]), "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`)); got != want+" "+want {
		t.Fatalf("two keys signed %q", got)
	}
	for n, want := range map[int][2]time.Duration{1: {800 * time.Millisecond, 1200 * time.Millisecond}, 2: {1600 * time.Millisecond, 2400 * time.Millisecond},
		30: {48 * time.Minute, 72 * time.Minute}} {
		if d := webhook.Backoff(n); d < want[0] || d > want[1] {
			t.Errorf("backoff after %d tries: %s", n, d)
		}
	}
}

// RUNOPS_WEBHOOK_SECRET: whsec_ and the standard base64 of 24 to 64 bytes,
// one value or several space-separated; nothing else, and no error repeats
// the value.
func TestParseSecrets(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	for in, want := range map[string]int{
		webhook.SecretOld: 1, " " + webhook.SecretOld + "  " + webhook.SecretNew + "\t": 2,
		"whsec_" + b64(24): 1, "whsec_" + b64(64): 1,
	} {
		keys, err := webhook.ParseSecrets(in)
		if err != nil || len(keys) != want || len(keys[0]) < 24 {
			t.Errorf("%q: %d keys, %v", in, len(keys), err)
		}
	}
	for _, in := range []string{"", "s3cret", "whsec_", "whsec_" + b64(23), "whsec_" + b64(65),
		strings.TrimPrefix(webhook.SecretOld, "whsec_"), "whsec_" + strings.TrimRight(b64(32), "="), // unpadded
		"whsec_" + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("\xfb\xff", 16)))), // URL alphabet
		webhook.SecretOld + " s3cret", webhook.SecretOld + ",whsec_" + b64(32)} {
		keys, err := webhook.ParseSecrets(in)
		if err == nil {
			t.Errorf("%q accepted: %d keys", in, len(keys))
			continue
		}
		if f := strings.Fields(in); len(f) > 0 && len(f[len(f)-1]) > len("whsec_") && strings.Contains(err.Error(), f[len(f)-1]) {
			t.Errorf("the error repeats the secret: %v", err)
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
	if _, err := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND delivered_at IS NULL AND last_error LIKE 'answered 30%'`, string(id)); n != 2 {
		t.Fatalf("%d of 2 redirected deliveries are pending with the 3xx as their error", n)
	}
	if elsewhere.Load() != 0 {
		t.Fatalf("the redirect target got %d requests", elsewhere.Load())
	}
}

// toSilentReceiver records n events for a receiver that never answers
// (silentReceiver) and returns a deliverer whose client waits an hour for
// it, the receiver's arrivals, and the database's count.
func toSilentReceiver(t *testing.T, n int) (*webhook.Deliverer, <-chan struct{}, func(string, ...any) int) {
	pool, exec, count := database(t)
	silent, arrived := silentReceiver(t)
	q := postgres.NewQueueStore(pool).SendEvents([]string{silent.URL})
	for range n {
		finish(t, q, exec, false)
	}
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	d.Client = &http.Client{Timeout: time.Hour}
	return d, arrived, count
}

// A round ends inside the hold it took its deliveries under, whatever the
// receivers do (here: never answer, with a client timeout far beyond the
// hold); what it did not try goes back untried, due at once.
func TestARoundEndsInsideItsHold(t *testing.T) {
	d, arrived, count := toSilentReceiver(t, 5)
	d.Hold = 2 * time.Second
	if _, err := d.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(arrived); n != 1 {
		t.Fatalf("%d tries started in a round whose first try outlasted it", n)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE attempts = 1 AND next_at > now()`); n != 1 {
		t.Fatalf("%d deliveries counted as tried; want the one that was cut", n)
	}
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE attempts = 0 AND next_at <= now()`); n != 4 {
		t.Fatalf("%d deliveries returned untried; want 4", n)
	}
}

// A deliverer stopped mid-round (the process shutting down) gives its
// deliveries back untried, the one whose try it cut too: another
// deliverer sends them at once, not after the round's hold.
func TestAStoppedRoundGivesItsDeliveriesBack(t *testing.T) {
	d, arrived, count := toSilentReceiver(t, 3)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := d.Once(ctx); done <- err }()
	wait.Recv(t, arrived, "the round's first try")
	stop()
	wait.Recv(t, done, "the stopped round")
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE attempts = 0 AND next_at <= now() AND delivered_at IS NULL`); n != 3 {
		t.Fatalf("%d of 3 deliveries given back untried and due now", n)
	}
}

// A receiver removed from RUNOPS_WEBHOOK_URLS (retired, or its token
// leaked) gets nothing more: a deliverer sends only to the receivers it is
// configured with, and gives up, as it starts, the pending events of any
// other that are past the day a delivery is tried for, saying why; a
// younger one it leaves (a worker of an older list, started in a rollout,
// must not give up a new receiver's events). Before, the removed URL got
// every pending event for 24 hours, signed.
func TestARemovedReceiverGetsNothingMore(t *testing.T) {
	pool, exec, count := database(t)
	kept, removed := webhook.NewReceiver(t, webhook.SecretOld), webhook.NewReceiver(t, webhook.SecretOld)
	q := postgres.NewQueueStore(pool).SendEvents([]string{kept.URL, removed.URL})
	for range 3 {
		finish(t, q, exec, false)
	}
	exec(`UPDATE runops_webhooks SET created_at = now() - interval '25 hours'
	  WHERE url = $1 AND event_id = (SELECT min(event_id::text)::uuid FROM runops_webhooks WHERE url = $1)`, removed.URL)
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	d.URLs = []string{kept.URL}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()
	wait.For(t, "the removed receiver's day-old event given up", 30*time.Second, func() bool {
		return count(`SELECT count(*) FROM runops_webhooks WHERE url = $1 AND given_up_at IS NOT NULL AND last_error = 'its URL is no longer in RUNOPS_WEBHOOK_URLS'`, removed.URL) == 1
	})
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE url = $1 AND given_up_at IS NULL AND delivered_at IS NULL`, removed.URL); n != 2 {
		t.Errorf("%d of the removed receiver's younger events left pending; want 2", n)
	}
	stop()
	wait.Recv(t, ran, "the deliverer's end")
	deliverUntil(t, d, "the kept receiver's events", func() bool { return len(kept.Verified()) == 3 })
	if got := removed.Verified(); len(got) != 0 {
		t.Fatalf("the removed receiver got %d events", len(got))
	}
}

// A job whose created_at a person set by hand (a time job-status clamps),
// or whose timings they filled with what is not a whole number, still ends
// in an event as the OpenAPI document's JobEventData describes it: an RFC
// 3339 data.created_at (the nearest time it can say), timings of whole
// numbers. Before, "infinity", a five-digit year or a date BC went out as
// PostgreSQL printed them.
func TestEventsAreAsDescribedWhateverThePersonWrote(t *testing.T) {
	for _, created := range []string{"infinity", "10000-01-01 00:00:00+00", "0001-01-01 00:00:00+00 BC", "-infinity"} {
		t.Run(created, func(t *testing.T) {
			pool, exec, _ := database(t)
			r := webhook.NewReceiver(t, webhook.SecretOld)
			q := postgres.NewQueueStore(pool).SendEvents([]string{r.URL})
			id := jobs.ID(uuid.NewString())
			exec(`INSERT INTO jobs (job_id) VALUES ($1)`, string(id))
			got, err := q.Claim(context.Background(), "w", 1, time.Minute)
			if err != nil || len(got) != 1 {
				t.Fatalf("claim: %v %v", got, err)
			}
			exec(`UPDATE jobs SET created_at = $2::timestamptz, metadata = metadata || '{"timings": {"probing_ms": 5, "odd_ms": "x", "half_ms": 1.5}}' WHERE job_id = $1`, string(id), created)
			ok, err := q.Finish(context.Background(), queue.Outcome{ID: id, Token: got[0].Token, Status: jobs.StatusCompleted,
				Patch: map[string]any{"timings": map[string]any{"extracting_ms": 7}}})
			if err != nil || !ok {
				t.Fatalf("outcome: %v %v", ok, err)
			}
			data := deliveredOnce(t, pool, r)
			ts, _ := data["created_at"].(string)
			if _, err := time.Parse(time.RFC3339, ts); err != nil {
				t.Fatalf("data.created_at %q is not an RFC 3339 date-time (%v)", ts, err)
			}
			if timings, _ := data["timings"].(map[string]any); len(timings) != 2 || timings["probing_ms"] != float64(5) || timings["extracting_ms"] != float64(7) {
				t.Errorf("data.timings %v; want the whole numbers alone", data["timings"])
			}
		})
	}
}

// A receiver's URL as logs, stored errors and the CLI show it: scheme and
// host, no user, password, path or query, where tokens ride (Slack's and
// Discord's in the path, Telegram's in its first folder).
func TestShownURLHidesWhereTokensRide(t *testing.T) {
	for raw, want := range map[string]string{
		"https://hooks.example.com":                                             "https://hooks.example.com",
		"https://hooks.example.com/":                                            "https://hooks.example.com",
		"https://hooks.example.com/runops":                                      "https://hooks.example.com/…",
		"https://hooks.slack.com/services/T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX": "https://hooks.slack.com/…",
		"https://api.telegram.org/bot123456:ABCsecret/sendMessage":              "https://api.telegram.org/…",
		"https://user:pa55word@example.com:8443/hook?token=abc#frag":            "https://example.com:8443/…?…",
		"https://TOKEN@example.com":                                             "https://example.com",
		"::not a url":                                                           "(a URL that does not parse)",
	} {
		if got := webhook.ShownURL(raw); got != want {
			t.Errorf("ShownURL(%q) = %q; want %q", raw, got, want)
		}
	}
}

// A job that fails never completed: its job.failed event's completed_at is
// null (the outbox row says so, and the OpenAPI document allows it), and is
// sent so. The first dataAsDescribed sent the last time RFC 3339 can say.
func TestAFailedJobsEventSaysItNeverCompleted(t *testing.T) {
	pool, exec, count := database(t)
	r := webhook.NewReceiver(t, webhook.SecretOld)
	q := postgres.NewQueueStore(pool).SendEvents([]string{r.URL})
	id := finish(t, q, exec, true)
	if n := count(`SELECT count(*) FROM runops_webhooks WHERE job_id = $1 AND body->'completed_at' = 'null'::jsonb`, string(id)); n != 1 {
		t.Fatalf("%d rows whose completed_at is null", n)
	}
	if got, ok := deliveredOnce(t, pool, r)["completed_at"]; !ok || got != nil {
		t.Errorf("data.completed_at %v (present %v); want null", got, ok)
	}
}

// deliveredOnce runs a round and returns the data of the one delivery r
// verified in it.
func deliveredOnce(t *testing.T, pool *pgxpool.Pool, r *webhook.Receiver) map[string]any {
	t.Helper()
	if _, err := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := r.Verified()
	if len(v) != 1 {
		t.Fatalf("%d deliveries verified", len(v))
	}
	return v[0].Data()
}

// A round takes up to 20 of each receiver, oldest first, and a receiver
// that fails one has its others go in the next (docs/operations.md). A
// receiver with 45 events due that fails the first once: the 19 events the
// round gave back are the oldest due, and the next round sends them first.
// It sent events 21 to 40 instead, before 2 to 20: the returned rows'
// next_at became now(), behind the rows never taken.
func TestEventsGivenBackGoFirstInTheNextRound(t *testing.T) {
	pool, exec, _ := database(t)
	r := webhook.NewReceiver(t, webhook.SecretOld)
	q := postgres.NewQueueStore(pool).SendEvents([]string{r.URL})
	var ids []jobs.ID
	for range 45 {
		ids = append(ids, finish(t, q, exec, false))
	}
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	r.Fail.Store(1) // one 500: the first event of the first round
	for range 2 {
		if _, err := d.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := r.Received()
	if len(got) < 2 {
		t.Fatalf("%d requests", len(got))
	}
	if first := got[0].Data()["job_id"]; first != string(ids[0]) {
		t.Fatalf("round 1 began with %v; want event 1", first)
	}
	index := map[string]int{}
	for i, id := range ids {
		index[string(id)] = i + 1
	}
	var order []int
	for _, g := range got[1:] {
		order = append(order, index[g.Data()["job_id"].(string)])
	}
	if len(order) < 19 || !slices.Equal(order[:19], []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}) {
		t.Fatalf("after event 1 failed, events went in the order %v; want 2 to 20 first (the oldest due)", order)
	}
}
