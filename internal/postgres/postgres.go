// Package postgres is the PostgreSQL adapter: connection pools, the migration
// runner and the SQL of public.jobs. pgx types stay inside this package; callers
// see domain types and the sentinels of package jobs. It must not know about
// HTTP, storage or media.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
)

// Named gives a connection string an application_name (runops-api,
// runops-worker, runops-listener, …) unless it has one, so that operators can
// tell the processes' connections apart in pg_stat_activity. A string that is
// not a URL is returned as it is.
func Named(dsn, name string) string {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return dsn
	}
	q := u.Query()
	if q.Get("application_name") == "" {
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// OpenPool connects a pool to dsn. Unknown DSN keys become session settings
// (e.g. statement_timeout). A cancelled context sends a server-side cancel, so a
// timed-out query does not keep running on the server.
func OpenPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(stripPoolerFlag(dsn))
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", redactErr(err))
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if !strings.Contains(dsn, "default_query_exec_mode=") {
		// A transaction pooler (which no client can detect) hands each
		// transaction to any server connection: a named prepared statement
		// made on one is unknown on the next. Cached descriptions need no
		// name: each query is parsed again as the unnamed statement in the
		// same round trip, and its parameters keep their SQL types (a
		// map for a jsonb column still encodes). Safe with or without a
		// pooler (docs/operations.md).
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{
			Conn:               c,
			CancelRequestDelay: 100 * time.Millisecond,
			DeadlineDelay:      2 * time.Second,
		}
	}
	// pgx pings a connection idle for over a second before handing it out:
	// an idle worker's every statement (a claim poll, a slot renewal) cost a
	// round trip more, half of an idle fleet's traffic. A connection idle
	// for under a minute is trusted; one that broke meanwhile fails its
	// statement, which every caller retries, and the pool replaces it.
	cfg.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool { return p.IdleDuration > time.Minute }
	// The pool connects lazily: a database that is down at start makes /readyz
	// fail and requests answer 503, and both recover on their own.
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", redactErr(err))
	}
	return pool, nil
}

// stripPoolerFlag removes pgbouncer=true (a client-side hint some tools add),
// which PostgreSQL would otherwise get as an unknown setting.
func stripPoolerFlag(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || !u.Query().Has("pgbouncer") {
		return dsn
	}
	q := u.Query()
	q.Del("pgbouncer")
	u.RawQuery = q.Encode()
	return u.String()
}

// redactErr drops the DSN (and so the password) that pgx may quote in parse errors.
func redactErr(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "postgres"); i >= 0 && strings.Contains(msg, "@") {
		return errors.New("invalid connection string")
	}
	return err
}

// unavailable tells whether err means "the database cannot answer now"
// (connection refused or lost, shutdown, out of connections, memory or
// disk, timeouts, and a transaction PostgreSQL rolled back for another's
// sake, which the same statement gets through again) as opposed to an error
// in the SQL or the data. A configured limit (53400, temp_file_limit) is
// not one: the same statement meets it again.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err != nil
	}
	switch pgErr.Code {
	case "53000", "53100", "53200", "53300", // insufficient resources, disk full, out of memory, too many connections
		"57014",          // query cancelled (statement timeout)
		"40001", "40P01": // serialization failure, deadlock detected
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") || // connection exception
		strings.HasPrefix(pgErr.Code, "57P") // admin shutdown, cannot connect now
}

// wrap turns a driver error into one callers can branch on.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available: lock_timeout
		return fmt.Errorf("%s: %w: %w: %w", op, jobs.ErrBusy, jobs.ErrUnavailable, err)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "53300" { // too_many_connections
		return fmt.Errorf("%s: %w: %w: %w", op, jobs.ErrNoConnections, jobs.ErrUnavailable, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, jobs.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
