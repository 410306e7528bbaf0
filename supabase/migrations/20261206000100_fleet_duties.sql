-- Fleet duties: work one worker of the fleet does for all of them — the
-- rescue of expired leases and the retention janitor (docs/operations.md,
-- "Deploying a fleet"). Each worker used to run both every sweep: about half
-- a transaction a second per idle worker, most of an idle fleet's load. A
-- duty is held like a lease: claimed and renewed through the pool (one
-- statement, so through a transaction pooler too), given up when its holder
-- stops, taken by another worker once it expires when its holder dies.
-- public.jobs stays exactly as the app knows it. Idempotent.

CREATE TABLE IF NOT EXISTS public.runops_duties (
  duty       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE public.runops_duties ENABLE ROW LEVEL SECURITY;

-- Renews p_holder's tenure of p_duty, or gives it the duty when nobody
-- holds it or its holder's tenure has expired, for ttl_seconds; tells
-- whether p_holder holds it now.
CREATE OR REPLACE FUNCTION public.runops_duty(p_duty TEXT, p_holder TEXT, ttl_seconds FLOAT8)
RETURNS boolean
LANGUAGE sql
AS $$
  WITH held AS (
    INSERT INTO public.runops_duties AS d (duty, holder, expires_at)
    VALUES (p_duty, p_holder, now() + make_interval(secs => ttl_seconds))
    ON CONFLICT (duty) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE d.holder = EXCLUDED.holder OR d.expires_at <= now()
    RETURNING true
  )
  SELECT coalesce((SELECT true FROM held), false)
$$;

-- Internal to the workers: not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
BEGIN
  REVOKE ALL ON FUNCTION public.runops_duty(TEXT, TEXT, FLOAT8) FROM PUBLIC;
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_duty(TEXT, TEXT, FLOAT8) FROM %s', api);
    EXECUTE format('REVOKE ALL ON TABLE public.runops_duties FROM %s', api);
  END IF;
END $$;
