package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role creates an ordinary login role on dsn's database, as the service's
// role is on a hosted project: no superuser (so PostgreSQL keeps
// superuser_reserved_connections from it), row security bypassed as the
// table owner's would be, the privileges of the service on the public
// schema, and limit connections of its own (-1: none). It returns dsn as that
// role; the role is dropped when the test ends.
func Role(t testing.TB, dsn string, limit int) string {
	t.Helper()
	name := fmt.Sprintf("runops_r%d", counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		fmt.Sprintf(`CREATE ROLE %s LOGIN NOSUPERUSER BYPASSRLS CONNECTION LIMIT %d`, name, limit),
		`GRANT USAGE ON SCHEMA public TO ` + name,
		`GRANT ALL ON ALL TABLES IN SCHEMA public TO ` + name,
		`GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ` + name,
		`GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO ` + name,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("pgtest: %s: %v", sql, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("pgtest: drop role: %v", err)
			return
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'`, name))
		for _, sql := range []string{`DROP OWNED BY ` + name, `DROP ROLE ` + name} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Errorf("pgtest: %s: %v", sql, err)
			}
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(name)
	return u.String()
}

// SetConnectionLimit changes the role's own connection limit (-1: none); a
// role's connections past it are refused with SQLSTATE 53300, as when a
// server runs out of connections.
func SetConnectionLimit(t testing.TB, adminDSN, roleDSN string, limit int) {
	t.Helper()
	u, err := url.Parse(roleDSN)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), fmt.Sprintf(`ALTER ROLE %s CONNECTION LIMIT %d`, u.User.Username(), limit)); err != nil {
		t.Fatal(err)
	}
}
