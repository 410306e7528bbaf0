-- runops_owner (…_owner_fairness.sql) written so that the planner inlines
-- it: the same owner for every job, read where it is used instead of
-- through a call of its own. Its first form read the owner in a subquery,
-- which no SQL function can be inlined with; each claim called it once per
-- job it took (about 10 µs a call, 7 % of a claim of 8). Idempotent.
CREATE OR REPLACE FUNCTION public.runops_owner(meta jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN length(coalesce(meta->>'owner', '')) <= 200 THEN coalesce(meta->>'owner', '')
              ELSE 'md5:' || md5(meta->>'owner') END
$$;
