// Command runops is the Runops backend: `serve` (API and worker in one
// process), `api`, `worker` and `migrate`. Configuration comes from the
// environment (see internal/config and the README).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/runops/runops/internal/api"
	"github.com/runops/runops/internal/auth"
	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/httpserver"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/supabase"
)

const usage = `usage: runops <command>

commands:
  serve     run the API (and, once it lands, the worker) in one process
  api       run the HTTP API only
  worker    run the job worker only
  migrate   apply the database migrations in supabase/migrations

Configuration is read from the environment; see the README.
`

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1], os.Getenv, os.Stdout, log); err != nil {
		log.Error("runops failed", "command", os.Args[1], "error", err)
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError string

func (u usageError) Error() string { return string(u) }

func run(ctx context.Context, cmd string, getenv func(string) string, stdout io.Writer, log *slog.Logger) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	switch cmd {
	case "migrate":
		return migrate(ctx, cfg, stdout)
	case "api", "serve":
		return serveAPI(ctx, cfg, log)
	case "worker":
		return errors.New("the worker is not available in this build yet")
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError("unknown command " + cmd)
}

func migrate(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	pool, err := postgres.OpenPool(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	ms, err := postgres.LoadMigrations(supabase.Migrations)
	if err != nil {
		return err
	}
	applied, err := postgres.Migrate(ctx, pool, ms)
	for _, v := range applied {
		fmt.Fprintf(stdout, "applied %s\n", v)
	}
	if err == nil && len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	return err
}

func serveAPI(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := cfg.RequireAPI(); err != nil {
		return err
	}
	pool, err := postgres.OpenPool(ctx, cfg.DatabaseURL, 20)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := postgres.NewJobStore(pool)
	objects, err := storage.New(storage.Config{URL: cfg.SupabaseURL, PublicURL: cfg.SupabasePublicURL,
		ServiceKey: cfg.ServiceRoleKey, Bucket: jobs.Bucket})
	if err != nil {
		return err
	}
	opts := api.Options{
		Jobs: store, Objects: objects, Logger: log,
		RequireAuth: cfg.RequireAuth, RateLimit: cfg.RateLimit.Requests, RateWindow: cfg.RateLimit.Window,
		TrustedProxies: cfg.TrustedProxies, CORSOrigins: cfg.CORSOrigins,
	}
	if cfg.RequireAuth {
		if opts.Auth, err = auth.New(cfg.SupabaseURL, cfg.ServiceRoleKey, 5*time.Second, time.Minute); err != nil {
			return err
		}
	}
	if cfg.FrontendURL != "" {
		if opts.FrontendURL, err = url.Parse(cfg.FrontendURL); err != nil {
			return err
		}
	}
	h := httpserver.WithHealth(api.Handler(opts), log,
		httpserver.Check{Name: "database", Fn: store.Ping},
		httpserver.Check{Name: "storage", Fn: objects.Ping})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on RUNOPS_ADDR %s: %w", cfg.Addr, err)
	}
	return httpserver.Serve(ctx, ln, h, cfg.ShutdownGrace, log)
}
