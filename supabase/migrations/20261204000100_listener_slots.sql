-- Listener slots: how many worker processes may hold a direct LISTEN
-- connection at once, decided through the database before any of them opens
-- one (docs/operations.md, "Deploying a fleet"). A worker claims a slot
-- through its pool (transaction poolers included: one statement, a
-- transaction-scoped lock), renews it like a lease, and only then connects to
-- LISTEN; a worker without one polls. The cap is a number, or a share of the
-- connection limit this role gets from PostgreSQL, so that the pooler's own
-- server connections, which come out of the same budget, are never starved.
-- public.jobs stays exactly as the app knows it. Idempotent.

CREATE TABLE IF NOT EXISTS public.runops_listener_slots (
  slot       INTEGER PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE public.runops_listener_slots ENABLE ROW LEVEL SECURITY;

-- The connections PostgreSQL lets the current role open: max_connections
-- less the slots kept for superusers (and, from PostgreSQL 16, for
-- pg_use_reserved_connections), and the role's own CONNECTION LIMIT.
CREATE OR REPLACE FUNCTION public.runops_connection_limit()
RETURNS integer
LANGUAGE sql STABLE
AS $$
  SELECT least(
    current_setting('max_connections')::int
      - CASE WHEN r.rolsuper THEN 0
             ELSE current_setting('superuser_reserved_connections')::int
                  + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0)
        END,
    CASE WHEN r.rolconnlimit >= 0 THEN r.rolconnlimit ELSE 2147483647 END)
  FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
$$;

-- Renews holder's slot, or claims the lowest free one, for ttl; returns the
-- slot (NULL when all are taken) and the cap: max_slots (negative: none) and
-- share of the role's connection limit, rounded down (0: none), whichever is
-- smaller. A
-- holder keeps one slot at most, and none above a lowered cap. Claims are
-- serialised by a transaction-scoped lock (rare: at start, and every sweep
-- by a worker without a slot).
CREATE OR REPLACE FUNCTION public.runops_listener_slot(p_holder TEXT, max_slots INTEGER, share FLOAT8, ttl_seconds FLOAT8)
RETURNS TABLE (slot INTEGER, slots INTEGER)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
  cap integer;
  got integer;
BEGIN
  cap := CASE WHEN share > 0 THEN greatest(floor(public.runops_connection_limit() * share)::int, 0) END;
  IF max_slots >= 0 THEN
    cap := least(coalesce(cap, max_slots), max_slots);
  END IF;
  cap := coalesce(cap, 0);
  PERFORM pg_advisory_xact_lock(7305186219453002741); -- 'runops listener slots'
  UPDATE public.runops_listener_slots s SET expires_at = now() + make_interval(secs => ttl_seconds)
  WHERE s.holder = p_holder AND s.expires_at > now() AND s.slot <= cap
  RETURNING s.slot INTO got;
  IF got IS NULL THEN
    SELECT g INTO got FROM generate_series(1, cap) g
    WHERE NOT EXISTS (SELECT 1 FROM public.runops_listener_slots s WHERE s.slot = g AND s.expires_at > now())
    ORDER BY g LIMIT 1;
    IF got IS NOT NULL THEN
      INSERT INTO public.runops_listener_slots AS s (slot, holder, expires_at)
      VALUES (got, p_holder, now() + make_interval(secs => ttl_seconds))
      ON CONFLICT ON CONSTRAINT runops_listener_slots_pkey DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at;
    END IF;
  END IF;
  DELETE FROM public.runops_listener_slots s WHERE s.holder = p_holder AND s.slot IS DISTINCT FROM got;
  RETURN QUERY SELECT got, cap;
END;
$$;

-- Internal to the workers: PostgREST must not offer them to the app's users.
REVOKE ALL ON FUNCTION public.runops_listener_slot(TEXT, INTEGER, FLOAT8, FLOAT8) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.runops_connection_limit() FROM PUBLIC;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    EXECUTE 'REVOKE ALL ON public.runops_listener_slots FROM anon, authenticated';
    EXECUTE 'REVOKE ALL ON FUNCTION public.runops_listener_slot(TEXT, INTEGER, FLOAT8, FLOAT8) FROM anon, authenticated';
    EXECUTE 'REVOKE ALL ON FUNCTION public.runops_connection_limit() FROM anon, authenticated';
  END IF;
END;
$$;
