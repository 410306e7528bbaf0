-- metadata.attempt as an integer, whatever a person typed there
-- (…_queue.sql), now also when they typed a count an integer cannot hold:
-- such a count, above 1,000,000,000, is read as 0, as text or any other
-- unreadable count is. Before, it failed the cast, and a claim's count of
-- the next attempt overflowed at 2147483647: every claim that reached the
-- job failed, and one edit stopped the fleet
-- (TestAnAttemptBeyondAnIntegerDoesNotStopClaims). Idempotent.
CREATE OR REPLACE FUNCTION public.runops_attempt(meta jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$
  SELECT CASE WHEN jsonb_typeof(meta->'attempt') = 'number' AND (meta->>'attempt')::numeric < 1000000001
              THEN greatest(floor((meta->>'attempt')::numeric), 0)::integer ELSE 0 END
$$;

-- Not the API roles' (20261206000000_api_role_grants.sql): a function
-- replaced keeps its grants; said again for a database where they differ.
DO $$
DECLARE
  api text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  REVOKE ALL ON FUNCTION public.runops_attempt(jsonb) FROM PUBLIC;
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_attempt(jsonb) FROM %s', api);
  END IF;
END $$;
