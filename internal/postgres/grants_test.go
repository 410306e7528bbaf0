package postgres_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/runops/runops/internal/pgtest"
)

// exposedToAPIRoles lists what anon and authenticated may use in schema
// public, one line per object and role: every function they may execute
// (PostgREST offers each as POST /rest/v1/rpc/<name> to whoever holds the
// public anon key), every privilege they hold on a table or view (with
// whether RLS is on and which policies apply to them, since RLS does not
// guard TRUNCATE, REFERENCES or TRIGGER) and on a sequence. A function that
// PUBLIC may execute is listed for PUBLIC too: any role made later could.
const exposedToAPIRoles = `
WITH roles(r) AS (VALUES ('anon'), ('authenticated')),
funcs AS (
  SELECT p.oid, format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS what
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname = 'public'),
rels AS (
  SELECT c.oid, c.relkind, c.relrowsecurity,
         format('%s %I.%I', CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                                           WHEN 'm' THEN 'materialized view' ELSE 'table' END,
                n.nspname, c.relname) AS what
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))
SELECT what, r, 'EXECUTE', '' FROM funcs, roles WHERE has_function_privilege(r, oid, 'EXECUTE')
UNION ALL
SELECT what, 'PUBLIC', 'EXECUTE', '' FROM funcs f
WHERE (SELECT p.proacl IS NULL FROM pg_proc p WHERE p.oid = f.oid)
   OR EXISTS (SELECT 1 FROM pg_proc p, aclexplode(p.proacl) a
              WHERE p.oid = f.oid AND a.grantee = 0 AND a.privilege_type = 'EXECUTE')
UNION ALL
SELECT what, r, string_agg(priv, ',' ORDER BY priv),
       CASE WHEN relrowsecurity THEN 'RLS on' ELSE 'RLS off' END || coalesce(', policies ' || (
         SELECT string_agg(pol.polname, ', ' ORDER BY pol.polname) FROM pg_policy pol
         WHERE pol.polrelid = rels.oid AND (0 = ANY (pol.polroles) OR r::regrole::oid = ANY (pol.polroles))), ', no policy')
FROM rels, roles, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) priv
WHERE relkind <> 'S' AND has_table_privilege(r, oid, priv)
GROUP BY what, r, relrowsecurity, oid
UNION ALL
SELECT what, r, string_agg(priv, ',' ORDER BY priv), ''
FROM rels, roles, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) priv
WHERE CASE WHEN relkind = 'S' THEN has_sequence_privilege(r, oid, priv) END -- only sequences: it fails on others
GROUP BY what, r
ORDER BY 1, 2`

// On a database made as on a Supabase project (whose default privileges
// grant every table, function and sequence a migration creates in public to
// anon and authenticated), the API roles may use nothing of ours but what the
// storage policy on storage.objects calls as the signed-in user: its two
// functions, by authenticated alone. Everything else — the queue's functions,
// the triggers', the webhook outbox's, the listener slots', and every table
// and sequence — is the service's, which uses them as their owner.
func TestAPIRolesReachOnlyWhatTheStoragePolicyCalls(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.SupabasePool(t)
	ctx := context.Background()
	allowed := map[string]bool{
		"function public.runops_readable_jobs() authenticated EXECUTE":       true,
		"function public.runops_object_job(name text) authenticated EXECUTE": true,
	}
	rows, err := pool.Query(ctx, exposedToAPIRoles)
	if err != nil {
		t.Fatal(err)
	}
	type grant struct{ What, Role, Privileges, RLS string }
	grants, err := pgx.CollectRows(rows, pgx.RowToStructByPos[grant])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range grants {
		key := g.What + " " + g.Role + " " + g.Privileges
		seen[key] = true
		if !allowed[key] && g.RLS != "" {
			t.Errorf("%s: %s may %s (%s)", g.What, g.Role, g.Privileges, g.RLS)
		} else if !allowed[key] {
			t.Errorf("%s: %s may %s", g.What, g.Role, g.Privileges)
		}
	}
	// The policy needs both: without them every signed-in user's read fails.
	for key := range allowed {
		if !seen[key] {
			t.Errorf("not granted: %s", key)
		}
	}

	// The database must have had Supabase's default privileges when each
	// object was made, or the listing above proves nothing: service_role,
	// which the migrations leave alone, holds them on every one.
	var missed []string
	err = pool.QueryRow(ctx, `SELECT coalesce(array_agg(what ORDER BY what), '{}') FROM (
  SELECT p.proname::text AS what FROM pg_proc p
  WHERE p.pronamespace = 'public'::regnamespace AND NOT has_function_privilege('service_role', p.oid, 'EXECUTE')
  UNION ALL
  SELECT c.relname::text FROM pg_class c
  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    AND NOT has_table_privilege('service_role', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE')
  UNION ALL
  SELECT c.relname::text FROM pg_class c
  WHERE c.relnamespace = 'public'::regnamespace
    AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege('service_role', c.oid, 'USAGE,SELECT,UPDATE') END) x`).Scan(&missed)
	if err != nil {
		t.Fatal(err)
	}
	if len(missed) > 0 {
		t.Errorf("not granted by default privileges (SupabasePool must set them before migrating): %v", missed)
	}

	// Should a grant come back (a dashboard click, a GRANT ... ON ALL TABLES),
	// RLS with no policy for the API roles still hides every row.
	rows, err = pool.Query(ctx, `SELECT c.relname::text FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	open, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range open {
		t.Errorf("table public.%s has RLS off", name)
	}
}

// runops_readable_jobs() is a SECURITY DEFINER function that reads
// runops_uploads, which the API roles cannot: anon may not call it at all
// (through PostgREST's /rpc it would list every unowned job to anybody), and
// a signed-in user learns from it only their own jobs and the unowned ones —
// what a listing of the bucket would show them.
func TestReadableJobsAnswersOnlyTheSignedInCaller(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.SupabasePool(t)
	jobA, jobB, jobU, jobH := ownedJobs(t, pool) // jobH: a row a person added in the dashboard
	const readable = `SELECT x FROM public.runops_readable_jobs() x ORDER BY 1`

	_, err := anon.rows(pool, readable)
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Errorf("anon calls runops_readable_jobs(): %v; want permission denied (42501)", err)
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	for _, tc := range []struct {
		who  caller
		want []string
	}{
		{userA, sorted(jobA, jobU, jobH)},
		{userB, sorted(jobB, jobU, jobH)},
		{caller{"authenticated", ""}, sorted(jobU, jobH)}, // a token without a subject owns nothing
	} {
		if got := tc.who.names(t, pool, readable); !slices.Equal(got, tc.want) {
			t.Errorf("%s %q is told %v; want %v", tc.who.role, tc.who.sub, got, tc.want)
		}
	}
}
