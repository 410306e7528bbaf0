-- The janitor's clock. Idempotent.
--
-- 1. Its own record of a deletion (metadata.retention, marked by
--    runops.writer = 'janitor': internal/postgres/operator.go) no longer
--    moves updated_at. A job that ended in error has no completed_at, and
--    the janitor ages it from updated_at: the raw deletion restarted the
--    slim copy's clock (kept a whole RUNOPS_SLIM_RETENTION more), and made a
--    day-old failure look an hour old to `runops jobs requeue --since 1h`
--    (TestTheJanitorsRecordKeepsTheJobsClock).
CREATE OR REPLACE FUNCTION public.runops_jobs_touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF current_setting('runops.writer', true) IS DISTINCT FROM 'janitor' THEN
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END;
$$;

-- 2. A job a person deleted keeps no objects for ever. The deletion is
--    recorded in runops_deleted_jobs, and the janitor deletes the job's
--    every object (upload, slim copy, SOP, screenshots) RUNOPS_RAW_RETENTION
--    later, unless the row is back, then forgets the upload. Before, only
--    jobs with a row were expired: a deleted job's objects stayed, readable
--    through the storage policy, which the upload's row still opened
--    (TestADeletedJobsObjectsGo). A table of its own, written by insert
--    alone: the deletion locks no runops_uploads row, which queue-job's
--    trigger locks before the job's (TestADeletionAndAQueueJobAtOnce).
CREATE TABLE IF NOT EXISTS public.runops_deleted_jobs (
  job_id uuid PRIMARY KEY,
  deleted_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.runops_deleted_jobs ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.runops_deleted_jobs FROM PUBLIC;
DO $$
DECLARE
  api text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON public.runops_deleted_jobs FROM %s', api);
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS runops_deleted_jobs_at_idx ON public.runops_deleted_jobs (deleted_at);

CREATE OR REPLACE FUNCTION public.runops_jobs_deleted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    -- Every job with an upload; one recorded before keeps its time.
    INSERT INTO public.runops_deleted_jobs (job_id)
    SELECT u.job_id FROM public.runops_uploads u WHERE u.queued_at IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING;
  ELSE
    INSERT INTO public.runops_deleted_jobs (job_id)
    SELECT o.job_id FROM old_rows o
    ON CONFLICT (job_id) DO UPDATE SET deleted_at = EXCLUDED.deleted_at;
  END IF;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS runops_jobs_deleted ON public.jobs;
CREATE TRIGGER runops_jobs_deleted
  AFTER DELETE ON public.jobs REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_jobs_deleted();
DROP TRIGGER IF EXISTS runops_jobs_truncated ON public.jobs;
CREATE TRIGGER runops_jobs_truncated
  AFTER TRUNCATE ON public.jobs
  FOR EACH STATEMENT EXECUTE FUNCTION public.runops_jobs_deleted();

-- Jobs deleted before this migration: from now.
INSERT INTO public.runops_deleted_jobs (job_id)
SELECT u.job_id FROM public.runops_uploads u
WHERE u.queued_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM public.jobs j WHERE j.job_id = u.job_id)
ON CONFLICT (job_id) DO NOTHING;

-- Not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  REVOKE ALL ON FUNCTION public.runops_jobs_deleted() FROM PUBLIC;
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON FUNCTION public.runops_jobs_deleted() FROM %s', api);
  END IF;
END $$;
