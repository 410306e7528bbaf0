-- The queue's bookkeeping in jobs.metadata (docs/lifecycle.md): leases, attempts and
-- the merge rule, as SQL functions so that every statement that touches them
-- says the same thing. Idempotent.

-- Deep merge for objects (keys a person added survive); anything else is replaced.
CREATE OR REPLACE FUNCTION public.runops_jsonb_merge(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE
    WHEN jsonb_typeof(a) = 'object' AND jsonb_typeof(b) = 'object' THEN (
      SELECT coalesce(jsonb_object_agg(
               coalesce(ka, kb),
               CASE WHEN kb IS NULL THEN va
                    WHEN ka IS NULL THEN vb
                    ELSE public.runops_jsonb_merge(va, vb) END), '{}'::jsonb)
      FROM jsonb_each(a) AS x(ka, va)
      FULL JOIN jsonb_each(b) AS y(kb, vb) ON ka = kb)
    WHEN b IS NULL THEN a
    ELSE b
  END
$$;

-- metadata.attempt as an integer, whatever a person typed there.
CREATE OR REPLACE FUNCTION public.runops_attempt(meta jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE WHEN jsonb_typeof(meta->'attempt') = 'number'
              THEN greatest(floor((meta->>'attempt')::numeric), 0)::integer ELSE 0 END
$$;

-- Whether the lease in meta has expired, given that there is one; whatever
-- a person typed there, a lease that cannot be read counts as expired.
CREATE OR REPLACE FUNCTION public.runops_lease_past(meta jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  RETURN coalesce((meta->'lease'->>'expires_at')::timestamptz < now(), true);
EXCEPTION WHEN others THEN
  RETURN true;
END;
$$;

-- Whether the lease in meta is absent or expired. The claim evaluates it for
-- every candidate row: rows without a lease (nearly all queued ones) take the
-- plain-SQL path, with no subtransaction.
CREATE OR REPLACE FUNCTION public.runops_lease_expired(meta jsonb)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT CASE
    WHEN jsonb_typeof(meta->'lease') IS DISTINCT FROM 'object' THEN true
    ELSE public.runops_lease_past(meta)
  END
$$;

-- Ends the attempts[] entry of lease token tok with outcome (and a short
-- cause), and drops the lease if it is tok's.
CREATE OR REPLACE FUNCTION public.runops_close_attempt(meta jsonb, tok text, outcome text, cause text)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  SELECT CASE WHEN m->'lease'->>'token' = tok THEN m - 'lease' ELSE m END
         || CASE WHEN jsonb_typeof(m->'attempts') = 'array' THEN jsonb_build_object('attempts', (
              SELECT coalesce(jsonb_agg(
                       CASE WHEN e->>'token' = tok AND NOT e ? 'ended_at'
                            THEN e || jsonb_build_object('ended_at', now(), 'outcome', outcome, 'error', cause)
                            ELSE e END ORDER BY i), '[]'::jsonb)
              FROM jsonb_array_elements(m->'attempts') WITH ORDINALITY AS t(e, i)))
            ELSE '{}'::jsonb END
  FROM (SELECT coalesce(meta, '{}'::jsonb) AS m) AS s
$$;

-- A claim: closes a previous holder's open attempt as lost, counts the
-- attempt, stamps the lease and appends to attempts (keeping the last 20).
CREATE OR REPLACE FUNCTION public.runops_begin_attempt(meta jsonb, tok text, worker text, ttl interval)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  m jsonb := coalesce(meta, '{}'::jsonb);
  n integer;
  hist jsonb;
BEGIN
  IF jsonb_typeof(m->'lease') = 'object' AND m->'lease'->>'token' IS NOT NULL THEN
    m := public.runops_close_attempt(m, m->'lease'->>'token', 'lost', 'lease expired');
  END IF;
  n := public.runops_attempt(m) + 1;
  hist := CASE WHEN jsonb_typeof(m->'attempts') = 'array' THEN m->'attempts' ELSE '[]'::jsonb END
          || jsonb_build_array(jsonb_build_object('n', n, 'token', tok, 'worker', worker, 'started_at', now()));
  IF jsonb_array_length(hist) > 20 THEN
    hist := (SELECT jsonb_agg(e ORDER BY i) FROM jsonb_array_elements(hist) WITH ORDINALITY AS t(e, i)
             WHERE i > jsonb_array_length(hist) - 20);
  END IF;
  RETURN (m - 'stage' - 'progress') || jsonb_build_object(
    'attempt', n,
    'lease', jsonb_build_object('token', tok, 'worker', worker, 'expires_at', now() + ttl),
    'attempts', hist);
END;
$$;

-- A person setting status to 'queued' in the dashboard starts a new run: a
-- fresh count of attempts, no stale error. The queue's own re-queues (rescue,
-- shutdown hand-back) always change the lease in the same statement, which is
-- how they are told apart. A live lease is kept, so that nobody claims the job
-- before its holder has stopped.
CREATE OR REPLACE FUNCTION public.runops_jobs_requeued()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF (OLD.metadata->'lease') IS NOT DISTINCT FROM (NEW.metadata->'lease') THEN
    NEW.metadata := coalesce(NEW.metadata, '{}'::jsonb) || '{"attempt": 0}'::jsonb;
    NEW.error := NULL;
    NEW.completed_at := NULL;
  END IF;
  RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS jobs_requeued ON public.jobs;
CREATE TRIGGER jobs_requeued
  BEFORE UPDATE OF status ON public.jobs
  FOR EACH ROW
  WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued')
  EXECUTE FUNCTION public.runops_jobs_requeued();
