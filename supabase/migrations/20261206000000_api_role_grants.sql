-- What the API roles may use of ours (docs/security.md, "Functions and tables
-- PostgREST exposes"). On a hosted project and on the supabase CLI stack the
-- default privileges of the migrating role grant every table, function and
-- sequence a migration creates in public to anon, authenticated and
-- service_role, and PostgREST offers each function to whoever holds the
-- public anon key (POST /rest/v1/rpc/<name>). REVOKE ... FROM PUBLIC does not
-- undo those grants: they are revoked from anon and authenticated by name.
--
-- - Every public.runops_* function (the queue's bookkeeping, the jobs
--   triggers', jsonb merge, record_event, the listener slots', the connection
--   limit, object_job, readable_jobs): EXECUTE revoked from PUBLIC, anon and
--   authenticated. runops_readable_jobs() is SECURITY DEFINER: as anon it
--   listed every unowned job's id, whose SOP and screenshots the API then
--   serves to anybody (RUNOPS_REQUIRE_AUTH=false).
-- - The two functions the storage policy on storage.objects calls as the
--   signed-in user, runops_object_job(text) (plain string functions) and
--   runops_readable_jobs() (the caller's jobs and the unowned ones): EXECUTE
--   granted back to authenticated alone.
-- - public.jobs, runops_uploads, runops_webhooks, runops_listener_slots and
--   the sequence of jobs.id: every privilege revoked from anon and
--   authenticated. RLS (on, with no policy for them) already hid every row;
--   it does not cover TRUNCATE, REFERENCES or TRIGGER, and nobody but the
--   service needs them: the app reads jobs through our API only (docs/frontend-contract.md).
--
-- The service uses all of these as their owner (the migrating role), so it
-- keeps every privilege; service_role keeps what Supabase granted it. A later
-- migration that creates a function or table in public revokes it likewise
-- (TestAPIRolesReachOnlyWhatTheStoragePolicyCalls lists what is left).
-- Idempotent; on plain PostgreSQL, where the API roles do not exist, only the
-- revokes from PUBLIC apply.
DO $$
DECLARE
  api text; -- the API roles that exist here, for REVOKE ... FROM
  f regprocedure;
  t text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');

  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'runops\_%'
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    IF api IS NOT NULL THEN
      EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s', f, api);
    END IF;
  END LOOP;

  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    EXECUTE 'GRANT EXECUTE ON FUNCTION public.runops_object_job(text) TO authenticated';
    IF to_regprocedure('public.runops_readable_jobs()') IS NOT NULL THEN
      EXECUTE 'GRANT EXECUTE ON FUNCTION public.runops_readable_jobs() TO authenticated';
    END IF;
  END IF;

  IF api IS NOT NULL THEN
    FOREACH t IN ARRAY ARRAY['public.jobs', 'public.runops_uploads', 'public.runops_webhooks',
                             'public.runops_listener_slots'] LOOP
      EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', t, api);
    END LOOP;
    EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', pg_get_serial_sequence('public.jobs', 'id'), api);
  END IF;
END;
$$;
