-- How long a queued job has waited: since it entered the queue, not since
-- its row last changed. runops_queue_oldest_seconds read the queued rows'
-- updated_at, which every edit moves: a person raising the priority of a
-- job that had waited an hour (DESIGN: a person may edit it on a queued
-- row) made the oldest job look a moment old, and a scaler on the gauge
-- took the fleet down just then (TestQueueStats).
--
-- runops_queue holds a row for each queued job; its new column since is
-- when the job entered the queue. An entry that runops_queue_apply moves
-- to another owner or priority (deleted, then inserted) keeps it. Rows
-- queued before this migration take their updated_at, the best time known.
-- Idempotent. (Written in the session it landed in, with its index.)
ALTER TABLE public.runops_queue ADD COLUMN IF NOT EXISTS since timestamptz;
UPDATE public.runops_queue q
SET since = CASE WHEN isfinite(j.updated_at) THEN least(j.updated_at, now()) ELSE now() END
FROM public.jobs j WHERE j.id = q.id AND q.since IS NULL;
UPDATE public.runops_queue SET since = now() WHERE since IS NULL;
ALTER TABLE public.runops_queue ALTER COLUMN since SET DEFAULT now();
ALTER TABLE public.runops_queue ALTER COLUMN since SET NOT NULL;
-- The gauge's min(since), read by every process every few seconds, from
-- the index's first entry, however long the queue.
CREATE INDEX IF NOT EXISTS runops_queue_since_idx ON public.runops_queue (since);
-- And a worker's age of the oldest job a claim could take: each waiting
-- owner's first entry, without walking the backlog of an owner at its cap.
CREATE INDEX IF NOT EXISTS runops_queue_owner_since_idx ON public.runops_queue (owner, since);

-- As in 20261206000300_owner_fairness.sql, but an entry deleted because
-- its owner or priority changed while it stayed queued is inserted again
-- with the since it had.
CREATE OR REPLACE FUNCTION public.runops_queue_apply(was public.runops_queue_row[], now_ public.runops_queue_row[])
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  os text[];
  left_ text[];
  joined text[];
  gone_ids integer[];
  gone_since timestamptz[];
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
    RETURNING q.owner, q.id, q.since
  )
  SELECT coalesce(array_agg(g.owner), '{}'), coalesce(array_agg(g.id), '{}'), coalesce(array_agg(g.since), '{}')
  INTO left_, gone_ids, gone_since FROM gone g;
  -- Into it (since it entered, for an entry moved just above), or its age
  -- and holder kept up to date.
  WITH fresh AS (
    SELECT r.id, r.owner, r.priority, r.created_at, r.held_until FROM unnest(now_) r WHERE r.status = 'queued'
  ), kept AS (
    UPDATE public.runops_queue q SET created_at = f.created_at, held_until = f.held_until
    FROM fresh f
    WHERE q.id = f.id AND (q.created_at, q.held_until) IS DISTINCT FROM (f.created_at, f.held_until)
  ), came AS (
    INSERT INTO public.runops_queue (id, owner, priority, created_at, held_until, since)
    SELECT f.id, f.owner, f.priority, f.created_at, f.held_until, coalesce(m.since, now())
    FROM fresh f LEFT JOIN unnest(gone_ids, gone_since) AS m(id, since) ON m.id = f.id
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

-- CREATE OR REPLACE keeps the function's grants: revoked from the API
-- roles by 20261206000300_owner_fairness.sql.
