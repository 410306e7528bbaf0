package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
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
// job-status every 3 s and reads the SOP. `runops serve` answers 32
// keep-alive connections at once (as wrk -t2 -c32 does), for as long as
// pgbench -M prepared -c 16 -j 2 runs job-status's own statement on the
// same database, before it, in the same run: the database's pace, which
// the ratios are taken against. Loads: job-status of an anonymous job, of
// an owned job with its owner's token, the SOP, and the SOP revalidated
// with If-None-Match. Each reports requests/s, p50/p99, the ratio to the
// database's pace and the server's allocations per request (its
// go_memstats_mallocs_total).
//
//	go test -run '^$' -bench API -benchtime 1x ./cmd/runops/
func BenchmarkAPI(b *testing.B) {
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		b.Fatal("pgbench is needed (Debian package postgresql-client): ", err)
	}
	span := 5 * time.Second
	if testing.Short() {
		span = 500 * time.Millisecond
	}
	const secret = "a-benchmarks-jwt-secret-of-at-least-32-characters"
	d, dsn := newDB(b)
	fake := supabasetest.New(b, jobs.MaxUploadBytes)
	anon, owned, owner := uuid.NewString(), uuid.NewString(), uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, status, completed_at, metadata) VALUES
		($1, 'completed', now(), $2::jsonb), ($3, 'completed', now(), $4::jsonb)`, anon, benchMetadata(""), owned, benchMetadata(owner))
	d.exec(`INSERT INTO runops_uploads (job_id, owner) VALUES ($1, $2) ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner`, owned, owner)
	sample, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		b.Fatal(err)
	}
	fake.Put("videos/sops/"+anon+".json", sample, "application/json")
	p := launch(b, binary(b), "serve", dsn, fake, "RUNOPS_RATE_LIMIT=off", "SUPABASE_JWT_SECRET="+secret)
	waitReady(b, p.base)
	user, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": owner, "aud": "authenticated",
		"role": "authenticated", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, MaxConnsPerHost: 32}}
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
		{"sop/revalidated", "/api/sop/" + anon, http.Header{"If-None-Match": {etag}}, 0},
	}
	for _, load := range loads {
		b.Run(load.name, func(b *testing.B) {
			var db float64
			var r loadResult
			for range b.N {
				db = pgbenchRate(b, pgbench, dsn, script, span)
				mallocs := serverMallocs(b, client, p.base)
				r = hammer(b, client, p.base+load.path, load.header, load.status, span)
				r.allocs = (serverMallocs(b, client, p.base) - mallocs) / float64(r.n)
			}
			b.ReportMetric(db, "db-queries/s")
			b.ReportMetric(r.rate, "requests/s")
			b.ReportMetric(r.rate/db, "ratio-to-db")
			b.ReportMetric(float64(r.p50.Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(r.p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(r.allocs, "server-allocs/req")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// get answers a GET that must succeed.
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
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return resp
}

type loadResult struct {
	n        int
	rate     float64
	p50, p99 time.Duration
	allocs   float64
}

// hammer sends GET url from 32 connections at once for span, each request
// after the previous one's answer, and times them. Every answer must have
// status want (0: any 2xx or 304).
func hammer(b *testing.B, client *http.Client, url string, header http.Header, want int, span time.Duration) loadResult {
	b.Helper()
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(span)
	for range 32 {
		wg.Go(func() {
			var mine []time.Duration
			defer func() {
				mu.Lock()
				took = append(took, mine...)
				mu.Unlock()
			}()
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", url, nil)
				for k, v := range header {
					req.Header[k] = v
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || (want != 0 && resp.StatusCode != want) || (want == 0 && resp.StatusCode >= 400) {
					b.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(took) == 0 {
		b.Fatal("no request answered")
	}
	slices.Sort(took)
	return loadResult{n: len(took), rate: float64(len(took)) / elapsed.Seconds(), p50: took[len(took)/2], p99: took[len(took)*99/100]}
}

var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)

// pgbenchRate runs script with pgbench -M prepared -c 16 -j 2 for span and
// returns its transactions per second.
func pgbenchRate(b *testing.B, pgbench, dsn, script string, span time.Duration) float64 {
	b.Helper()
	secs := max(1, int(span.Round(time.Second)/time.Second))
	out, err := exec.Command(pgbench, "-n", "-M", "prepared", "-c", "16", "-j", "2", "-T", strconv.Itoa(secs), "-f", script, dsn).CombinedOutput()
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
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no go_memstats_mallocs_total at %s/metrics", base)
	return 0
}
