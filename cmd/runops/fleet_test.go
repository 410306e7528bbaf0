package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

// startFleet starts n real `runops worker` processes together (none waits
// for another to be ready) against pooled, with LISTEN connections to direct,
// on storage that has no uploads (every job ends at once), and waits until
// each answers /readyz. They are killed when the test ends.
func startFleet(tb testing.TB, n int, pooled, direct string, fake *supabasetest.Server, extra ...string) []*proc {
	tb.Helper()
	bin := binary(tb)
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = start(tb, bin, "worker", pooled, fake, append([]string{"RUNOPS_LISTEN_DATABASE_URL=" + direct,
			"RUNOPS_REDACT=off", "RUNOPS_WORKER_CONCURRENCY=2"}, extra...)...)
	}
	for _, p := range procs {
		p.listening(tb)
		waitReady(tb, p.base)
	}
	return procs
}

// listenerCheck is what the process's /readyz says of its listener while
// it is ready ("" while it is not: a worker given a slot is connecting).
func (p *proc) listenerCheck(tb testing.TB) string {
	tb.Helper()
	if code, checks := readyz(tb, p.base); code == http.StatusOK {
		return checks["listener"]
	}
	return ""
}

// refusedLogin is what PgBouncer logs when PostgreSQL refuses one of its
// server logins (too many connections for the role, or for the server).
var refusedLogin = regexp.MustCompile(`(?i)login failed|too many (connections|clients)|no more connections`)

// Thirty workers start together on a role PostgreSQL allows 27 connections,
// behind a transaction-mode PgBouncer with 8 server connections (which come
// out of the same 27): the listeners take no more than their slots
// (RUNOPS_LISTENERS: by default 16, at most 66% of 27 = 17), so the pooler's
// logins are never refused; the others poll through it and say so; a burst of 600 jobs is
// claimed once each, and no worker exits.
func TestListenersNeverStarveThePool(t *testing.T) {
	d, admin := newDB(t)
	role := pgtest.Role(t, admin, 27)
	pooler := pgtest.NewBouncer(t, role, 8)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fleet := startFleet(t, 30, pooler.URL, role, fake, "RUNOPS_SWEEP=1s")

	listening, polling := 0, 0
	wait.For(t, "every worker to hold a listener slot or to say it has none", time.Minute, func() bool {
		listening, polling = 0, 0
		for _, p := range fleet {
			switch c := p.listenerCheck(t); {
			case c == "ok":
				listening++
			case strings.Contains(c, "all 16 listener slots are taken"):
				polling++
			}
		}
		return listening+polling == len(fleet)
	}, func() string { return pooler.Log() })
	if listening != 16 || polling != 14 {
		t.Fatalf("%d listening, %d polling; want 16 and 14", listening, polling)
	}

	queuetest.Burst(t, d.pool, 600)
	d.waitFor("600 jobs ended", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE status IN ('completed', 'error')`).(int64) == 600
	})
	if n := d.scalar(`SELECT count(*) FROM jobs WHERE metadata->>'attempt' <> '1'
		OR jsonb_array_length(metadata->'attempts') <> 1`).(int64); n != 0 {
		t.Errorf("%d jobs were claimed more than once", n)
	}
	if refused := refusedLogin.FindAllString(pooler.Log(), -1); len(refused) > 0 {
		t.Errorf("PgBouncer's logins were refused %d times:\n%s", len(refused), pooler.Log())
	}
	for i, p := range fleet {
		if p.exited() {
			t.Errorf("worker %d exited: %v", i, <-p.done)
		}
	}
}

// readyz is the process's /readyz: its status code and what each check says.
func readyz(t testing.TB, base string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Checks
}

// A database that refuses new connections (SQLSTATE 53300, too many
// clients) at start or later is waited out: the process stays up and says
// why (/readyz; 503 with Retry-After on the API), and once connections free
// up it is ready again and runs the jobs queued meanwhile, once each.
func TestRefusedConnectionsAreWaitedOut(t *testing.T) {
	d, admin := newDB(t)
	role := pgtest.Role(t, admin, 0) // every login of the service refused
	u, _ := url.Parse(role)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	p := launch(t, binary(t), "serve", role, fake, "RUNOPS_REDACT=off", "RUNOPS_SWEEP=500ms", "RUNOPS_RATE_LIMIT=off")

	refused := func(when string) {
		t.Helper()
		wait.For(t, when+": /readyz saying the database refuses connections", time.Minute, func() bool {
			code, checks := readyz(t, p.base)
			return code == http.StatusServiceUnavailable && strings.Contains(checks["database"], "53300")
		})
		resp, err := http.Post(p.base+"/api/get-upload-url", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(body["error"], "connection") {
			t.Fatalf("%s: the API answered %d, Retry-After %q: %v", when, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
		if p.exited() {
			t.Fatalf("%s: the process exited: %v", when, <-p.done)
		}
	}
	ended := func(id string) {
		t.Helper()
		d.waitFor("job "+id+" to end", func() bool {
			return d.scalar(`SELECT count(*) FROM jobs WHERE job_id = $1 AND status IN ('completed', 'error')`, id).(int64) == 1
		})
		if d.scalar(`SELECT jsonb_array_length(metadata->'attempts')::bigint FROM jobs WHERE job_id = $1`, id) != int64(1) {
			t.Errorf("job %s: not run once: %v", id, d.scalar(`SELECT metadata->'attempts' FROM jobs WHERE job_id = $1`, id))
		}
	}

	// A job queued while connections are refused runs once they free up.
	queuedMeanwhile := func() {
		t.Helper()
		id := uuid.NewString()
		d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, id)
		pgtest.SetConnectionLimit(t, admin, role, -1)
		waitReady(t, p.base)
		ended(id)
	}
	refused("at start")
	queuedMeanwhile()
	// Later: no new connection allowed, and the open ones closed.
	pgtest.SetConnectionLimit(t, admin, role, 0)
	d.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, u.User.Username())
	refused("later")
	queuedMeanwhile()
}
