-- A live lease is its holder's until the holder drops it or it expires: a
-- person's edit that changes or removes it with other keys (the whole
-- metadata replaced in the dashboard, with or without a re-queue) keeps it
-- as it was. An edit of the lease alone is deliberate and stands. Before, a
-- re-queue that also replaced the metadata left the job queued with no
-- lease, and another worker claimed it at once while its holder still ran
-- (TestAnEditThatDropsALiveLeaseDoesNotRunTheJobTwice); a metadata edit
-- alone left a processing job with no lease, which the next rescue took for
-- expired. The engine's own writes change leases (claims, renewals,
-- hand-backs, outcomes, the rescue, the drop of a cancelled run's lease):
-- they are marked runops.writer = 'worker' for their transaction
-- (internal/postgres/queue.go, WorkerMark), which the trigger's WHEN reads,
-- so that a renewal calls no function. Metadata that is no object
-- cannot hold the lease: it becomes an object holding only the lease, as
-- the rescue starts such metadata over. Named to run before jobs_requeued,
-- which tells a person's re-queue by the lease it finds unchanged.
-- Idempotent.
CREATE OR REPLACE FUNCTION public.runops_jobs_keep_lease()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF public.runops_held_until(OLD.metadata) <= now()
     -- An edit of the lease alone is deliberate, a person's to make (a lease
     -- written by hand, taken back): only one that changes more of the
     -- metadata, and the lease with it, keeps it.
     OR jsonb_typeof(NEW.metadata) = 'object' AND NEW.metadata - 'lease' = OLD.metadata - 'lease' THEN
    RETURN NEW;
  END IF;
  IF jsonb_typeof(NEW.metadata) = 'object' THEN
    NEW.metadata := NEW.metadata || jsonb_build_object('lease', OLD.metadata->'lease');
  ELSE
    NEW.metadata := jsonb_build_object('lease', OLD.metadata->'lease');
  END IF;
  RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS jobs_keep_lease ON public.jobs;
CREATE TRIGGER jobs_keep_lease
  BEFORE UPDATE ON public.jobs
  FOR EACH ROW
  WHEN (OLD.metadata->'lease' IS DISTINCT FROM NEW.metadata->'lease'
        AND current_setting('runops.writer', true) IS DISTINCT FROM 'worker')
  EXECUTE FUNCTION public.runops_jobs_keep_lease();

-- Not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  REVOKE ALL ON FUNCTION public.runops_jobs_keep_lease() FROM PUBLIC;
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_jobs_keep_lease() FROM %s', api);
  END IF;
END $$;
