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
// the storage server sets for every request, and storage.buckets/objects with
// RLS on and the grants of a hosted project. Roles are cluster-wide: made once.
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
`

// SupabasePool is Pool for a database that also has Supabase's roles, auth
// and storage schemas (created before the migrations run, as on a Supabase
// project), with the migrations applied once more on top so that they find
// the storage schema. It is not the shared template: each call builds it.
func SupabasePool(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	pool, dsn := Pool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, supabaseSchemas); err != nil {
		t.Fatalf("pgtest: supabase schemas: %v", err)
	}
	if err := migrateAgain(ctx, pool); err != nil {
		t.Fatalf("pgtest: migrations on the supabase schemas: %v", err)
	}
	return pool, dsn
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
