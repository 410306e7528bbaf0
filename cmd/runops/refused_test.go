package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
)

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
	addr := freeAddr(t)
	cmd := exec.Command(binary(t), "serve")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+role, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey(),
		"GEMINI_API_KEY=k", "RUNOPS_ADDR="+addr, "RUNOPS_TMPDIR="+t.TempDir(), "RUNOPS_REDACT=off", "RUNOPS_SWEEP=500ms",
		"RUNOPS_RATE_LIMIT=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &fleetProc{cmd: cmd, done: make(chan error, 1), base: "http://" + addr}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })

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
		if n := d.scalar(`SELECT jsonb_array_length(metadata->'attempts') FROM jobs WHERE job_id = $1`, id); n != int32(1) && n != int64(1) {
			t.Errorf("job %s: %v attempts", id, n)
		}
	}

	refused("at start")
	first := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, first)
	pgtest.SetConnectionLimit(t, admin, role, -1)
	waitReady(t, p.base)
	ended(first)

	// Later: no new connection allowed, and the open ones closed.
	pgtest.SetConnectionLimit(t, admin, role, 0)
	d.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, u.User.Username())
	refused("later")
	second := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, second)
	pgtest.SetConnectionLimit(t, admin, role, -1)
	waitReady(t, p.base)
	ended(second)
}
