-- runops_claim (…_owner_fairness.sql) in fewer, cheaper steps: the same
-- order of claims (docs/lifecycle.md, "The order of claims"), about a
-- quarter less work for a claim of 8 over 100 or 1,000 owners
-- (BenchmarkClaimOrder).
--
-- A round:
--   1. locks the first owners in claim order that no other transaction
--      holds, FOR UPDATE SKIP LOCKED, as many as jobs it still wants (no
--      other owner can be reached by that many claims): claims at the same
--      moment take different owners instead of computing the same turns and
--      queuing on the same rows. Their counts are read locked, so the cap is
--      checked on exact counts (an owner that reached its cap or emptied
--      meanwhile gives nothing);
--   2. deals the turns among those owners' first jobs (one statement), then
--      locks each owner's first jobs FOR UPDATE SKIP LOCKED, as many as its
--      turns, claims them, takes them out of runops_queue and counts them on
--      the owners (a second). Both take their snapshots under the owners'
--      locks: a job another worker claimed and handed back meanwhile has its
--      new row there.
-- When the owners are as many as the jobs wanted, share one priority, are
-- all under the cap and their processing counts are within one of each
-- other, each owner's first job has a turn and nothing else does: no deal,
-- and one job read an owner.
--
-- A round that takes fewer than it wanted spends the owners that gave fewer
-- jobs than their turns (each gave what it could: its queue, its cap, jobs
-- a re-queued job's old lease or another transaction still holds), or all
-- of them when none had a turn; the next deals again among the rest,
-- reading only owners with a job no lease holds. A full deal among as many
-- owners as jobs wanted, some with no job to deal, is dealt again without
-- them. Four rounds at most: a worker whose claim comes back short, with at
-- least one job, claims again at once.
--
-- A claim that holds nothing yet and finds fewer owners than jobs it wants
-- (one owner's backlog, many workers), or every one of them held by other
-- transactions, claims as …_owner_fairness.sql did, kept as
-- runops_claim_jobs_first: it reads past owners without locking them,
-- locks jobs FOR UPDATE SKIP LOCKED, claims them (with a cap, it locks the
-- owners' rows first, in owner order, and trims to it) and then locks the
-- owners' rows in owner order, as every other writer of jobs takes them, to
-- count its jobs; claims of one owner that locked it first would run one at
-- a time. A claim that holds owners' rows never goes jobs first: claims
-- doing so while each held owners the others wait for would wait for one
-- another.
--
-- A claim gives way: it waits for no lock longer than lock_timeout, 500 ms,
-- under PostgreSQL's deadlock_timeout (1 s by default), so that when it
-- meets a writer of jobs in a circle of waits (SKIP LOCKED still waits for
-- the holder of a row's newer version, while the claim holds owners' rows),
-- the claim's wait normally ends first: the claim fails, and the worker
-- retries it after a backoff, rather than a person's edit or an outcome.
--
-- Idempotent.

-- The claim as …_owner_fairness.sql made it, kept under a name of its own
-- (with its grants: none to the API roles).
DO $$
BEGIN
  IF to_regprocedure('public.runops_claim_jobs_first(text, float8, integer, integer)') IS NULL THEN
    ALTER FUNCTION public.runops_claim(text, float8, integer, integer) RENAME TO runops_claim_jobs_first;
  END IF;
END $$;

CREATE OR REPLACE FUNCTION public.runops_claim(p_worker TEXT, ttl_seconds FLOAT8, n INTEGER, cap INTEGER DEFAULT NULL)
RETURNS TABLE (job_id TEXT, status TEXT, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, completed_at TIMESTAMPTZ,
               error TEXT, metadata JSONB, queued_at TIMESTAMPTZ)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_sort = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
SET plan_cache_mode = force_generic_plan
SET lock_timeout = '500ms'
AS $$
#variable_conflict use_column
DECLARE
  round integer := 0;
  got integer := 0;  -- jobs claimed so far
  took integer;      -- by this round
  want integer;      -- by this round, at most
  cands text[];      -- this round's candidates, in claim order
  owners text[];     -- those of them this round locked
  procs integer[];   -- their jobs processing, before this round
  lasts timestamptz[];
  bests integer[];
  tos text[];        -- the owners with turns
  tcs integer[];     -- and how many
  dealt text[];      -- the owners with a job to deal
  spent text[] := '{}';
BEGIN
  -- The worker's own claim: the notify trigger stays silent for it
  -- (…_quiet_worker_writes.sql).
  PERFORM set_config('runops.writer', 'worker', true);
  LOOP
    round := round + 1;
    -- Four rounds at most: a worker whose claim comes back short claims
    -- again at once.
    EXIT WHEN round > 4;
    want := n - got;
    -- The candidates: a few times as many owners as jobs wanted, so that
    -- claims at the same moment each find owners of their own. After the
    -- first round, only owners with a job no lease holds: an owner whose
    -- jobs are all held is not locked round after round.
    IF round = 1 THEN
      cands := ARRAY(
        SELECT c.owner FROM public.runops_owners c
        WHERE c.queued > 0 AND (cap IS NULL OR c.processing < cap)
        ORDER BY c.best, c.processing, c.last_claim NULLS FIRST, c.oldest, c.owner
        LIMIT want * 4);
      IF cardinality(cands) < want THEN
        -- Fewer owners than jobs wanted (one owner's backlog): claims that
        -- locked them first would run one at a time. This one claims jobs
        -- first, as claims did before (…_owner_fairness.sql), and waits for
        -- the owners' rows only to count them, holding nothing else then.
        RETURN QUERY SELECT * FROM public.runops_claim_jobs_first(p_worker, ttl_seconds, n, cap);
        RETURN;
      END IF;
    ELSE
      cands := ARRAY(
        SELECT c.owner FROM public.runops_owners c
        CROSS JOIN LATERAL (
          SELECT 1 FROM public.runops_queue q WHERE q.owner = c.owner AND q.held_until <= now() LIMIT 1
        ) ready
        WHERE c.queued > 0 AND (cap IS NULL OR c.processing < cap) AND c.owner <> ALL (spent)
        ORDER BY c.best, c.processing, c.last_claim NULLS FIRST, c.oldest, c.owner
        LIMIT want * 4);
    END IF;
    -- The first of them that no other claim holds. Locked by owner alone, a
    -- row is never locked and then left out: a lock re-checks its
    -- condition on the row's latest version, and this one cannot fail.
    SELECT coalesce(array_agg(x.owner), '{}'), array_agg(x.processing), array_agg(x.last_claim), array_agg(x.best)
    INTO owners, procs, lasts, bests
    FROM (
      SELECT w.owner, w.processing, w.last_claim, w.best
      FROM unnest(cands) WITH ORDINALITY AS c(owner, i)
      JOIN public.runops_owners w ON w.owner = c.owner
      ORDER BY c.i
      LIMIT want
      FOR UPDATE OF w SKIP LOCKED
    ) x;
    IF cardinality(owners) = 0 THEN
      IF round = 1 THEN
        -- Every candidate is another transaction's, and this claim holds
        -- nothing yet (after its first round it always holds owners'
        -- rows): it claims jobs first too. A claim that holds owners'
        -- rows ends with what it has: claims going jobs first while each
        -- held owners the others wait for would wait for one another.
        RETURN QUERY SELECT * FROM public.runops_claim_jobs_first(p_worker, ttl_seconds, n, cap);
      END IF;
      EXIT;
    END IF;

    -- The turns. When the owners are as many as the jobs wanted, share one
    -- priority, are all under the cap and their processing counts are
    -- within one of each other, each owner's first job has a turn, and
    -- nothing else does.
    IF cardinality(owners) = want AND (
         SELECT count(u.b) = count(*) AND min(u.b) = max(u.b) AND max(u.p) - min(u.p) <= 1 AND (cap IS NULL OR max(u.p) < cap)
         FROM unnest(bests, procs) AS u(b, p)) THEN
      tos := owners;
      tcs := array_fill(1, ARRAY[want]);
    ELSE
      -- An owner's k-th job counts as k more jobs processing.
      SELECT coalesce(array_agg(t.owner) FILTER (WHERE t.take > 0), '{}'), coalesce(array_agg(t.take) FILTER (WHERE t.take > 0), '{}'),
             coalesce(array_agg(t.owner), '{}')
      INTO tos, tcs, dealt
      FROM (
        SELECT d.owner, (count(*) FILTER (WHERE d.turn <= want))::integer AS take FROM (
          SELECT c.owner,
                 row_number() OVER (ORDER BY q.priority, c.processing + q.k, q.k > 0, c.last_claim NULLS FIRST,
                                             q.created_at, c.owner, q.k) AS turn
          FROM unnest(owners, procs, lasts) AS c(owner, processing, last_claim)
          CROSS JOIN LATERAL (
            SELECT q.priority, q.created_at, row_number() OVER (ORDER BY q.priority, q.created_at, q.id) - 1 AS k
            FROM public.runops_queue q
            WHERE q.owner = c.owner AND q.held_until <= now()
            ORDER BY q.priority, q.created_at, q.id
            LIMIT greatest(least(want, coalesce(cap - c.processing, want)), 0)
          ) q
        ) d
        GROUP BY d.owner
      ) t;
      IF cardinality(owners) = want AND cardinality(dealt) < want THEN
        -- Owners with no job to deal (all held by leases) took places an
        -- owner after them would have had: deal again without them.
        spent := spent || ARRAY(SELECT unnest(owners) EXCEPT SELECT unnest(dealt));
        CONTINUE;
      END IF;
    END IF;

    IF cardinality(tos) = 0 THEN
      -- No owner of this round had a turn: all are spent.
      spent := spent || owners;
      CONTINUE;
    END IF;
    -- runops.claim is on for this statement only: the queue's triggers
    -- leave its rows to it.
    PERFORM set_config('runops.claim', 'on', true);
    RETURN QUERY
      WITH picked AS (
        -- Each owner's first jobs, as many as its turns, past any another
        -- transaction holds. The status is checked in a CASE: written
        -- plainly, it would let the plan read the job through jobs' index
        -- of queued jobs. The owner is the job's own: a job moved to
        -- another owner by an edit not yet committed is left to that
        -- owner's turn. A job whose metadata is not a JSON object (a
        -- person's edit) is never claimed: its claim would fail, and every
        -- claim with it.
        SELECT x.id, x.updated_at, t.owner FROM unnest(tos, tcs) AS t(owner, take) CROSS JOIN LATERAL (
          SELECT j.id, j.updated_at FROM public.runops_queue q JOIN public.jobs j ON j.id = q.id
          WHERE q.owner = t.owner AND q.held_until <= now()
            AND CASE WHEN j.status = 'queued' AND public.runops_owner(j.metadata) = t.owner
                          AND (j.metadata IS NULL OR jsonb_typeof(j.metadata) = 'object')
                     THEN public.runops_lease_expired(j.metadata) ELSE false END
          ORDER BY q.priority, q.created_at, q.id
          LIMIT t.take
          FOR UPDATE OF j SKIP LOCKED
        ) x
      ), claimed AS (
        UPDATE public.jobs j
        SET status = 'processing', error = NULL, completed_at = NULL,
            metadata = public.runops_begin_attempt(j.metadata, gen_random_uuid()::text, p_worker, make_interval(secs => ttl_seconds))
        FROM picked p
        WHERE j.id = p.id
        RETURNING j.job_id::text, j.status::text, j.created_at, j.updated_at, j.completed_at, j.error,
                  coalesce(j.metadata, '{}'::jsonb), p.updated_at
      ), ids AS (
        SELECT array_agg(p.id) AS a FROM picked p
      ), gone AS (
        DELETE FROM public.runops_queue d WHERE d.id = ANY ((SELECT i.a FROM ids i)::integer[])
      ), counts AS (
        SELECT p.owner, count(*)::integer AS took FROM picked p GROUP BY p.owner
      ), kept AS (
        -- This statement's own deletes are not in its snapshot: the next
        -- job is the first one it did not take.
        UPDATE public.runops_owners w
        SET processing = w.processing + c.took, last_claim = clock_timestamp(),
            queued = greatest(w.queued - c.took, 0),
            (best, oldest) = (SELECT q.priority, q.created_at FROM public.runops_queue q
                              WHERE q.owner = w.owner AND q.id <> ALL ((SELECT i.a FROM ids i)::integer[])
                              ORDER BY q.priority, q.created_at, q.id LIMIT 1)
        FROM counts c
        WHERE w.owner = c.owner AND w.owner = ANY (owners) -- read by its index
      )
      SELECT * FROM claimed;
    GET DIAGNOSTICS took = ROW_COUNT;
    PERFORM set_config('runops.claim', '', true);
    got := got + took;
    EXIT WHEN got >= n;
    -- Short: the owners that gave fewer jobs than their turns are spent
    -- (each gave what it could: its queue, its cap, jobs other transactions
    -- hold); those with turns left keep them for the next round.
    IF took < (SELECT sum(c) FROM unnest(tcs) AS c) THEN
      spent := spent || ARRAY(
        SELECT t.owner FROM unnest(tos, tcs) AS t(owner, take)
        JOIN unnest(owners, procs) AS o(owner, processing) ON o.owner = t.owner
        JOIN public.runops_owners w ON w.owner = t.owner
        WHERE w.processing - o.processing < t.take);
    END IF;
  END LOOP;
END;
$$;

-- Not the API roles' (20261206000000_api_role_grants.sql): a function
-- replaced or renamed keeps its grants; said again for a database where
-- they differ.
DO $$
DECLARE
  api text;
  f text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  FOREACH f IN ARRAY ARRAY['public.runops_claim(text, float8, integer, integer)',
                           'public.runops_claim_jobs_first(text, float8, integer, integer)']
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    IF api IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f, api);
    END IF;
  END LOOP;
END $$;
