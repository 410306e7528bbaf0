package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/runops/runops/internal/child"
	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/sop/soptest"
	"github.com/runops/runops/internal/supabasetest"
	"github.com/runops/runops/internal/wait"
	"github.com/runops/runops/supabase"
)

// proc is a runops process a test started (start, launch), killed when
// the test ends.
type proc struct {
	cmd  *exec.Cmd
	done chan error // its exit, once
	base string     // http://<the address it listens on>, once known (listening)

	addr chan string // the address of its "listening" log line
	mu   sync.Mutex
	logs child.Tail // the end of what it logged, for a failure's message
}

// start starts runops command against the database at dsn and the storage
// stand-in fake. It listens on a port the kernel chooses (RUNOPS_ADDR
// 127.0.0.1:0) and says which in its log: a port chosen by the test could
// be taken by then (many processes, many outgoing connections), and two
// processes would answer as one.
func start(t testing.TB, bin, command, dsn string, fake *supabasetest.Server, extra ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, command)
	cmd.Env = append(append(os.Environ(), "DATABASE_URL="+dsn, "SUPABASE_URL="+fake.URL, "SUPABASE_SERVICE_ROLE_KEY="+fake.ServiceRoleKey(),
		"GEMINI_API_KEY=test-key", "RUNOPS_ADDR=127.0.0.1:0", "RUNOPS_TMPDIR="+t.TempDir()), extra...)
	cmd.Env = append(cmd.Env, "RUNOPS_LOG_FORMAT=json") // after extra: the address is read from JSON lines
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan error, 1), addr: make(chan string, 1), logs: child.Tail{Max: 8 << 10}}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		found := false
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if !found && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				p.addr <- line.Addr
				found = true
			}
			p.mu.Lock()
			_, _ = p.logs.Write(append(sc.Bytes(), '\n'))
			p.mu.Unlock()
		}
		close(p.addr)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	return p
}

// listening waits for the process to say where it listens, and sets base.
func (p *proc) listening(t testing.TB) {
	t.Helper()
	select {
	case addr, ok := <-p.addr:
		if !ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Fatalf("runops exited before listening:\n%s", p.logs.String())
		}
		p.base = "http://" + addr
	case <-time.After(30 * time.Second):
		t.Fatal("runops not listening after 30 s")
	}
}

// launch is start, once the process listens.
func launch(t testing.TB, bin, command, dsn string, fake *supabasetest.Server, extra ...string) *proc {
	t.Helper()
	p := start(t, bin, command, dsn, fake, extra...)
	p.listening(t)
	return p
}

// exited tells whether the process has ended.
func (p *proc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// workerProc is a real worker process running the recording test handler,
// with a Gemini stand-in that answers once.
type workerProc struct {
	*proc
	fake *supabasetest.Server // the storage it uses
}

func startWorker(t testing.TB, bin, dsn string, extra ...string) *workerProc {
	t.Helper()
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	ai := geminitest.New(t, "test-key")
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	p := launch(t, bin, "worker", dsn, fake, append([]string{recordingEnv, "GOOGLE_GEMINI_BASE_URL=" + ai.URL,
		"RUNOPS_WORKER_CONCURRENCY=2", "RUNOPS_LEASE_TTL=2s", "RUNOPS_HEARTBEAT=300ms", "RUNOPS_SWEEP=500ms",
		"RUNOPS_SHUTDOWN_GRACE=5s"}, extra...)...)
	waitReady(t, p.base)
	return &workerProc{proc: p, fake: fake}
}

func (p *proc) waitExit(t testing.TB) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not exit")
		return nil
	}
}

type db struct {
	t    testing.TB
	pool *pgxpool.Pool
}

func newDB(t testing.TB) (*db, string) {
	pool, dsn := pgtest.Pool(t)
	d := &db{t: t, pool: pool}
	d.exec(queuetest.RunsTable)
	return d, dsn
}

func (d *db) exec(sql string, args ...any) {
	d.t.Helper()
	if _, err := d.pool.Exec(context.Background(), sql, args...); err != nil {
		d.t.Fatal(err)
	}
}

func (d *db) scalar(sql string, args ...any) (v any) {
	d.t.Helper()
	if err := d.pool.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func (d *db) waitFor(what string, cond func() bool) {
	d.t.Helper()
	wait.For(d.t, what, 90*time.Second, cond)
}

func TestWorkerProcessesSurviveSIGKILL(t *testing.T) {
	bin := recordingBinary(t)
	d, dsn := newDB(t)
	procs := map[int]*workerProc{}
	for range 3 {
		p := startWorker(t, bin, dsn)
		procs[p.cmd.Process.Pid] = p
	}
	held := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, metadata) VALUES ($1, '{"test_hold": true}')`, held)
	const n = 60
	for range n {
		d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, uuid.NewString())
	}
	d.waitFor("the held job to start", func() bool {
		return d.scalar(`SELECT count(*) FROM test_runs WHERE job_id = $1`, held).(int64) == 1
	})
	pid, _ := strconv.Atoi(d.scalar(`SELECT worker FROM test_runs WHERE job_id = $1`, held).(string))
	victim := procs[pid]
	if victim == nil {
		t.Fatalf("pid %d is not one of ours", pid)
	}
	// The worker that holds the fleet's housekeeping duty (the rescue of
	// expired leases) dies too, when it is another: the last one must take
	// the duty over to rescue the held job.
	d.waitFor("a worker to hold the housekeeping duty", func() bool {
		return d.scalar(`SELECT count(*) FROM runops_duties WHERE duty = 'housekeeping' AND expires_at > now()`).(int64) == 1
	})
	holder := d.scalar(`SELECT holder FROM runops_duties WHERE duty = 'housekeeping'`).(string)
	dutyPID, _ := strconv.Atoi(strings.Split(holder, ":")[1]) // host:pid:id
	victims := []*workerProc{victim}
	if p := procs[dutyPID]; p != nil && p != victim {
		victims = append(victims, p)
	}
	t.Logf("killing %d workers: the held job's and the duty's", len(victims))
	for _, v := range victims {
		if err := v.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		v.waitExit(t)
	}
	d.waitFor("every job completed", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE status = 'completed'`).(int64) == n+1
	})
	if o := d.scalar(`SELECT count(*) FROM test_runs WHERE overlapped`).(int64); o != 0 {
		t.Fatalf("%d overlapping runs", o)
	}
	if a := d.scalar(`SELECT metadata->>'attempt' FROM jobs WHERE job_id = $1`, held); a != "2" {
		t.Fatalf("held job attempt %v; want 2 (the killed claim counts)", a)
	}
	if o := d.scalar(`SELECT metadata->'attempts'->0->>'outcome' FROM jobs WHERE job_id = $1`, held); o != "lost" {
		t.Fatalf("first attempt outcome %v", o)
	}
	for pid, p := range procs {
		if slices.Contains(victims, p) {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.waitExit(t); err != nil {
			t.Fatalf("worker %d after SIGTERM: %v", pid, err)
		}
	}
}

func TestWorkerSIGTERMHandsBackSlowJob(t *testing.T) {
	d, p, id := holdThenSIGTERM(t, "300ms")
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	var status, attempt, outcome string
	if err := d.pool.QueryRow(context.Background(), `SELECT status, metadata->>'attempt', metadata->'attempts'->0->>'outcome' FROM jobs WHERE job_id=$1`, id).
		Scan(&status, &attempt, &outcome); err != nil {
		t.Fatal(err)
	}
	if status != "queued" || attempt != "0" || outcome != "handed_back" {
		t.Fatalf("after SIGTERM: %s attempt %s outcome %s", status, attempt, outcome)
	}
}

func TestWorkerWithoutGeminiKeyRefusesToStart(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "worker")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SUPABASE_SERVICE_ROLE_KEY=k"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "GEMINI_API_KEY") {
		t.Fatalf("%v %s", err, out)
	}
}

func TestWorkerBinaryRunsThePipeline(t *testing.T) {
	d, dsn := newDB(t)
	p := startWorker(t, binary(t), dsn)
	video := mediatest.Make(t, t.TempDir(), "in.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 2, Audio: true})
	b, err := os.ReadFile(video)
	if err != nil {
		t.Fatal(err)
	}
	id, missing := uuid.NewString(), uuid.NewString()
	p.fake.Put("videos/raw/"+id+".mp4", b, "video/mp4")
	d.exec(`INSERT INTO jobs (job_id) VALUES ($1), ($2)`, id, missing)
	d.waitFor("the jobs to end", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE status IN ('error', 'completed')`).(int64) == 2
	})
	if s := d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, id); s != "completed" {
		t.Fatalf("status %q: %v", s, d.scalar(`SELECT error FROM jobs WHERE job_id = $1`, id))
	}
	for _, path := range []string{"videos/slim/" + id + ".mp4", "videos/sops/" + id + ".json"} {
		if _, ok := p.fake.Object(path); !ok {
			t.Fatalf("no %s", path)
		}
	}
	if e := d.scalar(`SELECT error FROM jobs WHERE job_id = $1`, missing); e != "The uploaded video is no longer in storage. Please upload it again." {
		t.Fatalf("missing upload: %q", e)
	}
}

// The product end to end, as the browser drives it, against one `runops
// serve` process: upload URL, PUT, queue, poll, SOP.
func TestServeRunsTheWholeFlow(t *testing.T) {
	d, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	ai := geminitest.New(t, "test-key")
	good := geminitest.JSON(geminitest.SampleSOP)
	ai.Answer(good)
	cmd, done, base := startServe(t, binary(t), dsn, fake, "GOOGLE_GEMINI_BASE_URL="+ai.URL)

	call := apiCaller(t, base, func() string { return "" })
	up := call("POST", "/api/get-upload-url", "")
	id, _ := up["jobId"].(string)
	video, err := os.ReadFile(mediatest.Make(t, t.TempDir(), "rec.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 3, Audio: true}))
	if err != nil {
		t.Fatal(err)
	}
	put, _ := http.NewRequest("PUT", up["url"].(string), bytes.NewReader(video)) // SUPABASE_URL is also the public URL here
	put.Header.Set("Content-Type", "video/mp4")
	resp, err := http.DefaultClient.Do(put)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
	resp.Body.Close()
	fake.FailNext(supabasetest.OpDownload, 1, 503) // a storage hiccup: retried, counted, the job goes on
	call("POST", "/api/queue-job", `{"jobId":"`+id+`"}`)
	d.waitFor("completion, as the viewer polls it", func() bool {
		st := call("GET", "/api/job-status/"+id, "")
		if st["status"] == "error" {
			t.Fatalf("job failed: %v", st["error"])
		}
		return st["status"] == "completed"
	})
	s := call("GET", "/api/sop/"+id, "")
	data, _ := s["data"].(map[string]any)
	meta, _ := data["meta"].(map[string]any)
	if meta["id"] != id || meta["title"] != "Refund a duplicate charge" {
		t.Fatalf("SOP %v", s)
	}
	// Triggers as the viewer types them: one of its four types, config text.
	public, _ := data["public"].(map[string]any)
	var triggers []string
	for _, tr := range public["triggers"].([]any) {
		m := tr.(map[string]any)
		config, isText := m["config"].(string)
		if !isText {
			t.Fatalf("trigger config %#v is not text", m["config"])
		}
		triggers = append(triggers, fmt.Sprintf("%v:%s", m["type"], config))
	}
	if got := strings.Join(triggers, " | "); got != "event:helpdesk: ticket tagged duplicate-charge | cron:0 9 * * 1-5" {
		t.Fatalf("triggers %s", got)
	}
	raw, _ := json.Marshal(data)
	soptest.Check(t, "the served SOP", raw)
	// The shown steps' screenshots, served as the browser would ask for them.
	for _, node := range []string{"open", "refund"} {
		resp, err := http.Get(base + "/api/sop/" + id + "/frames/" + node)
		if err != nil {
			t.Fatal(err)
		}
		_, err = jpeg.DecodeConfig(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || err != nil {
			t.Fatalf("screenshot of %s: %d %s %v", node, resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
	}
	resp, err = http.Get(base + "/api/sop/" + id + "?format=md")
	if err != nil {
		t.Fatal(err)
	}
	md, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(md), "![Screenshot of step 3.1](/api/sop/"+id+"/frames/refund)") {
		t.Fatalf("markdown %d:\n%s", resp.StatusCode, md)
	}

	// Revalidated as a browser does, the SOP and a screenshot the worker
	// stored are answered 304 from the tags it recorded: storage is not read.
	for _, path := range []string{"/api/sop/" + id, "/api/sop/" + id + "/frames/refund"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tag, reads := resp.Header.Get("ETag"), fake.Calls(supabasetest.OpDownload)
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("If-None-Match", tag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if tag == "" || resp.StatusCode != 304 || fake.Calls(supabasetest.OpDownload) != reads {
			t.Fatalf("%s revalidated with %q: %d, %d downloads", path, tag, resp.StatusCode, fake.Calls(supabasetest.OpDownload)-reads)
		}
	}

	// A job whose upload is gone fails; then every metric has moved.
	lost := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, lost)
	d.waitFor("the job without an upload to fail", func() bool {
		return d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, lost) == "error"
	})
	checkMetrics(t, base, id)
	// Each pool and the listener name themselves to the database.
	for _, name := range []string{"runops-api", "runops-worker", "runops-listener"} {
		if n := d.scalar(`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, name).(int64); n == 0 {
			t.Errorf("no connection named %s", name)
		}
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("did not exit")
	}
}

// From SIGTERM on /readyz answers 503 while the worker drains, so that a load
// balancer stops sending work at once.
func TestReadyzFailsFromSIGTERM(t *testing.T) {
	d, p, id := holdThenSIGTERM(t, "2m")
	var body map[string]any
	d.waitFor("/readyz to say the worker is shutting down", func() bool {
		resp, err := http.Get(p.base + "/readyz")
		if err != nil {
			t.Fatalf("the process stopped serving while draining: %v", err)
		}
		defer resp.Body.Close()
		body = nil
		_ = json.NewDecoder(resp.Body).Decode(&body)
		checks, _ := body["checks"].(map[string]any)
		return resp.StatusCode == http.StatusServiceUnavailable && checks["shutdown"] == "shutting down"
	})
	if s := d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, id); s != "processing" {
		t.Fatalf("the held job is %v: the process was not draining", s)
	}
}

// A storage server that refuses the service key makes /readyz say so, apart
// from an outage.
func TestReadyzNamesARefusedServiceKey(t *testing.T) {
	_, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	p := launch(t, binary(t), "api", dsn, fake, "SUPABASE_SERVICE_ROLE_KEY="+fake.ForeignServiceRoleKey())
	var checks map[string]string
	wait.For(t, "a /readyz answer about storage", 30*time.Second, func() bool {
		_, checks = readyz(t, p.base)
		return checks["storage"] != ""
	})
	if checks["storage"] != "Supabase Storage refuses SUPABASE_SERVICE_ROLE_KEY" || checks["database"] != "ok" {
		t.Fatalf("checks %v", checks)
	}
}

// A process on a database behind its build (deployed before `runops
// migrate`) says so in /readyz, naming the last missing migration and what
// to run, and is ready once the migrations are applied. Before, /readyz
// said ready while claims or gauges failed on a missing function or column.
func TestReadyzNamesMissingMigrations(t *testing.T) {
	d, dsn := newDB(t)
	migrations, err := postgres.LoadMigrations(supabase.Migrations)
	if err != nil {
		t.Fatal(err)
	}
	last := migrations[len(migrations)-1]
	d.exec(`DELETE FROM supabase_migrations.schema_migrations WHERE version = $1`, last.Version)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	bin := binary(t)
	p := launch(t, bin, "api", dsn, fake)
	want := "the database lacks 1 migration(s) of this build, the last " + last.Version + "_" + last.Name + ": run runops migrate"
	var checks map[string]string
	wait.For(t, "/readyz to name the missing migration", 30*time.Second, func() bool {
		_, checks = readyz(t, p.base)
		return checks["schema"] == want
	}, func() string { return fmt.Sprint(checks) })
	migrate := exec.Command(bin, "migrate")
	migrate.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	wait.For(t, "/readyz to say the schema is ok", 30*time.Second, func() bool {
		code, c := readyz(t, p.base)
		checks = c
		return code == http.StatusOK && c["schema"] == "ok"
	}, func() string { return fmt.Sprint(checks) })
}

// Forty concurrent edits of one SOP in a `serve` process never starve the
// worker: every job queued meanwhile completes on its first attempt, and
// every edit is answered (saved, or "busy, try again"), never a 500.
func TestSOPEditStormDoesNotStarveJobs(t *testing.T) {
	d, dsn := newDB(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	fake.OnStore(soptest.Inspect(t))
	_, _, base := startServe(t, recordingBinary(t), dsn, fake, recordingEnv, "RUNOPS_RATE_LIMIT=off",
		"RUNOPS_WORKER_CONCURRENCY=2", "RUNOPS_LEASE_TTL=3s", "RUNOPS_HEARTBEAT=300ms", "RUNOPS_SWEEP=500ms")

	sample, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	edited := uuid.NewString()
	fake.Put("videos/sops/"+edited+".json", sample, "application/json")
	d.exec(`INSERT INTO jobs (job_id, status) VALUES ($1, 'completed')`, edited)

	const edits, queued = 40, 20
	codes := make(chan int, edits)
	var wg sync.WaitGroup
	for i := range edits {
		wg.Go(func() {
			body := fmt.Sprintf(`{"type":"update","nodeId":"open","updates":{"intent":"edit %d"}}`, i)
			req, _ := http.NewRequest("PATCH", base+"/api/sop/"+edited, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	for range queued {
		d.exec(`INSERT INTO jobs (job_id) VALUES ($1)`, uuid.NewString())
	}
	wg.Wait()
	close(codes)
	saved := 0
	for c := range codes {
		switch c {
		case http.StatusOK:
			saved++
		case http.StatusServiceUnavailable:
		default:
			t.Errorf("an edit was answered %d", c)
		}
	}
	d.waitFor("every queued job completed", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE status = 'completed'`).(int64) == queued+1
	})
	if n := d.scalar(`SELECT count(*) FROM jobs WHERE (metadata->>'attempt')::int > 1`).(int64); n != 0 || saved == 0 {
		t.Fatalf("%d jobs needed a second attempt; %d edits saved", n, saved)
	}
}

// scrape reads the server's /metrics with the Prometheus parser.
func scrape(tb testing.TB, client *http.Client, base string) map[string]*dto.MetricFamily {
	tb.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	return families
}

// checkMetrics scrapes /metrics with the Prometheus parser after one job
// completed (id) and one failed, and checks that each metric moved as it
// should; the table's gauges are cached, so it polls for them.
func checkMetrics(t *testing.T, base, id string) {
	t.Helper()
	value := func(f map[string]*dto.MetricFamily, name string, labels ...string) float64 {
		fam := f[name]
		if fam == nil {
			return -1
		}
	metrics:
		for _, m := range fam.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		return -1
	}
	var f map[string]*dto.MetricFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		f = scrape(t, http.DefaultClient, base)
		if value(f, "runops_jobs", "status", "completed") == 1 && value(f, "runops_jobs", "status", "error") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runops_jobs never showed the two jobs: completed %v, error %v",
				value(f, "runops_jobs", "status", "completed"), value(f, "runops_jobs", "status", "error"))
		}
		time.Sleep(200 * time.Millisecond) // the gauges are cached for a few seconds
	}
	for _, c := range []struct {
		name    string
		labels  []string
		atLeast float64
	}{
		{"runops_jobs_finished_total", []string{"outcome", "completed"}, 1},
		{"runops_jobs_finished_total", []string{"outcome", "error"}, 1},
		{"runops_jobs_finished_total", []string{"outcome", "lost"}, 0},
		{"runops_pickup_seconds", nil, 2},
		{"runops_stage_seconds", []string{"stage", "transcoding"}, 1},
		{"runops_stage_seconds", []string{"stage", "extracting"}, 1},
		{"runops_gemini_tokens_total", []string{"kind", "video"}, 1},
		{"runops_gemini_tokens_total", []string{"kind", "output"}, 1},
		{"runops_retries_total", []string{"step", "storage"}, 1},
		{"runops_http_requests_total", []string{"route", "/api/job-status/{jobId}", "code", "200"}, 1},
		{"runops_http_request_seconds", []string{"route", "/api/sop/{jobId}"}, 1},
		{"runops_queue_oldest_seconds", nil, 0},
		{"runops_jobs", []string{"status", "queued"}, 0},
	} {
		if got := value(f, c.name, c.labels...); got < c.atLeast {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, got, c.atLeast)
		}
	}
	for _, m := range f["runops_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), id) {
				t.Errorf("a route label holds a raw path: %s", l.GetValue())
			}
		}
	}
}

// holdThenSIGTERM starts a test-handler worker with the shutdown grace given,
// waits until it runs a job that holds until cancelled, and sends SIGTERM.
func holdThenSIGTERM(t *testing.T, grace string) (*db, *workerProc, string) {
	t.Helper()
	d, dsn := newDB(t)
	p := startWorker(t, recordingBinary(t), dsn, "RUNOPS_SHUTDOWN_GRACE="+grace)
	id := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, metadata) VALUES ($1, '{"test_hold": true}')`, id)
	d.waitFor("the job to start", func() bool {
		return d.scalar(`SELECT count(*) FROM test_runs WHERE job_id = $1`, id).(int64) == 1
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return d, p, id
}

// startServe runs bin's `serve` against the storage stand-in, with extra
// environment, until the test ends; it returns once the process is ready,
// with its exit and its base URL.
func startServe(t *testing.T, bin, dsn string, fake *supabasetest.Server, extra ...string) (*exec.Cmd, chan error, string) {
	t.Helper()
	return startCommand(t, bin, "serve", dsn, fake, extra...)
}

// startCommand is startServe for any of serve, api and worker.
func startCommand(t *testing.T, bin, command, dsn string, fake *supabasetest.Server, extra ...string) (*exec.Cmd, chan error, string) {
	t.Helper()
	p := launch(t, bin, command, dsn, fake, extra...)
	waitReady(t, p.base)
	return p.cmd, p.done, p.base
}

// apiCaller calls the API at base as the app would and returns the JSON of a
// 200 answer; anything else fails the test, with what context adds.
func apiCaller(t *testing.T, base string, context func() string) func(method, path, body string) map[string]any {
	return func(method, path, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %v%s", method, path, resp.StatusCode, out, context())
		}
		return out
	}
}
