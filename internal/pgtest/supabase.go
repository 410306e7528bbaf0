package pgtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/supabase"
)

// supabaseSchemas is the part of a Supabase database that the migrations and
// the storage policies build on, as Supabase defines it (docs/security.md):
// the API roles (service_role bypasses RLS), auth.uid() reading the claims
// the storage server sets for every request, storage.buckets/objects with
// RLS on and the grants of a hosted project, and the default privileges that
// hosted projects and the supabase CLI stack give the role that migrates
// (postgres there): every table, function and sequence it creates in public
// is granted to anon, authenticated and service_role. Roles are
// cluster-wide: made once.
const supabaseSchemas = `
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- another test binary made them first
END $$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE SCHEMA storage;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL, public boolean DEFAULT false,
  file_size_limit bigint, allowed_mime_types text[]);
CREATE TABLE storage.objects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  bucket_id text REFERENCES storage.buckets (id),
  name text,
  owner uuid,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  last_accessed_at timestamptz DEFAULT now(),
  metadata jsonb,
  path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED);
CREATE UNIQUE INDEX bucketid_objname ON storage.objects (bucket_id, name);
CREATE INDEX name_prefix_search ON storage.objects (name text_pattern_ops);
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
GRANT ALL ON storage.objects, storage.buckets TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
`

// SupabasePool is Pool for a database made as on a Supabase project:
// Supabase's roles, auth and storage schemas and default privileges first,
// then every migration from the start, so that each object a migration
// creates in public is granted as Supabase grants it before any later
// migration revokes it; then every migration once more (each is idempotent).
// The databases are clones of a template of their own, made once per test
// binary; New's template has none of this.
func SupabasePool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return openPool(t, supabaseTemplate.clone(t))
}

var supabaseTemplate = &templateDB{what: "supabase template database", make: makeSupabaseTemplate}

// makeSupabaseTemplate makes SupabasePool's template: an empty database,
// Supabase's part, the migrations as `runops migrate` or `supabase db push`
// applies them, then all of them again.
func makeSupabaseTemplate() (string, error) {
	return makeSupabaseTemplateOf("runops_stmpl", func(ctx context.Context, pool *pgxpool.Pool) error {
		ms, err := postgres.LoadMigrations(supabase.Migrations)
		if err != nil {
			return err
		}
		if _, err := postgres.Migrate(ctx, pool, ms); err != nil {
			return err
		}
		if err := migrateAgain(ctx, pool); err != nil {
			return fmt.Errorf("migrations applied again: %w", err)
		}
		return nil
	})
}

// makeSupabaseTemplateOf makes a template database of Supabase's part, then
// fills it.
func makeSupabaseTemplateOf(prefix string, fill func(ctx context.Context, pool *pgxpool.Pool) error) (string, error) {
	return makeTemplateOf(prefix, func(ctx context.Context, dsn string) error {
		pool, err := postgres.OpenPool(ctx, dsn, 2)
		if err != nil {
			return err
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, supabaseSchemas); err != nil {
			return fmt.Errorf("supabase schemas: %w", err)
		}
		return fill(ctx, pool)
	})
}

// migrateAgain applies every migration once more (each is idempotent).
func migrateAgain(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := postgres.LoadMigrations(supabase.Migrations)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("%s: %w", m.Version, err)
		}
	}
	return nil
}

// SupabaseBare is SupabasePool before any migration: Supabase's roles, auth
// and storage schemas and default privileges only, for a test that applies
// the migrations itself.
func SupabaseBare(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return openPool(t, bareTemplate.clone(t))
}

var bareTemplate = &templateDB{what: "bare supabase template database", make: func() (string, error) {
	return makeSupabaseTemplateOf("runops_sbare", func(context.Context, *pgxpool.Pool) error { return nil })
}}
