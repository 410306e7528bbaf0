-- The order of claims (docs/lifecycle.md, "The order of claims"): among
-- queued jobs whose owner is under the owner cap (RUNOPS_OWNER_CONCURRENCY),
-- the lowest priority; then the owner with the fewest jobs processing; then
-- the owner whose latest claim is oldest (never claimed first); then the
-- oldest job. Unowned jobs are one owner ('').
--
-- metadata.priority is an integer from -100 to 100, lower runs sooner,
-- absent = 0; a person sets it on a queued row in the dashboard, and the next
-- claim takes it into account. Anything else there — text, a fraction, out of
-- range — is read as 0: a bad edit never breaks claiming (runops jobs show
-- says so).
--
-- Claims read the queue from two tables of their own, kept by triggers on
-- public.jobs (an index over jobs' metadata would make every heartbeat, a
-- metadata write on a processing row, a non-HOT update; and public.jobs stays
-- exactly as the app knows it):
--   runops_queue   a row per queued job: its owner, priority and age, and
--                  until when a worker still holds it (a person re-queued it
--                  while it ran);
--   runops_owners  a row per owner: jobs queued and the priority and age
--                  of the first of them, jobs processing, latest claim —
--                  one index over it gives the owners in claim order.
-- The triggers, one call per statement, change them for rows that are or
-- become queued and for rows entering or leaving processing: never for a
-- heartbeat (they only look), nor for a claim, which keeps
-- the tables itself.
--
-- Locks, in this order everywhere: jobs rows, then runops_owners rows (by
-- owner). Whoever changes an owner's jobs in runops_queue, or its counts,
-- holds its row.
--
-- Replaces what 20261206000200_claim_order.sql made (priority alone): its
-- runops_queue gains the owner and the lease a row is still held by, under
-- an index by owner; runops_claim_repair, at the end, fills them in.
-- Idempotent.

-- metadata.priority is read by public.runops_priority (…_claim_order.sql).

-- The owner a job counts for: metadata.owner, '' for unowned jobs. One
-- longer than 200 characters (a user id is 36; a person may paste anything)
-- counts by its digest: the owners' indexes take about 2.7 kB a row, and
-- an edit must never fail for it.
CREATE OR REPLACE FUNCTION public.runops_owner(meta jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN length(o) <= 200 THEN o ELSE 'md5:' || md5(o) END
  FROM (SELECT coalesce(meta->>'owner', '') AS o) x
$$;

-- Until when a lease on a queued job still holds it (a worker stopping a run
-- a person re-queued); -infinity when none does. Read as
-- runops_lease_expired reads it. Only a written date counts: a word such as
-- 'now' or 'tomorrow' (a person's edit) would mean another time at every
-- reading, and the row would never stay right; the claim's own check of
-- the lease still applies to it.
CREATE OR REPLACE FUNCTION public.runops_held_until(meta jsonb)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
BEGIN
  IF jsonb_typeof(meta->'lease') IS DISTINCT FROM 'object' OR (meta->'lease'->>'expires_at') !~ '^\s*\d' THEN
    RETURN '-infinity';
  END IF;
  RETURN coalesce((meta->'lease'->>'expires_at')::timestamptz, '-infinity');
EXCEPTION WHEN others THEN
  RETURN '-infinity';
END;
$$;

-- runops_queue (…_claim_order.sql) gains two columns. The defaults are for the rows already there, until the repair below.
ALTER TABLE public.runops_queue ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT '';
ALTER TABLE public.runops_queue ADD COLUMN IF NOT EXISTS held_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
DROP INDEX IF EXISTS public.runops_queue_order_idx;
CREATE INDEX IF NOT EXISTS runops_queue_owner_order_idx ON public.runops_queue (owner, priority, created_at, id);

CREATE TABLE IF NOT EXISTS public.runops_owners (
  owner      TEXT PRIMARY KEY,
  queued     INTEGER NOT NULL DEFAULT 0,
  best       INTEGER,          -- its first queued job in claim order: priority
  oldest     TIMESTAMPTZ,      -- and age
  processing INTEGER NOT NULL DEFAULT 0,
  last_claim TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS runops_owners_order_idx
  ON public.runops_owners (best, processing, last_claim NULLS FIRST, oldest, owner) WHERE queued > 0;

ALTER TABLE public.runops_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.runops_owners ENABLE ROW LEVEL SECURITY;

-- Makes the rows of owners os that are missing and locks them all, in
-- order.
CREATE OR REPLACE FUNCTION public.runops_lock_owners(os text[])
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO public.runops_owners (owner)
  SELECT DISTINCT o FROM unnest(os) AS o ORDER BY 1
  ON CONFLICT (owner) DO NOTHING;
  PERFORM 1 FROM public.runops_owners w WHERE w.owner = ANY (os) ORDER BY w.owner FOR UPDATE;
END;
$$;

-- What the queue's tables need of a job row: its owner, priority and
-- lease read out of metadata once, and nothing more of it (a statement's
-- rows are carried in arrays, which a whole metadata each would fill).
DO $$
BEGIN
  CREATE TYPE public.runops_queue_row AS (id integer, status text, owner text, priority integer,
                                          created_at timestamptz, held_until timestamptz);
EXCEPTION WHEN duplicate_object THEN
  NULL;
END $$;

-- Carries one statement's changes to public.jobs into runops_queue and the
-- owners' counts: was, the changed rows as they were (queued or processing
-- ones), now, as they are. Set-based, one write per owner: a statement that
-- queues 100,000 jobs of one owner updates its row once (a row updated once
-- per job, in one transaction, is a chain of 100,000 versions that each
-- update walks again).
CREATE OR REPLACE FUNCTION public.runops_queue_apply(was public.runops_queue_row[], now_ public.runops_queue_row[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  os text[];
  left_ text[];
  joined text[];
BEGIN
  -- Every owner concerned, locked before its jobs in runops_queue change.
  SELECT coalesce(array_agg(DISTINCT o), '{}') INTO os FROM (
    SELECT q.owner AS o FROM public.runops_queue q WHERE q.id IN (SELECT r.id FROM unnest(was) r)
    UNION ALL SELECT r.owner FROM unnest(was) r WHERE r.status = 'processing'
    UNION ALL SELECT r.owner FROM unnest(now_) r
  ) x;
  IF cardinality(os) = 0 THEN
    RETURN;
  END IF;
  PERFORM public.runops_lock_owners(os);

  -- Out of the queue, or counted for another owner or priority now.
  WITH gone AS (
    DELETE FROM public.runops_queue q
    WHERE q.id IN (SELECT r.id FROM unnest(was) r)
      AND NOT EXISTS (SELECT 1 FROM unnest(now_) r WHERE r.id = q.id AND r.status = 'queued'
                      AND r.owner = q.owner AND r.priority = q.priority)
    RETURNING q.owner
  )
  SELECT coalesce(array_agg(g.owner), '{}') INTO left_ FROM gone g;
  -- Into it, or its age and holder kept up to date.
  WITH fresh AS (
    SELECT r.id, r.owner, r.priority, r.created_at, r.held_until FROM unnest(now_) r WHERE r.status = 'queued'
  ), kept AS (
    UPDATE public.runops_queue q SET created_at = f.created_at, held_until = f.held_until
    FROM fresh f
    WHERE q.id = f.id AND (q.created_at, q.held_until) IS DISTINCT FROM (f.created_at, f.held_until)
  ), came AS (
    INSERT INTO public.runops_queue (id, owner, priority, created_at, held_until)
    SELECT f.id, f.owner, f.priority, f.created_at, f.held_until FROM fresh f
    ON CONFLICT (id) DO NOTHING
    RETURNING owner
  )
  SELECT coalesce(array_agg(c.owner), '{}') INTO joined FROM came c;

  WITH counts AS (
    SELECT d.owner, sum(d.dq)::integer AS dq, sum(d.dp)::integer AS dp FROM (
      SELECT o AS owner, -1 AS dq, 0 AS dp FROM unnest(left_) o
      UNION ALL SELECT o, 1, 0 FROM unnest(joined) o
      UNION ALL SELECT r.owner, 0, -1 FROM unnest(was) r WHERE r.status = 'processing'
      UNION ALL SELECT r.owner, 0, 1 FROM unnest(now_) r WHERE r.status = 'processing'
    ) d GROUP BY 1
  )
  UPDATE public.runops_owners w
  SET queued = greatest(w.queued + c.dq, 0), processing = greatest(w.processing + c.dp, 0)
  FROM counts c
  WHERE w.owner = c.owner AND (c.dq <> 0 OR c.dp <> 0);

  -- The owners' first jobs, read after the writes above (a statement of
  -- its own sees them), under the owners' locks.
  UPDATE public.runops_owners w SET best = h.priority, oldest = h.created_at
  FROM unnest(os) AS o(owner)
  LEFT JOIN LATERAL (
    SELECT q.priority, q.created_at FROM public.runops_queue q WHERE q.owner = o.owner
    ORDER BY q.priority, q.created_at, q.id LIMIT 1
  ) h ON true
  WHERE w.owner = o.owner AND w.owner = ANY (os) AND (w.best, w.oldest) IS DISTINCT FROM (h.priority, h.created_at);
END;
$$;

-- The triggers: one statement, one call. runops_claim (queued ->
-- processing, in a transaction it marks with runops.claim) keeps the tables
-- for its rows itself; any other claim — a worker of an earlier release
-- during a rolling update — is carried as any write is. For an update that
-- changes neither a queued row nor which rows are processing, whose (a
-- heartbeat, an outcome's metadata), it reads the changed rows and stops;
-- for one that only moves one owner's jobs out of processing (a job
-- ending), it writes that owner's count.
CREATE OR REPLACE FUNCTION public.runops_queue_sync()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  was public.runops_queue_row[] := '{}';
  now_ public.runops_queue_row[] := '{}';
  os text[];
  dps integer[];
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF current_setting('runops.claim', true) IS NOT DISTINCT FROM 'on' THEN
      RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.status = 'queued')
       AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.status = 'queued') THEN
      -- No queued row: only processing counts can change.
      SELECT array_agg(d.owner ORDER BY d.owner), array_agg(d.dp ORDER BY d.owner) INTO os, dps FROM (
        SELECT x.owner, sum(x.dp)::integer AS dp FROM (
          SELECT public.runops_owner(o.metadata) AS owner, -1 AS dp FROM old_rows o WHERE o.status = 'processing'
          UNION ALL SELECT public.runops_owner(n.metadata), 1 FROM new_rows n WHERE n.status = 'processing'
        ) x GROUP BY 1 HAVING sum(x.dp) <> 0
      ) d;
      IF os IS NULL THEN
        RETURN NULL; -- a heartbeat, an outcome's metadata
      END IF;
      IF cardinality(os) = 1 THEN
        -- A job ending, or started by hand: one owner's row.
        UPDATE public.runops_owners w SET processing = greatest(w.processing + dps[1], 0) WHERE w.owner = os[1];
        IF FOUND THEN
          RETURN NULL;
        END IF;
      END IF;
    END IF;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    SELECT coalesce(array_agg(ROW(o.id, o.status, public.runops_owner(o.metadata), public.runops_priority(o.metadata),
                                  o.created_at, public.runops_held_until(o.metadata))::public.runops_queue_row), '{}')
    INTO was FROM old_rows o WHERE o.status IN ('queued', 'processing');
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    SELECT coalesce(array_agg(ROW(n.id, n.status, public.runops_owner(n.metadata), public.runops_priority(n.metadata),
                                  n.created_at, public.runops_held_until(n.metadata))::public.runops_queue_row), '{}')
    INTO now_ FROM new_rows n WHERE n.status IN ('queued', 'processing');
  END IF;
  PERFORM public.runops_queue_apply(was, now_);
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS runops_queue_insert_delete ON public.jobs;
DROP TRIGGER IF EXISTS runops_queue_update ON public.jobs;
DROP TRIGGER IF EXISTS runops_queue_insert ON public.jobs;
CREATE TRIGGER runops_queue_insert
  AFTER INSERT ON public.jobs REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_queue_sync();
DROP TRIGGER IF EXISTS runops_queue_update ON public.jobs;
CREATE TRIGGER runops_queue_update
  AFTER UPDATE ON public.jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_queue_sync();
DROP TRIGGER IF EXISTS runops_queue_delete ON public.jobs;
CREATE TRIGGER runops_queue_delete
  AFTER DELETE ON public.jobs REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_queue_sync();

-- TRUNCATE fires no row trigger (its own, runops_queue_truncate, is
-- …_claim_order.sql's). The owners' latest claims stay.
CREATE OR REPLACE FUNCTION public.runops_queue_truncate()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  TRUNCATE public.runops_queue;
  UPDATE public.runops_owners SET queued = 0, best = NULL, oldest = NULL, processing = 0
  WHERE (queued, best, oldest, processing) IS DISTINCT FROM (0, NULL::integer, NULL::timestamptz, 0);
  RETURN NULL;
END;
$$;

-- Recounts owner o from the jobs, under its row's lock, with a snapshot
-- taken after it.
CREATE OR REPLACE FUNCTION public.runops_recount(o text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  PERFORM public.runops_lock_owners(ARRAY[o]);
  UPDATE public.runops_owners w
  SET queued = c.queued, best = c.best, oldest = c.oldest, processing = c.processing
  FROM (SELECT (SELECT count(*)::integer FROM public.runops_queue q WHERE q.owner = o) AS queued,
               (SELECT q.priority FROM public.runops_queue q WHERE q.owner = o ORDER BY q.priority, q.created_at, q.id LIMIT 1) AS best,
               (SELECT q.created_at FROM public.runops_queue q WHERE q.owner = o ORDER BY q.priority, q.created_at, q.id LIMIT 1) AS oldest,
               (SELECT count(*)::integer FROM public.jobs j
                WHERE j.status = 'processing' AND public.runops_owner(j.metadata) = o) AS processing) c
  WHERE w.owner = o AND (w.queued, w.best, w.oldest, w.processing) IS DISTINCT FROM (c.queued, c.best, c.oldest, c.processing);
END;
$$;

-- Puts the tables right after writes no trigger saw (triggers off: a
-- restore, a bulk load, a replica's session_replication_role) or an owner
-- edited on a processing row: rows of jobs no longer queued go, queued jobs
-- without one get it, stale rows are rewritten, and owners whose counts are
-- wrong are recounted. The housekeeping duty runs it every sweep, with the
-- rescue; it says how many rows of runops_queue it removed and added (or
-- rewrote), and how many owners it recounted.
CREATE OR REPLACE FUNCTION public.runops_claim_repair(OUT removed integer, OUT added integer, OUT recounted integer)
LANGUAGE plpgsql
AS $$
DECLARE
  o text;
  os text[];
  changed integer;
BEGIN
  removed := 0;
  added := 0;
  recounted := 0;
  -- The owners whose rows in runops_queue are wrong, read first and locked
  -- (in order, as everyone locks them) before any is written; nothing is
  -- written when none is.
  SELECT coalesce(array_agg(DISTINCT x.owner), '{}') INTO os FROM (
    SELECT q.owner FROM public.runops_queue q
    WHERE NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.id = q.id AND j.status = 'queued')
    UNION ALL
    SELECT public.runops_owner(j.metadata) FROM public.jobs j
    WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM public.runops_queue q WHERE q.id = j.id)
    UNION ALL
    SELECT unnest(ARRAY[q.owner, public.runops_owner(j.metadata)]) FROM public.runops_queue q
    JOIN public.jobs j ON j.id = q.id AND j.status = 'queued'
    WHERE (q.owner, q.priority, q.created_at, q.held_until) IS DISTINCT FROM
          (public.runops_owner(j.metadata), public.runops_priority(j.metadata), j.created_at, public.runops_held_until(j.metadata))
  ) x;
  IF cardinality(os) > 0 THEN
    PERFORM public.runops_lock_owners(os);
    DELETE FROM public.runops_queue q
    WHERE NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.id = q.id AND j.status = 'queued');
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO public.runops_queue (id, owner, priority, created_at, held_until)
    SELECT j.id, public.runops_owner(j.metadata), public.runops_priority(j.metadata), j.created_at,
           public.runops_held_until(j.metadata)
    FROM public.jobs j
    WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM public.runops_queue q WHERE q.id = j.id)
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    UPDATE public.runops_queue q
    SET owner = public.runops_owner(j.metadata), priority = public.runops_priority(j.metadata),
        created_at = j.created_at, held_until = public.runops_held_until(j.metadata)
    FROM public.jobs j
    WHERE j.id = q.id AND j.status = 'queued'
      AND (q.owner, q.priority, q.created_at, q.held_until) IS DISTINCT FROM
          (public.runops_owner(j.metadata), public.runops_priority(j.metadata), j.created_at, public.runops_held_until(j.metadata));
    GET DIAGNOSTICS changed = ROW_COUNT;
    added := added + changed;
  END IF;

  FOR o IN
    WITH waiting AS (
      SELECT q.owner, count(*)::integer AS queued FROM public.runops_queue q GROUP BY 1
    ), heads AS (
      SELECT DISTINCT ON (q.owner) q.owner, q.priority AS best, q.created_at AS oldest
      FROM public.runops_queue q ORDER BY q.owner, q.priority, q.created_at, q.id
    ), running AS (
      SELECT public.runops_owner(j.metadata) AS owner, count(*)::integer AS processing
      FROM public.jobs j WHERE j.status = 'processing' GROUP BY 1
    ), counted AS (
      SELECT coalesce(a.owner, b.owner) AS owner, coalesce(a.queued, 0) AS queued, h.best, h.oldest, coalesce(b.processing, 0) AS processing
      FROM waiting a LEFT JOIN heads h ON h.owner = a.owner FULL JOIN running b ON b.owner = a.owner
    )
    SELECT coalesce(c.owner, w.owner) FROM counted c
    FULL JOIN (SELECT * FROM public.runops_owners WHERE queued <> 0 OR processing <> 0 OR best IS NOT NULL) w ON w.owner = c.owner
    WHERE (c.queued, c.best, c.oldest, c.processing) IS DISTINCT FROM (w.queued, w.best, w.oldest, w.processing)
    ORDER BY 1
  LOOP
    PERFORM public.runops_recount(o);
    recounted := recounted + 1;
  END LOOP;
END;
$$;

-- What a worker of the earlier release calls (its housekeeping, during a
-- rolling update): the repair above.
CREATE OR REPLACE FUNCTION public.runops_queue_repair(OUT removed integer, OUT added integer)
LANGUAGE sql
AS $$
  SELECT r.removed, r.added FROM public.runops_claim_repair() r
$$;

-- A claim: up to n claimable jobs for p_worker, each under a lease token of
-- its own, in claim order; with cap, no owner goes over cap jobs
-- processing. A function, so that its plans are made once a session: the
-- statement planned anew at every claim cost as much as running it.
--
-- Its plans are kept for the session, so they must not depend on the
-- queue's size when they were made: planned while the tables looked empty
-- (a new database, a burst not yet analysed), a scan and sort of the whole
-- queue would be kept for every claim after. The queue is read through its
-- indexes, and only so: no sequential scan, and no sort but of the n × n
-- turns, whatever the statistics say. And no JIT: the disabled plans'
-- made-up costs would have every claim compile its plan (0.7 s).
--
-- How: the first n owners in claim order are the only ones n claims can
-- reach (each owner before another takes at least one job before it); n
-- turns are dealt among their first jobs as one-at-a-time claims would deal
-- them (by the job's priority; then an owner's k-th job counts as k more
-- processing, and goes behind owners of equal count not yet served); each
-- owner's best jobs are taken, skipping those other claims hold. An owner whose jobs other claims hold (or
-- none of whose jobs can be claimed) got fewer than its turns: the next
-- pass deals what is left among the owners after it, until the claim is
-- full or no owner is left — a claim of one job too. Then the owners' rows are locked (in order: claims at the same moment
-- wait for each other there, never in a circle), the cap checked on their
-- exact counts, the jobs claimed and the tables kept. Without a cap the
-- owners' rows are locked only once the jobs are claimed: held for two
-- short statements and the commit.
DROP FUNCTION IF EXISTS public.runops_claim(TEXT, FLOAT8, INTEGER);
CREATE OR REPLACE FUNCTION public.runops_claim(p_worker TEXT, ttl_seconds FLOAT8, n INTEGER, cap INTEGER DEFAULT NULL)
RETURNS TABLE (job_id TEXT, status TEXT, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, completed_at TIMESTAMPTZ,
               error TEXT, metadata JSONB, queued_at TIMESTAMPTZ)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_sort = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
  r record;
  ids integer[] := '{}';
  owners text[] := '{}';
  short boolean;
  spent text[] := '{}';
  waited timestamptz[] := '{}'; -- when each of ids was queued (its updated_at)
BEGIN
  -- The worker's own claim: the notify trigger stays silent for it
  -- (…_quiet_worker_writes.sql), the queue's triggers leave its rows to
  -- this function.
  PERFORM set_config('runops.writer', 'worker', true);
  LOOP -- a pass per round of owners; each short one spends at least one
    short := false;
    FOR r IN
      WITH cand AS (
        SELECT w.owner, w.processing, w.last_claim
        FROM public.runops_owners w
        CROSS JOIN LATERAL (
          SELECT 1 FROM public.runops_queue q WHERE q.owner = w.owner AND q.held_until <= now() LIMIT 1
        ) ready
        WHERE w.queued > 0 AND (cap IS NULL OR w.processing < cap) AND w.owner <> ALL (spent)
        ORDER BY w.best, w.processing, w.last_claim NULLS FIRST, w.oldest, w.owner
        LIMIT n - cardinality(ids)
      ), turns AS (
        SELECT d.owner, count(*)::integer AS take, min(d.turn) AS first
        FROM (
          SELECT c.owner,
                 row_number() OVER (ORDER BY s.priority, c.processing + s.k, s.k > 0, c.last_claim NULLS FIRST, s.created_at, c.owner, s.k) AS turn
          FROM cand c
          CROSS JOIN LATERAL (
            SELECT q.priority, q.created_at, row_number() OVER (ORDER BY q.priority, q.created_at, q.id) - 1 AS k
            FROM public.runops_queue q
            WHERE q.owner = c.owner AND q.held_until <= now() AND q.id <> ALL (ids)
            ORDER BY q.priority, q.created_at, q.id
            LIMIT least(n - cardinality(ids), coalesce(cap - c.processing, n))
          ) s
        ) d
        WHERE d.turn <= n - cardinality(ids)
        GROUP BY d.owner
      )
      SELECT t.owner, t.take, array_agg(x.id ORDER BY x.priority, x.created_at, x.id) FILTER (WHERE x.id IS NOT NULL) AS got,
             array_agg(x.updated_at ORDER BY x.priority, x.created_at, x.id) FILTER (WHERE x.id IS NOT NULL) AS got_at
      FROM (SELECT * FROM turns ORDER BY first) t LEFT JOIN LATERAL (
        SELECT j.id, j.updated_at, q.priority, q.created_at FROM public.runops_queue q
        JOIN public.jobs j ON j.id = q.id
        -- The status is checked in a CASE: written plainly, it would let
        -- the plan read the job through jobs' index of queued jobs — all of
        -- them, for each row — instead of its primary key. The owner is
        -- the job's own: a job moved to another owner while this claim
        -- waited for its row (the row's latest version is what is checked
        -- then) is left to that owner's turn, never counted for this one.
        -- A job whose metadata is not a JSON object (a person's edit) is
        -- never claimed: its claim would fail, and every claim with it.
        WHERE q.owner = t.owner AND q.held_until <= now() AND j.id <> ALL (ids)
          AND CASE WHEN j.status = 'queued' AND public.runops_owner(j.metadata) = q.owner
                        AND (j.metadata IS NULL OR jsonb_typeof(j.metadata) = 'object')
                   THEN public.runops_lease_expired(j.metadata) ELSE false END
        ORDER BY q.priority, q.created_at, q.id
        LIMIT t.take
        FOR UPDATE OF j SKIP LOCKED
      ) x ON true
      GROUP BY t.owner, t.take
    LOOP
      ids := ids || coalesce(r.got, '{}');
      waited := waited || coalesce(r.got_at, '{}');
      owners := owners || array_fill(r.owner, ARRAY[cardinality(coalesce(r.got, '{}'))]);
      IF cardinality(coalesce(r.got, '{}')) < r.take THEN
        short := true;
        spent := spent || r.owner;
      END IF;
    END LOOP;
    EXIT WHEN NOT short OR cardinality(ids) >= n;
  END LOOP;
  IF cardinality(ids) = 0 THEN
    RETURN;
  END IF;

  IF cap IS NOT NULL THEN
    -- Locked, a row is the owner's latest: the cap on exact counts.
    WITH locked AS (
      SELECT w.owner, w.processing FROM public.runops_owners w
      WHERE w.owner = ANY (owners) ORDER BY w.owner FOR UPDATE
    )
    SELECT coalesce(array_agg(c.id ORDER BY c.i), '{}'), coalesce(array_agg(c.owner ORDER BY c.i), '{}'),
           coalesce(array_agg(c.queued_at ORDER BY c.i), '{}') INTO ids, owners, waited
    FROM (
      SELECT p.id, p.owner, p.queued_at, p.i, row_number() OVER (PARTITION BY p.owner ORDER BY p.i) AS k
      FROM unnest(ids, owners, waited) WITH ORDINALITY AS p(id, owner, queued_at, i)
    ) c JOIN locked l ON l.owner = c.owner
    WHERE l.processing + c.k <= cap;
    IF cardinality(ids) = 0 THEN
      RETURN;
    END IF;
  END IF;

  -- Each locked by this claim since its first statement: all are claimed.
  -- runops.claim is on for this statement only.
  PERFORM set_config('runops.claim', 'on', true);
  RETURN QUERY
    UPDATE public.jobs j
    SET status = 'processing', error = NULL, completed_at = NULL,
        metadata = public.runops_begin_attempt(j.metadata, gen_random_uuid()::text, p_worker, make_interval(secs => ttl_seconds))
    FROM unnest(ids, waited) AS p(id, queued_at)
    WHERE j.id = p.id
    RETURNING j.job_id::text, j.status::text, j.created_at, j.updated_at, j.completed_at, j.error,
              coalesce(j.metadata, '{}'::jsonb), p.queued_at;

  PERFORM set_config('runops.claim', '', true);
  IF cap IS NULL THEN
    PERFORM 1 FROM public.runops_owners w WHERE w.owner = ANY (owners) ORDER BY w.owner FOR UPDATE;
  END IF;
  -- Out of the queue, with a snapshot taken under the owners' locks: a job
  -- another worker claimed and handed back while this claim waited for it
  -- has a new row there, which the claim's first snapshot did not see; and
  -- the owners' best priorities are read from what is queued now.
  WITH gone AS (
    DELETE FROM public.runops_queue d WHERE d.id = ANY (ids) RETURNING d.owner
  ), took AS (
    SELECT p.owner, count(*)::integer AS n FROM unnest(owners) AS p(owner) GROUP BY 1
  ), left_ AS (
    SELECT g.owner, count(*)::integer AS n FROM gone g GROUP BY 1
  )
  UPDATE public.runops_owners w
  SET processing = w.processing + t.n, last_claim = clock_timestamp(),
      queued = greatest(w.queued - coalesce(l.n, 0), 0),
      (best, oldest) = (SELECT q.priority, q.created_at FROM public.runops_queue q WHERE q.owner = w.owner AND q.id <> ALL (ids)
                        ORDER BY q.priority, q.created_at, q.id LIMIT 1)
  FROM took t LEFT JOIN left_ l ON l.owner = t.owner
  WHERE w.owner = t.owner AND w.owner = ANY (owners); -- read by its index
END;
$$;

-- The queued and processing jobs there are now.
SELECT public.runops_claim_repair();

-- Not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
  f text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  FOREACH f IN ARRAY ARRAY['public.runops_owner(jsonb)', 'public.runops_held_until(jsonb)',
    'public.runops_lock_owners(text[])', 'public.runops_queue_apply(public.runops_queue_row[], public.runops_queue_row[])', 'public.runops_queue_sync()',
    'public.runops_queue_truncate()', 'public.runops_recount(text)', 'public.runops_claim_repair()', 'public.runops_queue_repair()',
    'public.runops_claim(text, float8, integer, integer)']
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    IF api IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f, api);
    END IF;
  END LOOP;
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON TABLE public.runops_queue, public.runops_owners FROM %s', api);
  END IF;
END $$;
