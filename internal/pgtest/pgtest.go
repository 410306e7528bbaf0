// Package pgtest gives tests a real, migrated PostgreSQL database. With
// TEST_DATABASE_URL (a postgres:// URL of a role that may CREATE DATABASE) it
// uses that server; otherwise it starts a throwaway cluster from the installed
// PostgreSQL binaries, as an unprivileged user on a free port, and removes it
// when the test binary ends, even when tests fail. A missing PostgreSQL fails
// the tests loudly: it never skips them.
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and call New(t) for a fresh database cloned from a migrated template.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/supabase"
)

var (
	adminURL string // the server's maintenance database, as a URL

	migrated = &templateDB{what: "template database", make: makeTemplate}

	cloneMu sync.Mutex
	counter atomic.Int64
)

// Main runs the tests of a package against a real PostgreSQL and exits.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main for a TestMain with cleanup of its own: it returns the exit code.
func Run(m *testing.M) int {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		adminURL = u
		return m.Run()
	}
	c, err := startCluster(300)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: cannot start PostgreSQL: %v\n"+
			"pgtest: install the server (apt-get install postgresql) or set TEST_DATABASE_URL\n", err)
		return 1
	}
	defer c.stop()
	adminURL = c.url
	return m.Run()
}

// AdminURL is the URL of the server's maintenance database (for tests that
// need a connection outside any test database).
func AdminURL() string { return adminURL }

// New returns the URL of a new database with every migration applied. It is
// dropped when the test ends.
func New(t testing.TB) string {
	t.Helper()
	return migrated.clone(t)
}

// templateDB is a template database, made on its first use, once per test
// binary.
type templateDB struct {
	what string // what the error says could not be made
	make func() (string, error)
	once sync.Once
	name string
	err  error
}

// clone returns the URL of a new database made from the template, dropped
// when the test ends.
func (db *templateDB) clone(t testing.TB) string {
	t.Helper()
	if adminURL == "" {
		t.Fatal("pgtest: no server; call pgtest.Main from TestMain")
	}
	db.once.Do(func() { db.name, db.err = db.make() })
	if db.err != nil {
		t.Fatalf("pgtest: %s: %v", db.what, db.err)
	}
	return clone(t, db.name)
}

// clone returns the URL of a new database made from template, dropped when
// the test ends.
func clone(t testing.TB, template string) string {
	t.Helper()
	name := fmt.Sprintf("runops_t%d_%d", os.Getpid(), counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cloneMu.Lock()
	err := adminExec(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, template))
	cloneMu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return withDatabase(adminURL, name)
}

// Pool returns a pool on a new database (see New), closed when the test ends.
func Pool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return openPool(t, New(t))
}

// openPool opens a pool of 10 on the database at dsn, closed when the test
// ends.
func openPool(t testing.TB, dsn string) (*pgxpool.Pool, string) {
	t.Helper()
	return Open(t, dsn, 10), dsn
}

// Open opens a pool of at most conns connections on dsn as the product
// does (postgres.OpenPool), closed when the test ends.
func Open(t testing.TB, dsn string, conns int32) *pgxpool.Pool {
	t.Helper()
	pool, err := postgres.OpenPool(context.Background(), dsn, conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Server starts a PostgreSQL server of its own, allowing maxConnections
// connections (superuser_reserved_connections is 3), with one migrated
// database, whose URL it returns (as the superuser); it stops when the test
// ends. For benchmarks of connection budgets: New's server allows 300.
func Server(tb testing.TB, maxConnections int) string {
	tb.Helper()
	c, err := startCluster(maxConnections)
	if err != nil {
		tb.Fatalf("pgtest: cannot start PostgreSQL: %v", err)
	}
	tb.Cleanup(c.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := postgres.OpenPool(ctx, c.url, 2)
	if err != nil {
		tb.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE DATABASE runops`); err != nil {
		tb.Fatal(err)
	}
	dsn := withDatabase(c.url, "runops")
	if _, err := postgres.MigrateURL(ctx, dsn, supabase.Migrations); err != nil {
		tb.Fatalf("pgtest: migrate: %v", err)
	}
	return dsn
}

// makeTemplate makes New's template: the migrations applied to an empty
// database.
func makeTemplate() (string, error) {
	return makeTemplateOf("runops_tmpl", func(ctx context.Context, dsn string) error {
		_, err := postgres.MigrateURL(ctx, dsn, supabase.Migrations)
		return err
	})
}

// makeTemplateOf makes a template database, named prefix and the process's
// id, and fills it: an earlier process of the same id left its template
// behind at most, which is dropped first.
func makeTemplateOf(prefix string, fill func(ctx context.Context, dsn string) error) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := fmt.Sprintf("%s%d", prefix, os.Getpid())
	if err := adminExec(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name)); err != nil {
		return "", err
	}
	if err := adminExec(ctx, fmt.Sprintf(`CREATE DATABASE %s`, name)); err != nil {
		return "", err
	}
	if err := fill(ctx, withDatabase(adminURL, name)); err != nil {
		return "", err
	}
	return name, nil
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns u with its database replaced by name.
func withDatabase(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil || (parsed.Scheme != "postgres" && parsed.Scheme != "postgresql") {
		panic("pgtest: TEST_DATABASE_URL must be a postgres:// URL")
	}
	parsed.Path = "/" + name
	return parsed.String()
}
