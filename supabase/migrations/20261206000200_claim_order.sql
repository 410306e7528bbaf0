-- The order of claims (docs/lifecycle.md): by priority, then the oldest.
-- metadata.priority is an integer from -100 to 100, lower runs sooner,
-- absent = 0; a person sets it on a queued row in the dashboard, and the next
-- claim takes it into account. Anything else there — text, a fraction, out of
-- range — is read as 0: a bad edit never breaks claiming (runops jobs show
-- says so).
--
-- Claims read the queue through runops_queue, a row per queued job with its
-- priority, kept by a trigger on public.jobs: an index over jobs' metadata
-- would make every heartbeat (a metadata write on a processing row) a non-HOT
-- update, and public.jobs stays exactly as the app knows it. The trigger runs
-- only for rows that are or become queued: never for a heartbeat, nor for a
-- worker's claim, which takes its rows out itself.
-- Idempotent.

CREATE OR REPLACE FUNCTION public.runops_priority(meta jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN jsonb_typeof(meta->'priority') = 'number'
     AND (meta->>'priority') ~ '^-?[0-9]{1,3}$'
     AND (meta->>'priority')::integer BETWEEN -100 AND 100
    THEN (meta->>'priority')::integer
    ELSE 0
  END
$$;

CREATE TABLE IF NOT EXISTS public.runops_queue (
  id         INTEGER PRIMARY KEY, -- public.jobs.id
  priority   INTEGER NOT NULL,
  created_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE public.runops_queue ENABLE ROW LEVEL SECURITY;

CREATE INDEX IF NOT EXISTS runops_queue_order_idx ON public.runops_queue (priority, created_at, id);

-- Keeps runops_queue the queued jobs, each with its priority.
CREATE OR REPLACE FUNCTION public.runops_queue_sync()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF TG_OP <> 'INSERT' AND OLD.status = 'queued'
     AND (TG_OP = 'DELETE' OR NEW.status <> 'queued' OR NEW.id <> OLD.id) THEN
    DELETE FROM public.runops_queue WHERE id = OLD.id;
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.status = 'queued' THEN
    INSERT INTO public.runops_queue AS q (id, priority, created_at)
    VALUES (NEW.id, public.runops_priority(NEW.metadata), NEW.created_at)
    ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, created_at = EXCLUDED.created_at
    WHERE (q.priority, q.created_at) IS DISTINCT FROM (EXCLUDED.priority, EXCLUDED.created_at);
  END IF;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS runops_queue_insert_delete ON public.jobs;
CREATE TRIGGER runops_queue_insert_delete
  AFTER INSERT OR DELETE ON public.jobs
  FOR EACH ROW EXECUTE FUNCTION public.runops_queue_sync();

-- A worker's claim (queued -> processing, in a transaction that says it is
-- the worker's) takes its rows out of runops_queue itself, in the claim's
-- statement: no trigger call for it.
DROP TRIGGER IF EXISTS runops_queue_update ON public.jobs;
CREATE TRIGGER runops_queue_update
  AFTER UPDATE ON public.jobs
  FOR EACH ROW WHEN ((OLD.status = 'queued' OR NEW.status = 'queued')
    AND NOT (OLD.status = 'queued' AND NEW.status = 'processing' AND OLD.id = NEW.id
             AND current_setting('runops.writer', true) IS NOT DISTINCT FROM 'worker'))
  EXECUTE FUNCTION public.runops_queue_sync();

-- A claim: up to n claimable jobs for p_worker, each under a lease token of
-- its own, by priority then the oldest, read from runops_queue in that order
-- and taken out of it. A function, so that its plan is made once a session:
-- the statement planned anew at every claim cost as much as running it.
--
-- Its plan is kept for the session, so it must not depend on the queue's
-- size when it was made: planned while runops_queue looked empty (a new
-- database, a burst not yet analysed), a scan and sort of the whole queue
-- would be kept for every claim after. The queue is read through its index,
-- and only so: no sequential scan, no sort, whatever the statistics say.
CREATE OR REPLACE FUNCTION public.runops_claim(p_worker TEXT, ttl_seconds FLOAT8, n INTEGER)
RETURNS TABLE (job_id TEXT, status TEXT, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, completed_at TIMESTAMPTZ,
               error TEXT, metadata JSONB, queued_at TIMESTAMPTZ)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_sort = off
AS $$
#variable_conflict use_column
BEGIN
  -- The worker's own claim: the notify trigger stays silent for it
  -- (…_quiet_worker_writes.sql), runops_queue's trigger leaves its rows to
  -- this statement.
  PERFORM set_config('runops.writer', 'worker', true);
  RETURN QUERY
  WITH next AS (
    SELECT j.id, j.updated_at AS queued_at FROM public.runops_queue q
    JOIN public.jobs j ON j.id = q.id
    WHERE j.status = 'queued' AND public.runops_lease_expired(j.metadata)
    ORDER BY q.priority, q.created_at, q.id
    LIMIT n
    FOR UPDATE OF j SKIP LOCKED
  ), dequeued AS (
    DELETE FROM public.runops_queue d WHERE d.id = ANY (ARRAY(SELECT x.id FROM next x))
  )
  UPDATE public.jobs j
  SET status = 'processing', error = NULL, completed_at = NULL,
      metadata = public.runops_begin_attempt(j.metadata, gen_random_uuid()::text, p_worker, make_interval(secs => ttl_seconds))
  FROM next WHERE j.id = next.id
  RETURNING j.job_id::text, j.status::text, j.created_at, j.updated_at, j.completed_at, j.error,
            coalesce(j.metadata, '{}'::jsonb), next.queued_at;
END;
$$;

-- The queued jobs there are now.
INSERT INTO public.runops_queue (id, priority, created_at)
SELECT id, public.runops_priority(metadata), created_at FROM public.jobs WHERE status = 'queued'
ON CONFLICT (id) DO NOTHING;

-- Not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
BEGIN
  REVOKE ALL ON FUNCTION public.runops_priority(jsonb) FROM PUBLIC;
  REVOKE ALL ON FUNCTION public.runops_queue_sync() FROM PUBLIC;
  REVOKE ALL ON FUNCTION public.runops_claim(TEXT, FLOAT8, INTEGER) FROM PUBLIC;
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_priority(jsonb) FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_queue_sync() FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_claim(TEXT, FLOAT8, INTEGER) FROM %s', api);
    EXECUTE format('REVOKE ALL ON TABLE public.runops_queue FROM %s', api);
  END IF;
END $$;
