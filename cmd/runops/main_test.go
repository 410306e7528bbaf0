package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runops/runops/internal/api/apitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/supabasetest"
)

func TestMain(m *testing.M) {
	// The process tests start this very binary as `runops` when they need a
	// worker whose runs show up (recordingBinary): wired as main wires the
	// pipeline, with queuetest.Advisory's handler in its place.
	if os.Getenv(asRecordingRunops) != "" {
		os.Exit(cli(os.Args[1:], recordingHandler))
	}
	// Every exchange with /api of the processes under test is held to the
	// OpenAPI document.
	code := apitest.Run(m, pgtest.Run)
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildMu  sync.Mutex
	built    string // the command, once built
	buildDir string
)

// asRecordingRunops, set in a process's environment, makes this test binary
// runops with recordingHandler.
const asRecordingRunops = "RUNOPS_TEST_AS_RECORDING_WORKER"

// recordingHandler records every run with queuetest.Advisory, so that
// overlapping runs show up. A job whose metadata has "test_hold": true holds
// its first attempt until cancelled.
func recordingHandler(_ context.Context, d handlerDeps) (queue.Handler, error) {
	return queuetest.Advisory(d.pool, func(ctx context.Context, j queue.Job) error {
		if hold, _ := j.Metadata["test_hold"].(bool); hold && j.Attempt == 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}), nil
}

// recordingBinary is the command to start for a worker that runs
// recordingHandler: this test binary, told so by its environment (add
// recordingEnv to it).
func recordingBinary(t testing.TB) string {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// recordingEnv is what makes recordingBinary runops.
var recordingEnv = asRecordingRunops + "=1"

// binary builds the real command, once.
func binary(t testing.TB) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if built != "" {
		return built
	}
	var err error
	if buildDir, err = os.MkdirTemp("", "runops-bin-"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(buildDir, "runops")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	built = bin
	return bin
}

func TestMigrateCommandIsIdempotent(t *testing.T) {
	bin := binary(t)
	dsn := pgtest.New(t)
	// pgtest's databases are migrated already: nothing is applied twice.
	conn := exec.Command(bin, "migrate")
	conn.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	out, err := conn.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "up to date") {
		t.Fatalf("migrate on a migrated database: %v\n%s", err, out)
	}
	bad := exec.Command(bin, "migrate")
	bad.Env = append(os.Environ(), "DATABASE_URL=mysql://nope")
	out, err = bad.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "DATABASE_URL") {
		t.Fatalf("bad DATABASE_URL: %v\n%s", err, out)
	}
}

// freeAddr is an address nothing listens on (a process under test is given
// 127.0.0.1:0 instead, and says which port it took: see start).
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestServeAnswersAndStopsOnSIGTERM(t *testing.T) {
	bin := binary(t)
	dsn := pgtest.New(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	// The alias `supabase status` prints for the key; the "listening" log
	// line (an event, not a sleep) gives the address.
	p := launch(t, bin, "serve", dsn, fake, "SUPABASE_SERVICE_ROLE_KEY=", "SERVICE_ROLE_KEY="+fake.ServiceRoleKey(),
		"SUPABASE_PUBLIC_URL=https://public.example")
	base := p.base
	waitReady(t, base)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/api/job-status/x": 400} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d: %s", path, resp.StatusCode, want, b)
		}
	}
	apitest.ServesDocument(t, base)
	resp, err := http.Post(base+"/api/get-upload-url", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"url":"https://public.example/storage/v1/object/upload/sign/videos/raw/`) {
		t.Fatalf("get-upload-url: %d %s", resp.StatusCode, b)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.waitExit(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func TestUnknownCommandAndMissingKey(t *testing.T) {
	bin := binary(t)
	out, err := exec.Command(bin, "frobnicate").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "usage") {
		t.Fatalf("unknown command: %v %s", err, out)
	}
	cmd := exec.Command(bin, "api")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SUPABASE_SERVICE_ROLE_KEY") {
		t.Fatalf("missing key: %v %s", err, out)
	}
}

// Every command answers --help (and -h) with its own usage, exit 0, with
// no configuration at all; runops process without a key says what it needs
// in words about what the user ran.
func TestHelpAndFirstSteps(t *testing.T) {
	bin := binary(t)
	bare := []string{"PATH=" + os.Getenv("PATH")}
	for _, args := range [][]string{{"process", "--help"}, {"process", "rec.mp4", "-h"}, {"jobs", "--help"},
		{"jobs", "list", "--help"}, {"serve", "--help"}, {"api", "-h"}, {"worker", "--help"}, {"migrate", "--help"},
		{"healthcheck", "--help"}, {"help", "process"}, {"--help"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = bare
		out, err := cmd.Output()
		name := args[0]
		if name == "help" {
			name = args[1]
		}
		if err != nil || !strings.Contains(string(out), "usage: runops") ||
			(name != "--help" && !strings.Contains(string(out), "runops "+name)) {
			t.Errorf("runops %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cmd := exec.Command(bin, "process", "rec.mp4")
	cmd.Env = bare
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "GEMINI_API_KEY is required to turn a recording into an SOP") ||
		strings.Contains(string(out), "worker") {
		t.Errorf("process without a key: %v\n%s", err, out)
	}
	// Redaction on (the default) and no tesseract on the PATH: the worker and
	// runops process refuse to start, saying what to install.
	noOCR := t.TempDir()
	for _, tool := range []string{"ffmpeg", "ffprobe"} {
		if p, err := exec.LookPath(tool); err == nil {
			if err := os.Symlink(p, filepath.Join(noOCR, tool)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, args := range [][]string{{"worker"}, {"process", "rec.mp4"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=" + noOCR, "GEMINI_API_KEY=k", "SUPABASE_SERVICE_ROLE_KEY=k"}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "tesseract-ocr and tesseract-ocr-eng") {
			t.Errorf("runops %s without tesseract: %v\n%s", args[0], err, out)
		}
	}
	// With it off, runops process goes on (to find no such recording).
	off := exec.Command(bin, "process", "no-such-recording.mp4")
	off.Env = []string{"PATH=" + noOCR, "GEMINI_API_KEY=k", "RUNOPS_REDACT=off"}
	if out, err := off.CombinedOutput(); err == nil || strings.Contains(string(out), "tesseract") || !strings.Contains(string(out), "no-such-recording") {
		t.Errorf("runops process with RUNOPS_REDACT=off: %v\n%s", err, out)
	}
}

// waitReady polls /readyz until the process says it is ready (its listener
// connected), with a generous deadline.
func waitReady(t testing.TB, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		var last []byte
		if err == nil {
			last, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v %s", err, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The image cannot be built here: this checks instead that the Dockerfile's
// entrypoint, default command and health check are the binary's, and that
// every command the README runs in the image is one the binary knows.
func TestDockerfileMatchesTheREADME(t *testing.T) {
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// The build image is go.mod's Go: it sets GOTOOLCHAIN=local, so an
	// older one cannot build the module.
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if goVersion == nil {
		t.Fatal("go.mod names no Go version")
	}
	for _, want := range []string{`ENTRYPOINT ["runops"]`, `CMD ["serve"]`, `HEALTHCHECK`, `CMD ["runops", "healthcheck"]`, "USER 10001", "ffmpeg", "ca-certificates",
		"FROM golang:" + string(goVersion[1]) + "-bookworm AS build"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("the Dockerfile lacks %s", want)
		}
	}
	// The README's .env, with the service key, never goes into the build.
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), ".env") {
		t.Errorf(".dockerignore does not leave .env out: %v", err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	bin := binary(t)
	usageOut, _ := exec.Command(bin, "help").CombinedOutput()
	verbs := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		_, rest, ok := strings.Cut(line, " runops ")
		if !ok || !strings.HasPrefix(line, "docker run") {
			continue
		}
		verb := strings.Fields(rest + " serve")[0]
		if strings.HasPrefix(verb, "#") {
			verb = "serve"
		}
		verbs[verb] = true
	}
	for _, v := range []string{"serve", "api", "worker", "migrate", "jobs", "process"} {
		if !verbs[v] {
			t.Errorf("the README runs no `runops %s` in the image", v)
		}
		if !strings.Contains(string(usageOut), "  "+v) {
			t.Errorf("the binary's usage does not list %s:\n%s", v, usageOut)
		}
	}
	// The health check works against a real process.
	dsn := pgtest.New(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	healthcheck := func(addr string) ([]byte, error) {
		check := exec.Command(bin, "healthcheck")
		check.Env = append(os.Environ(), "RUNOPS_ADDR="+addr, "SUPABASE_SERVICE_ROLE_KEY=k")
		return check.CombinedOutput()
	}
	if _, err := healthcheck(freeAddr(t)); err == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
	api := launch(t, bin, "api", dsn, fake)
	waitReady(t, api.base)
	apitest.ServesDocument(t, api.base)
	if out, err := healthcheck(strings.TrimPrefix(api.base, "http://")); err != nil {
		t.Fatalf("healthcheck: %v %s", err, out)
	}
}
