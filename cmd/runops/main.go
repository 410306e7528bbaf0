// Command runops is the Runops backend: `serve` (API and worker in one
// process), `api`, `worker`, `migrate`, `jobs` (an operator's view of the
// queue), `process` (one recording on this machine) and `healthcheck`.
// Configuration comes from the environment (see internal/config and the
// README); main wires the implementations into each part.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/gemini"
	"github.com/runops/runops/internal/httpserver"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/logsink"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/ocr"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/retention"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/webhook"
	"github.com/runops/runops/supabase"
)

const usage = `usage: runops <command>

commands:
  process VIDEO [--out DIR]
            turn one recording into DIR/<name>.slim.mp4, <name>.sop.json and
            <name>.sop.md on this machine (needs only GEMINI_API_KEY)
  jobs      list, show, requeue, cancel or complete jobs (runops jobs for more)
  serve     run the API and the worker in one process
  api       run the HTTP API only
  worker    run the job worker only
  migrate   apply the database migrations in supabase/migrations
  healthcheck
            exit 0 when the process on RUNOPS_ADDR answers /healthz (the image's HEALTHCHECK)

Configuration is read from the environment; see the README.
`

func main() { os.Exit(cli(os.Args[1:], pipelineHandler)) }

// cli runs the command in args with the environment's configuration, a
// worker's jobs handled by what newHandler builds, and returns the exit code.
func cli(args []string, newHandler newHandler) int {
	log, flush := newLogger(os.Getenv("RUNOPS_LOG_FORMAT"), os.Stderr)
	defer flush()
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, args[0], args[1:], env{getenv: os.Getenv, stdout: os.Stdout, log: log, newHandler: newHandler})
	if err == nil {
		return 0
	}
	var u usageError
	var refused refusedError
	switch {
	case errors.As(err, &refused):
		fmt.Fprintln(os.Stderr, refused) // the sentence, as the viewer would show it
		return 1
	case errors.As(err, &u):
		fmt.Fprintf(os.Stderr, "%s\n%s", u, usage)
		return 2
	}
	log.Error("runops failed", "command", args[0], "error", err)
	return 1
}

// env is what a command is run with.
type env struct {
	getenv     func(string) string
	stdout     io.Writer
	log        *slog.Logger
	newHandler newHandler // a worker's job handler
}

// newLogger writes JSON lines, or text when stderr is a terminal;
// RUNOPS_LOG_FORMAT (json or text) decides instead when set. Unless f is a
// terminal (where a person watches, with a progress bar between the lines)
// lines are written by a logsink, which flush empties: a request's line
// costs its caller a copy, not a write (docs/operations.md, "Logs").
func newLogger(format string, f *os.File) (log *slog.Logger, flush func()) {
	text := term.IsTerminal(int(f.Fd()))
	var w io.Writer = f
	flush = func() {}
	if !text {
		sink := logsink.New(f)
		w, flush = sink, func() { _ = sink.Close() }
	}
	switch strings.ToLower(format) {
	case "json":
		text = false
	case "text":
		text = true
	}
	var h slog.Handler = slog.NewJSONHandler(w, nil)
	if text {
		h = slog.NewTextHandler(w, nil)
	}
	return slog.New(queue.JobLogs(h)), flush // every line about a job names it and its attempt
}

type usageError string

func (u usageError) Error() string { return string(u) }

// commandHelp is what `runops COMMAND --help` prints.
var commandHelp = map[string]string{
	"process": `usage: runops process VIDEO [--out DIR]

Turns one screen recording into an SOP on this machine, as the worker would:
DIR/<name>.slim.mp4 (the 1 fps, 720p copy the model watches), <name>.sop.json
(the SOP document), <name>.sop.md (the same as Markdown) and a screenshot per
shown step, <name>.<step>.jpg. DIR defaults to the current folder.

Needs ffmpeg and GEMINI_API_KEY; no database, no Supabase.
`,
	"jobs": jobsUsage + "\n",
	"serve": `usage: runops serve

Runs the HTTP API and the job worker in one process.
Configuration is read from the environment; see the README.
`,
	"api": `usage: runops api

Runs the HTTP API only (no jobs are processed).
Configuration is read from the environment; see the README.
`,
	"worker": `usage: runops worker

Runs the job worker only (with /healthz, /readyz and /metrics).
Configuration is read from the environment; see the README.
`,
	"migrate": `usage: runops migrate

Applies the database migrations in supabase/migrations to DATABASE_URL.
`,
	"healthcheck": `usage: runops healthcheck

Exits 0 when the process on RUNOPS_ADDR answers /healthz (the image's HEALTHCHECK).
`,
}

// wantsHelp tells whether args ask for help (before any "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

func run(ctx context.Context, cmd string, args []string, e env) error {
	stdout, log := e.stdout, e.log
	if help, ok := commandHelp[cmd]; ok && wantsHelp(args) {
		fmt.Fprint(stdout, help)
		return nil
	}
	if cmd == "help" && len(args) == 1 {
		if help, ok := commandHelp[args[0]]; ok {
			fmt.Fprint(stdout, help)
			return nil
		}
	}
	cfg, err := config.Load(e.getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	switch cmd {
	case "process":
		return process(ctx, cfg, args, stdout, os.Stderr, log)
	case "jobs":
		return jobsCommand(ctx, cfg, args, stdout)
	case "healthcheck":
		return healthcheck(ctx, cfg.Addr)
	case "migrate":
		return migrate(ctx, cfg, stdout)
	case "api":
		return serve(ctx, cfg, roles{api: true}, e)
	case "worker":
		return serve(ctx, cfg, roles{worker: true}, e)
	case "serve":
		return serve(ctx, cfg, roles{api: true, worker: true}, e)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError("unknown command " + cmd)
}

func migrate(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	applied, err := postgres.MigrateURL(ctx, postgres.Named(cfg.DatabaseURL, "runops-migrate"), supabase.Migrations)
	for _, v := range applied {
		fmt.Fprintf(stdout, "applied %s\n", v)
	}
	if err == nil && len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	return err
}

// Pool sizes: the API's requests are short, except SOP edits, which are
// serialised per job in the process before they take a connection; each
// running job needs at most three connections at once (its heartbeat, a
// stage write, the SOP lock's transaction), and claims and rescues a few
// more. The listener has a connection of its own.
const apiPoolSize = 10

func workerPoolSize(concurrency int) int32 { return int32(4 + 3*concurrency) }

// roles are what a process serves: `serve` both.
type roles struct{ api, worker bool }

// serve runs the API, the worker, or both, with one health endpoint, until
// ctx is done.
func serve(ctx context.Context, cfg config.Config, as roles, e env) error {
	if err := preflight(ctx, cfg, as); err != nil {
		return err
	}
	apiPool, workerPool, err := openPools(ctx, cfg, as)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range []*pgxpool.Pool{apiPool, workerPool} {
			if p != nil {
				p.Close()
			}
		}
	}()
	objects, err := storage.New(storage.Config{URL: cfg.SupabaseURL, PublicURL: cfg.SupabasePublicURL,
		ServiceKey: cfg.ServiceRoleKey, Bucket: jobs.Bucket})
	if err != nil {
		return err
	}
	store := postgres.NewJobStore(cmp.Or(apiPool, workerPool))
	if as.worker {
		store.CountClaimableUnder(cfg.OwnerConcurrency)
	}
	metrics.WatchQueue(store.QueueStats, 5*time.Second)
	schema, err := schemaCheck(ctx, cmp.Or(apiPool, workerPool), e.log)
	if err != nil {
		return err
	}
	checks := append(readiness(ctx, store, objects), schema)
	var h http.Handler = http.NotFoundHandler()
	if as.api {
		if h, err = apiHandler(ctx, cfg, apiPool, store, objects, e.log); err != nil {
			return err
		}
	}
	// The HTTP server and the listener stop with the process, except that a
	// worker first drains: they keep serving health checks and notifications
	// until it is done.
	base := ctx
	if as.worker {
		base = context.WithoutCancel(ctx)
	}
	runCtx, stop := context.WithCancel(base)
	defer stop()
	var g errgroup.Group
	if as.worker {
		more, err := startEngine(ctx, runCtx, stop, &g, cfg, workerPool, objects, e)
		if err != nil {
			return err
		}
		checks = append(checks, more...)
	}
	return serveHTTP(runCtx, stop, &g, cfg, h, checks, e.log)
}

// preflight refuses, before anything is opened, what cannot work.
func preflight(ctx context.Context, cfg config.Config, as roles) error {
	if err := cfg.RequireServiceKey(); err != nil {
		return err
	}
	if !as.worker {
		return nil
	}
	if err := cfg.RequireWorker(); err != nil {
		return err
	}
	return requireOCR(ctx, cfg)
}

// openPools opens a pool for each role: requests (an SOP edit holds a
// connection while it waits for the SOP lock) can never take the
// connections that the worker's heartbeats and writes need.
func openPools(ctx context.Context, cfg config.Config, as roles) (apiPool, workerPool *pgxpool.Pool, err error) {
	if as.api {
		if apiPool, err = postgres.OpenPool(ctx, postgres.Named(cfg.DatabaseURL, "runops-api"), apiPoolSize); err != nil {
			return nil, nil, err
		}
	}
	if as.worker {
		workerPool, err = postgres.OpenPool(ctx, postgres.Named(cfg.DatabaseURL, "runops-worker"), workerPoolSize(cfg.WorkerConcurrency))
		if err != nil {
			if apiPool != nil {
				apiPool.Close()
			}
			return nil, nil, err
		}
	}
	return apiPool, workerPool, nil
}

// schemaCheck is /readyz's "schema": the database has every migration this
// build embeds. A database behind it (a deploy before `runops migrate`)
// fails the claims, the gauges or the API in ways that do not name the
// cause: this says it, in the log at start and in /readyz until the
// migrations are applied.
func schemaCheck(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (httpserver.Check, error) {
	migrations, err := postgres.LoadMigrations(supabase.Migrations)
	if err != nil {
		return httpserver.Check{}, err
	}
	var current atomic.Bool // every migration applied: no later check can find one missing
	behind := func(ctx context.Context) error {
		if current.Load() {
			return nil
		}
		missing, err := postgres.Unapplied(ctx, pool, migrations)
		if err == nil && len(missing) == 0 {
			current.Store(true)
		}
		if errors.Is(err, postgres.ErrMigrationsHidden) {
			return nil // cannot tell: the other checks stand
		}
		if err != nil || len(missing) == 0 {
			return err
		}
		return &httpserver.NotReady{Reason: fmt.Sprintf("the database lacks %d migration(s) of this build, the last %s: run runops migrate",
			len(missing), missing[len(missing)-1])}
	}
	var nr *httpserver.NotReady
	if err := behind(ctx); errors.As(err, &nr) {
		log.Error(nr.Reason)
	}
	return httpserver.Check{Name: "schema", Fn: behind}, nil
}

// readiness is what /readyz asks of every process: the database, storage,
// and not shutting down.
func readiness(ctx context.Context, store *postgres.JobStore, objects *storage.Client) []httpserver.Check {
	return []httpserver.Check{
		{Name: "database", Fn: func(ctx context.Context) error {
			err := store.Ping(ctx)
			if errors.Is(err, jobs.ErrNoConnections) {
				return &httpserver.NotReady{Reason: jobs.ErrNoConnections.Error() + ": retrying until connections free up"}
			}
			return err
		}},
		{Name: "shutdown", Fn: func(context.Context) error {
			// From SIGTERM on, so that a load balancer stops sending work
			// while the worker drains.
			if ctx.Err() != nil {
				return &httpserver.NotReady{Reason: "shutting down"}
			}
			return nil
		}},
		{Name: "storage", Fn: func(ctx context.Context) error {
			err := objects.Ping(ctx)
			if errors.Is(err, jobs.ErrRefusedKey) {
				return &httpserver.NotReady{Reason: "Supabase Storage refuses SUPABASE_SERVICE_ROLE_KEY"}
			}
			return err
		}},
	}
}

// startEngine starts the worker's loops in g — the engine until ctx is done
// and it has drained (then it calls stop), the listener, the janitor and
// the webhook deliverer — and returns its readiness checks.
func startEngine(ctx, runCtx context.Context, stop func(), g *errgroup.Group, cfg config.Config, pool *pgxpool.Pool,
	objects *storage.Client, e env) ([]httpserver.Check, error) {
	h, err := e.newHandler(ctx, handlerDeps{pool: pool, objects: objects, cfg: cfg, log: e.log})
	if err != nil {
		return nil, err
	}
	w, listener := newWorker(cfg, h, pool, e.log)
	var checks []httpserver.Check
	if gate, ok := h.(queue.Gate); ok {
		checks = append(checks, httpserver.Check{Name: "disk", Fn: func(context.Context) error {
			if err := gate.Ready(); err != nil {
				return &httpserver.NotReady{Reason: err.Error()}
			}
			return nil
		}})
	}
	var slot *postgres.ListenerSlot
	if listener != nil {
		slot = &postgres.ListenerSlot{Pool: pool, Holder: w.Name(), Max: cfg.Listeners.Max, Share: cfg.Listeners.Share,
			TTL: cfg.LeaseTTL, Retry: cfg.Sweep, Logger: e.log}
		g.Go(func() error { return slot.Run(runCtx, listener.Run) })
	}
	checks = append(checks, httpserver.Check{Name: "listener", Fn: func(context.Context) error {
		if listener == nil {
			return nil // polling on purpose
		}
		reason, settled := slot.Problem()
		switch {
		case reason != "" && !settled:
			return &httpserver.NotReady{Reason: reason}
		case reason != "":
			return &httpserver.Degraded{Reason: reason}
		case !listener.Connected():
			return errors.New(listener.Problem())
		}
		return nil
	}})
	g.Go(func() error {
		defer stop()
		return w.Run(ctx)
	})
	// One worker of the fleet rescues expired leases and runs the janitor
	// for all of them, while it holds the housekeeping duty; when it stops
	// or dies, another takes the duty (docs/operations.md).
	janitor := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: cfg.RawRetention,
		Slim: cfg.SlimRetention, Every: cfg.Sweep, Logger: e.log}
	// The others ask for it every lease TTL: within that of its holder's
	// stop, and within two of its death (its tenure lapses first).
	duty := &postgres.Duty{Pool: pool, Name: "housekeeping", Holder: w.Name(), TTL: cfg.LeaseTTL, Retry: cfg.LeaseTTL, Logger: e.log}
	g.Go(func() error { w.Housekeep(ctx, duty, janitor.Run); return nil })
	if len(cfg.WebhookURLs) > 0 {
		d := &webhook.Deliverer{Store: postgres.NewJobStore(pool).Webhooks(), URLs: cfg.WebhookURLs, Keys: cfg.WebhookKeys,
			Client: &http.Client{Timeout: 10 * time.Second}, Every: time.Second, Logger: e.log}
		g.Go(func() error { d.Run(ctx); return nil })
	}
	return checks, nil
}

// serveHTTP serves h, /metrics and the health checks on RUNOPS_ADDR until
// ctx is done, then waits for g.
func serveHTTP(ctx context.Context, stop func(), g *errgroup.Group, cfg config.Config, h http.Handler,
	checks []httpserver.Check, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		stop()
		_ = g.Wait()
		return fmt.Errorf("listen on RUNOPS_ADDR %s: %w", cfg.Addr, err)
	}
	g.Go(func() error {
		// /metrics, like the health checks, is the process's own: never
		// proxied, never rate-limited.
		mux := httpserver.WithHealth(h, log, checks...)
		httpserver.Own(mux, "/metrics", metrics.Handler())
		err := httpserver.Serve(ctx, ln, mux, cfg.ReadTimeout, cfg.ShutdownGrace, log)
		stop()
		return err
	})
	return g.Wait()
}

func apiHandler(ctx context.Context, cfg config.Config, pool *pgxpool.Pool, store *postgres.JobStore, objects *storage.Client, log *slog.Logger) (http.Handler, error) {
	sops := postgres.NewSOPLocker(pool)
	sops.Logger = log
	opts := api.Options{
		Jobs: store, Objects: objects, SOPs: sops, Logger: log, ServiceRoleKey: cfg.ServiceRoleKey,
		RequireAuth: cfg.RequireAuth, RateLimit: cfg.RateLimit.Requests, RateWindow: cfg.RateLimit.Window,
		TrustedProxies: cfg.TrustedProxies, CORSOrigins: cfg.CORSOrigins,
	}
	var err error
	if opts.Privacy, err = privacyDetector(cfg); err != nil {
		return nil, err
	}
	// A token a request carries is always checked: locally when the project's
	// JWT secret or JWKS is configured (no call per request), else by the
	// auth server (answers cached for a minute).
	if cfg.JWTSecret != "" || cfg.JWKSURL != "" {
		opts.Auth, err = auth.NewLocal(cfg.JWTSecret, cfg.JWKSURL)
	} else {
		opts.Auth, err = auth.New(cfg.SupabaseURL, cfg.ServiceRoleKey, 5*time.Second, time.Minute)
	}
	if err != nil {
		return nil, err
	}
	if cfg.FrontendURL != "" {
		if opts.FrontendURL, err = url.Parse(cfg.FrontendURL); err != nil {
			return nil, err
		}
	}
	return api.Handler(opts), nil
}

// newWorker wires the queue engine to Postgres; the listener is nil when
// polling (RUNOPS_LISTEN=off, or a transaction pooler that cannot LISTEN).
func newWorker(cfg config.Config, h queue.Handler, pool *pgxpool.Pool, log *slog.Logger) (*queue.Worker, *postgres.Listener) {
	w := queue.New(postgres.NewQueueStore(pool).SendEvents(cfg.WebhookURLs).CapOwners(cfg.OwnerConcurrency), h, queue.Config{
		Concurrency: cfg.WorkerConcurrency, LeaseTTL: cfg.LeaseTTL, Heartbeat: cfg.Heartbeat, Sweep: cfg.Sweep,
		MaxAttempts: cfg.MaxAttempts, ShutdownGrace: cfg.ShutdownGrace, TempDir: cfg.TmpDir, Logger: log,
		SharedRescue: true, // startEngine's housekeeping duty runs it
	})
	if !cfg.Listen {
		log.Info("RUNOPS_LISTEN=off: picking up jobs by polling every RUNOPS_SWEEP", "sweep", cfg.Sweep)
		return w, nil
	}
	if postgres.IsTransactionPooler(cfg.ListenDatabaseURL) {
		log.Error("RUNOPS_LISTEN_DATABASE_URL points at a transaction pooler (port 6543 or pgbouncer=true), where LISTEN does not work; "+
			"set it to the direct connection (port 5432, or 54322 locally). Polling every RUNOPS_SWEEP until then.", "sweep", cfg.Sweep)
		return w, nil
	}
	l := &postgres.Listener{DSN: postgres.Named(cfg.ListenDatabaseURL, "runops-listener"), Events: w, ReconnectDelay: time.Second, Logger: log,
		Send: postgres.NewJobStore(pool).Notify}
	return w, l
}

// handlerDeps is what building a job handler may need.
type handlerDeps struct {
	pool    *pgxpool.Pool
	objects *storage.Client
	cfg     config.Config
	log     *slog.Logger
}

// newHandler builds what a worker runs for each job.
type newHandler func(ctx context.Context, d handlerDeps) (queue.Handler, error)

// pipelineHandler turns each job's recording into an SOP.
func pipelineHandler(ctx context.Context, d handlerDeps) (queue.Handler, error) {
	model, err := gemini.New(ctx, gemini.Config{APIKey: d.cfg.GeminiAPIKey, Model: d.cfg.GeminiModel,
		MediaResolution: d.cfg.GeminiMediaResolution, BaseURL: d.cfg.GeminiBaseURL})
	if err != nil {
		return nil, err
	}
	pc, err := pipelineConfig(d.cfg, d.log)
	if err != nil {
		return nil, err
	}
	sops := postgres.NewSOPLocker(d.pool)
	sops.Logger = d.log
	return pipeline.New(d.objects, model, sops, pc), nil
}

// pipelineConfig is the pipeline's share of the configuration, for the
// worker and for runops process alike.
func pipelineConfig(cfg config.Config, log *slog.Logger) (pipeline.Config, error) {
	det, err := privacyDetector(cfg)
	return pipeline.Config{FFmpegTimeout: cfg.FFmpegTimeout, MaxRetryWait: cfg.GeminiMaxRetryWait,
		FileActiveTimeout: cfg.GeminiFileActiveTimeout, Logger: log, Privacy: det}, err
}

// requireOCR refuses to run the pipeline with RUNOPS_REDACT on and no
// tesseract: its screenshots would be stored with what they show.
func requireOCR(ctx context.Context, cfg config.Config) error {
	if !cfg.Redact {
		return nil
	}
	if err := ocr.Check(ctx); err != nil {
		return fmt.Errorf("RUNOPS_REDACT is on (the default), and the screenshots' privacy pass needs Tesseract OCR: "+
			"install the Debian packages tesseract-ocr and tesseract-ocr-eng (the scripts and the image do), or set RUNOPS_REDACT=off (%w)", err)
	}
	return nil
}

// privacyDetector finds what RUNOPS_REDACT keeps out of SOPs (nil when it
// is off), for the worker and the API's edits alike.
func privacyDetector(cfg config.Config) (*privacy.Detector, error) {
	if !cfg.Redact {
		return nil, nil
	}
	det, err := privacy.NewDetector(cfg.RedactPatterns)
	if err != nil {
		return nil, fmt.Errorf("RUNOPS_REDACT_PATTERNS: %w", err)
	}
	return det, nil
}

// healthcheck asks the process listening on addr for /healthz, for the
// container's HEALTHCHECK (the image has no curl).
func healthcheck(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("RUNOPS_ADDR %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %d", resp.StatusCode)
	}
	return nil
}
