package postgres

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateLockKey serialises concurrent `runops migrate` runs (and test
// packages) on one database.
const migrateLockKey = 0x52554e4f5053 // "RUNOPS"

// The table the supabase CLI keeps, so that the CLI and `runops migrate` never
// apply one file twice.
const ensureMigrationsTable = `
CREATE SCHEMA IF NOT EXISTS supabase_migrations;
CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY);
ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[];
ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text;`

const (
	selectAppliedVersions = `SELECT version FROM supabase_migrations.schema_migrations`
	insertAppliedVersion  = `INSERT INTO supabase_migrations.schema_migrations (version, statements, name) VALUES ($1, $2, $3)`
)

// Migration is one file of supabase/migrations.
type Migration struct {
	Version string // the digits before the first underscore
	Name    string // the rest, without .sql
	SQL     string
}

// LoadMigrations reads <version>_<name>.sql files from the root of fsys in version order.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	paths, err := fs.Glob(fsys, "*/*.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, p := range paths {
		base := strings.TrimSuffix(path.Base(p), ".sql")
		version, name, ok := strings.Cut(base, "_")
		if !ok || version == "" || strings.Trim(version, "0123456789") != "" {
			return nil, fmt.Errorf("migration %s: name must be <digits>_<name>.sql", p)
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: version, Name: name, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Migrate applies the migrations that the database has not recorded yet, each
// in its own transaction, under an advisory lock. It returns the versions it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, migrations []Migration) ([]string, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, wrap("migrate: connect", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLockKey)); err != nil {
		return nil, wrap("migrate: lock", err)
	}
	defer func() {
		// A fresh context: the lock must be released even when ctx is done.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLockKey))
	}()
	if _, err := conn.Exec(ctx, ensureMigrationsTable); err != nil {
		return nil, wrap("migrate: create schema_migrations", err)
	}
	rows, err := conn.Query(ctx, selectAppliedVersions)
	if err != nil {
		return nil, wrap("migrate: read applied", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrap("migrate: read applied", err)
	}
	done := make(map[string]bool, len(versions))
	for _, v := range versions {
		done[v] = true
	}
	var applied []string
	for _, m := range migrations {
		if done[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: pgx sends it with the simple protocol, which runs a
			// multi-statement file (including dollar-quoted bodies) as it is.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, insertAppliedVersion, m.Version, []string{m.SQL}, m.Name)
			return err
		})
		if err != nil {
			return applied, wrap(fmt.Sprintf("migrate: apply %s_%s", m.Version, m.Name), err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}
