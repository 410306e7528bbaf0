package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/supabasetest"
)

// statusQuery is what job-status answers, as one statement: the database's
// pace in BenchmarkAPI.
const statusQuery = `SELECT status, created_at, updated_at, completed_at, error, metadata->>'stage', metadata->'progress'
FROM public.jobs WHERE job_id = '%s';`

// benchMetadata is a finished job's metadata as a worker leaves it: three
// attempts, timings, the slim copy, frames and the privacy pass (about
// 3 kB), which job-status does not answer with.
func benchMetadata(owner string) string {
	var b strings.Builder
	b.WriteString(`{"stage": "uploading_sop", "progress": 1, "attempt": 3, "queued_at": "2026-12-06T10:00:00Z",`)
	if owner != "" {
		fmt.Fprintf(&b, `"owner": %q,`, owner)
	}
	b.WriteString(`"attempts": [`)
	for i := range 3 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"n": %d, "worker": "worker-7f9c-%d", "token": "%s", "started_at": "2026-12-06T10:0%d:00Z",
			"ended_at": "2026-12-06T10:0%d:30Z", "outcome": "lost", "error": "The worker stopped answering; the job was given to another."}`,
			i+1, i, uuid.NewString(), i, i)
	}
	b.WriteString(`], "timings": {`)
	for i, st := range []string{"downloading", "probing", "transcoding", "uploading_slim", "gemini_upload", "gemini_processing",
		"extracting", "validating", "frames", "redacting", "uploading_sop"} {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `%q: {"seconds": %d.25, "started_at": "2026-12-06T10:1%d:00Z"}`, st, i+1, i%10)
	}
	b.WriteString(`}, "slim": {"path": "slim/x.mp4", "size_bytes": 1048576, "duration_s": 312.5, "frames": 313,
		"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		"frames": {"count": 12, "missing": [{"node": "d1", "reason": "a decision has no screenshot"}]},
		"privacy": {"text": {"replaced": 4, "kinds": {"email": 2, "api_key": 1, "phone": 1}},
		"screenshots": {"read": 12, "covered": 7, "boxes": 31, "seconds": 9.5}},
		"gemini": {"model": "gemini-flash", "tokens": {"prompt": 1200, "video": 81000, "output": 4200}}}`)
	return b.String()
}

// BenchmarkAPI measures the API at its busiest: every open viewer polls
// job-status every 3 s and reads the SOP. `runops serve` answers wrk -t2
// -c32 (32 keep-alive connections at once); before each load, in the same
// run, pgbench -c 16 -j 2 runs job-status's own statement on the same
// database: -M prepared is the database's pace, which the ratios are taken
// against, and -M extended parses and plans it at every call, as the
// service sends every statement (OpenPool, for the poolers' sake). Loads:
// job-status of an anonymous job, of an owned job with its owner's token,
// the SOP, and the SOP revalidated with If-None-Match. Each reports
// requests/s, p50/p99, the ratios and the server's allocations per request
// (its go_memstats_mallocs_total). RUNOPS_BENCH_BINARY runs another build
// (an earlier release) instead; RUNOPS_BENCH_EXEC_MODE=cache_statement
// gives the server named prepared statements (a direct connection).
//
//	go test -run '^$' -bench API -benchtime 1x ./cmd/runops/
func BenchmarkAPI(b *testing.B) {
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		b.Fatal("pgbench is needed (Debian package postgresql-client): ", err)
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Fatal("wrk is needed (Debian package wrk): ", err)
	}
	span := 5 * time.Second
	if testing.Short() {
		span = time.Second // wrk counts whole seconds
	}
	const secret = "a-benchmarks-jwt-secret-of-at-least-32-characters"
	d, dsn := newDB(b)
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	anon, owned, owner := uuid.NewString(), uuid.NewString(), uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, status, completed_at, metadata) VALUES
		($1, 'completed', now(), $2::jsonb), ($3, 'completed', now(), $4::jsonb)`, anon, benchMetadata(""), owned, benchMetadata(owner))
	d.exec(`INSERT INTO runops_uploads (job_id, owner) VALUES ($1, $2) ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner`, owned, owner)
	// Stored as every writer stores one, with its tag recorded.
	// RUNOPS_BENCH_BINARY: another build of runops (an earlier release), to
	// compare in the same run; its answers are not held to today's.
	bin, other := binary(b), os.Getenv("RUNOPS_BENCH_BINARY")
	if other != "" {
		bin = other
	}
	complete := exec.Command(bin, "jobs", "complete", anon, "--sop", "../../docs/sample-sop.json")
	complete.Env = append(os.Environ(), "DATABASE_URL="+dsn, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey())
	if out, err := complete.CombinedOutput(); err != nil {
		b.Fatalf("runops jobs complete: %v\n%s", err, out)
	}
	// The product's default (safe behind a transaction pooler: each
	// statement planned at every call), and named prepared statements, which
	// a direct connection allows (docs/operations.md).
	mode := os.Getenv("RUNOPS_BENCH_EXEC_MODE")
	serveDSN := dsn
	if mode != "" {
		serveDSN += "&default_query_exec_mode=" + mode
		if !strings.Contains(dsn, "?") {
			serveDSN = dsn + "?default_query_exec_mode=" + mode
		}
	}
	p := launch(b, bin, "serve", serveDSN, fake, "RUNOPS_RATE_LIMIT=off", "SUPABASE_JWT_SECRET="+secret)
	waitReady(b, p.base)
	user, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": owner, "aud": "authenticated",
		"role": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		b.Fatal(err)
	}
	client := http.DefaultClient // its exchanges held to the OpenAPI document (apitest)
	etag := get(b, client, p.base+"/api/sop/"+anon, nil).Header.Get("ETag")
	if etag == "" {
		b.Fatal("the SOP came without an ETag")
	}

	script := filepath.Join(b.TempDir(), "status.sql")
	if err := os.WriteFile(script, fmt.Appendf(nil, statusQuery, anon), 0o644); err != nil {
		b.Fatal(err)
	}
	loads := []struct {
		name   string
		path   string
		header http.Header
		status int
	}{
		{"job-status/anonymous", "/api/job-status/" + anon, nil, 200},
		{"job-status/owned", "/api/job-status/" + owned, http.Header{"Authorization": {"Bearer " + user}}, 200},
		{"sop", "/api/sop/" + anon, nil, 200},
		{"sop/revalidated", "/api/sop/" + anon, http.Header{"If-None-Match": {etag}}, 304},
	}
	for _, load := range loads {
		b.Run(load.name, func(b *testing.B) {
			var db, unprepared float64
			var r loadResult
			if got := status(b, client, p.base+load.path, load.header); got != load.status && other == "" {
				b.Fatalf("GET %s: %d, want %d", load.path, got, load.status)
			}
			for range b.N {
				db = pgbenchRate(b, pgbench, dsn, script, "prepared", span)
				unprepared = pgbenchRate(b, pgbench, dsn, script, "extended", span)
				mallocs := serverMallocs(b, client, p.base)
				r = hammer(b, wrk, p.base+load.path, load.header, span)
				r.allocs = (serverMallocs(b, client, p.base) - mallocs) / r.n
			}
			b.ReportMetric(db, "db-queries/s")
			b.ReportMetric(unprepared, "db-unprepared/s")
			b.ReportMetric(r.rate/unprepared, "ratio-to-unprepared")
			b.ReportMetric(r.rate, "requests/s")
			b.ReportMetric(r.rate/db, "ratio-to-db")
			b.ReportMetric(float64(r.p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(r.allocs, "server-allocs/req")
			b.ReportMetric(0, "ns/op")
		})
	}
	// Edits of the SOP, one after another: each a PATCH that takes the SOP
	// lock, reads the SOP from storage, stores it and records its tag.
	b.Run("sop/edit", func(b *testing.B) {
		var rate float64
		for range b.N {
			n, start := 0, time.Now()
			for time.Since(start) < span {
				body := fmt.Sprintf(`{"type":"update","nodeId":"open","updates":{"label":"Open the order %d"}}`, n)
				req, _ := http.NewRequest("PATCH", p.base+"/api/sop/"+anon, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("PATCH %d: %d", n, resp.StatusCode)
				}
				n++
			}
			rate = float64(n) / time.Since(start).Seconds()
			resp, err := client.Get(p.base + "/api/sop/" + anon)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("Open the order %d", n-1); !strings.Contains(string(body), want) {
				b.Fatalf("the last edit (%q) is not what the SOP serves", want)
			}
		}
		b.ReportMetric(rate, "edits/s")
		b.ReportMetric(0, "ns/op")
	})
}

// status is the status a GET of url answers, its body read.
func status(b *testing.B, client *http.Client, url string, header http.Header) int {
	b.Helper()
	return get(b, client, url, header).StatusCode
}

// get answers a GET, its body read.
func get(b *testing.B, client *http.Client, url string, header http.Header) *http.Response {
	b.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	return resp
}

type loadResult struct {
	n        float64
	rate     float64
	p50, p99 time.Duration
	allocs   float64
}

var (
	wrkRate    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkTotal   = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)`)
	wrkErrors  = regexp.MustCompile(`(?m)^\s*(Non-2xx or 3xx responses|Socket errors):.*$`)
)

// hammer runs wrk -t2 -c32 against url for span (each connection sends a
// request after the previous one's answer) and reads its figures. A
// request that failed or was answered 4xx/5xx fails the benchmark.
func hammer(b *testing.B, wrk, url string, header http.Header, span time.Duration) loadResult {
	b.Helper()
	args := []string{"-t2", "-c32", "-d" + strconv.Itoa(int(span/time.Second)) + "s", "--latency"}
	for k, vs := range header {
		for _, v := range vs {
			args = append(args, "-H", k+": "+v)
		}
	}
	out, err := exec.Command(wrk, append(args, url)...).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if m := wrkErrors.Find(out); m != nil {
		b.Fatalf("wrk: %s\n%s", m, out)
	}
	rate, total := wrkRate.FindSubmatch(out), wrkTotal.FindSubmatch(out)
	if rate == nil || total == nil {
		b.Fatalf("wrk said no rate:\n%s", out)
	}
	r := loadResult{}
	r.rate, _ = strconv.ParseFloat(string(rate[1]), 64)
	r.n, _ = strconv.ParseFloat(string(total[1]), 64)
	for _, m := range wrkLatency.FindAllSubmatch(out, -1) {
		d, err := time.ParseDuration(string(m[2]) + string(m[3]))
		if err != nil {
			b.Fatal(err)
		}
		if string(m[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	return r
}

var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)

// pgbenchRate runs script with pgbench -M mode -c 16 -j 2 for span and
// returns its transactions per second.
func pgbenchRate(b *testing.B, pgbench, dsn, script, mode string, span time.Duration) float64 {
	b.Helper()
	secs := max(1, int(span.Round(time.Second)/time.Second))
	out, err := exec.Command(pgbench, "-n", "-M", mode, "-c", "16", "-j", "2", "-T", strconv.Itoa(secs), "-f", script, dsn).CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench: %v\n%s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		b.Fatalf("pgbench said no tps:\n%s", out)
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		b.Fatal(err)
	}
	return tps
}

// serverMallocs is the server's go_memstats_mallocs_total.
func serverMallocs(b *testing.B, client *http.Client, base string) float64 {
	b.Helper()
	f := scrape(b, client, base)["go_memstats_mallocs_total"]
	if f == nil {
		b.Fatalf("no go_memstats_mallocs_total at %s/metrics", base)
	}
	return f.GetMetric()[0].GetCounter().GetValue()
}
