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
  SELECT CASE WHEN jsonb_typeof(meta->'priority') = 'number' THEN
    CASE WHEN (meta->>'priority')::numeric BETWEEN -100 AND 100
          AND (meta->>'priority')::numeric = trunc((meta->>'priority')::numeric)
    THEN (meta->>'priority')::numeric::integer ELSE 0 END
  ELSE 0 END
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

-- runops_claim (queued -> processing, in a transaction it marks with
-- runops.claim) takes its rows out of runops_queue itself: no trigger call
-- for them. Any other claim — a worker of an earlier release during a
-- rolling update — goes through the trigger.
DROP TRIGGER IF EXISTS runops_queue_update ON public.jobs;
CREATE TRIGGER runops_queue_update
  AFTER UPDATE ON public.jobs
  FOR EACH ROW WHEN ((OLD.status = 'queued' OR NEW.status = 'queued')
    AND NOT (OLD.status = 'queued' AND NEW.status = 'processing' AND OLD.id = NEW.id
             AND current_setting('runops.claim', true) IS NOT DISTINCT FROM 'on'))
  EXECUTE FUNCTION public.runops_queue_sync();

-- TRUNCATE fires no row trigger.
CREATE OR REPLACE FUNCTION public.runops_queue_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  TRUNCATE public.runops_queue;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS runops_queue_truncate ON public.jobs;
CREATE TRIGGER runops_queue_truncate
  AFTER TRUNCATE ON public.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_queue_truncate();

-- Puts runops_queue right: rows of jobs no longer queued go, queued jobs
-- without one get it (written with triggers off: a restore, a bulk load, a
-- replica's session_replication_role). The housekeeping duty runs it every
-- sweep, with the rescue; it returns how many rows it removed and added.
CREATE OR REPLACE FUNCTION public.runops_queue_repair(OUT removed integer, OUT added integer)
LANGUAGE plpgsql
AS $$
BEGIN
  DELETE FROM public.runops_queue q
  WHERE NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.id = q.id AND j.status = 'queued');
  GET DIAGNOSTICS removed = ROW_COUNT;
  INSERT INTO public.runops_queue (id, priority, created_at)
  SELECT j.id, public.runops_priority(j.metadata), j.created_at FROM public.jobs j
  WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM public.runops_queue q WHERE q.id = j.id)
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS added = ROW_COUNT;
END;
$$;

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
DECLARE
  r record;
  claimed integer[] := '{}';
BEGIN
  -- The worker's own claim: the notify trigger stays silent for it
  -- (…_quiet_worker_writes.sql), runops_queue's trigger leaves its rows to
  -- this function.
  PERFORM set_config('runops.writer', 'worker', true);
  PERFORM set_config('runops.claim', 'on', true);
  FOR r IN
    WITH next AS (
      SELECT j.id, j.updated_at AS queued_at FROM public.runops_queue q
      JOIN public.jobs j ON j.id = q.id
      WHERE j.status = 'queued' AND public.runops_lease_expired(j.metadata)
      ORDER BY q.priority, q.created_at, q.id
      LIMIT n
      FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE public.jobs j
    SET status = 'processing', error = NULL, completed_at = NULL,
        metadata = public.runops_begin_attempt(j.metadata, gen_random_uuid()::text, p_worker, make_interval(secs => ttl_seconds))
    FROM next WHERE j.id = next.id
    RETURNING j.id AS claimed_id, j.job_id::text AS c_job_id, j.status::text AS c_status, j.created_at AS c_created_at,
              j.updated_at AS c_updated_at, j.completed_at AS c_completed_at, j.error AS c_error,
              coalesce(j.metadata, '{}'::jsonb) AS c_metadata, next.queued_at AS c_queued_at
  LOOP
    claimed := claimed || r.claimed_id;
    job_id := r.c_job_id; status := r.c_status; created_at := r.c_created_at; updated_at := r.c_updated_at;
    completed_at := r.c_completed_at; error := r.c_error; metadata := r.c_metadata; queued_at := r.c_queued_at;
    RETURN NEXT;
  END LOOP;
  -- Out of the queue, with a snapshot of its own: a job another worker
  -- claimed and handed back while this claim waited for it has a new row
  -- there, which the claim's own snapshot does not see.
  PERFORM set_config('runops.claim', '', true);
  DELETE FROM public.runops_queue d WHERE d.id = ANY (claimed);
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
  REVOKE ALL ON FUNCTION public.runops_queue_truncate() FROM PUBLIC;
  REVOKE ALL ON FUNCTION public.runops_queue_repair() FROM PUBLIC;
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_priority(jsonb) FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_queue_sync() FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_claim(TEXT, FLOAT8, INTEGER) FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_queue_truncate() FROM %s', api);
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_queue_repair() FROM %s', api);
    EXECUTE format('REVOKE ALL ON TABLE public.runops_queue FROM %s', api);
  END IF;
END $$;
