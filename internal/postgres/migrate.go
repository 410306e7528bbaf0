package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	appliedVersion        = `SELECT EXISTS (SELECT 1 FROM supabase_migrations.schema_migrations WHERE version = $1)`
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
// in its own transaction that first takes a transaction-scoped advisory lock
// and checks again that the version is not recorded: safe with several
// migrators at once, and through a transaction pooler (no session lock that
// the pooler would keep on a server connection after the transaction). It
// returns the versions it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, migrations []Migration) ([]string, error) {
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := migrationLock(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, ensureMigrationsTable)
		return err
	}); err != nil {
		return nil, migrateErr("migrate: create schema_migrations", err)
	}
	versions, err := appliedVersions(ctx, pool)
	if err != nil {
		return nil, wrap("migrate: read applied", err)
	}
	var applied []string
	for _, m := range migrations {
		if slices.Contains(versions, m.Version) {
			continue
		}
		ran := false
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if err := migrationLock(ctx, tx); err != nil {
				return err
			}
			var already bool
			if err := tx.QueryRow(ctx, appliedVersion, m.Version).Scan(&already); err != nil || already {
				return err // applied by another migrator meanwhile
			}
			// No arguments: pgx sends it with the simple protocol, which runs a
			// multi-statement file (including dollar-quoted bodies) as it is.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			ran = true
			_, err := tx.Exec(ctx, insertAppliedVersion, m.Version, []string{m.SQL}, m.Name)
			return err
		})
		if err != nil {
			return applied, migrateErr(fmt.Sprintf("migrate: apply %s_%s", m.Version, m.Name), err)
		}
		if ran {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

// ErrMigrationsHidden: the role may not read the record of applied
// migrations (a role of its own, without the schema supabase_migrations),
// so Unapplied cannot tell.
var ErrMigrationsHidden = errors.New("this role may not read supabase_migrations.schema_migrations")

// Unapplied lists the versions of migrations the database has not recorded
// (all of them when it records none: no supabase_migrations table).
func Unapplied(ctx context.Context, pool *pgxpool.Pool, migrations []Migration) ([]string, error) {
	applied, err := appliedVersions(ctx, pool)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42501": // insufficient privilege
		return nil, ErrMigrationsHidden
	case errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000"): // no such table, or schema
	case err != nil:
		return nil, wrap("read applied migrations", err)
	}
	var out []string
	for _, m := range migrations {
		if !slices.Contains(applied, m.Version) {
			out = append(out, m.Version+"_"+m.Name)
		}
	}
	return out, nil
}

// appliedVersions are the versions the database records as applied.
func appliedVersions(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	rows, err := pool.Query(ctx, selectAppliedVersions)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// migrationLock takes the migrations' lock for the transaction, waiting at
// most migrateLockWait for another migrator.
func migrationLock(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('lock_timeout', $1, true)`, migrateLockWait); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLockKey))
	return err
}

const migrateLockWait = "60s"

// migrateErr says what to do when the lock could not be had.
func migrateErr(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return fmt.Errorf("%s: another migration (runops migrate or supabase db push) has held the migrations' lock for %s; "+
			"wait for it to finish (or end it in pg_stat_activity) and run migrate again: %w", op, migrateLockWait, err)
	}
	return wrap(op, err)
}

// MigrateURL applies the migrations in fsys to the database at dsn, over a
// pool of its own, and returns the versions it applied.
func MigrateURL(ctx context.Context, dsn string, fsys fs.FS) ([]string, error) {
	pool, err := OpenPool(ctx, dsn, 2)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	ms, err := LoadMigrations(fsys)
	if err != nil {
		return nil, err
	}
	return Migrate(ctx, pool, ms)
}
