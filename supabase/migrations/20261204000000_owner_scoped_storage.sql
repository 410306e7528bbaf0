-- Objects of the videos bucket are readable, straight from the storage API
-- (download, signed URL, list), only as the API would show them
-- (docs/security.md): an object of an owned job by its owner alone, an object
-- of an unowned job by any authenticated user, nothing by anon. Replaces the
-- policy of 20261129000000_jobs.sql, which let every authenticated user read
-- every object. Idempotent; the bucket part is skipped where there is no
-- storage schema (plain PostgreSQL).

-- Which job an object belongs to, from its path: raw/<id>.mp4, slim/<id>.mp4,
-- sops/<id>.json or frames/<id>/<node>.jpg; NULL for any other path. Plain
-- string functions (no regular expression): the policy runs this on every
-- object a listing scans. The id is not checked here: only canonical ids are
-- in runops_uploads, so anything else matches no job.
CREATE OR REPLACE FUNCTION public.runops_object_job(name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN left(name, 4) = 'raw/' AND length(name) = 44 AND right(name, 4) = '.mp4' THEN substr(name, 5, 36)
    WHEN left(name, 5) = 'slim/' AND length(name) = 45 AND right(name, 4) = '.mp4' THEN substr(name, 6, 36)
    WHEN left(name, 5) = 'sops/' AND length(name) = 46 AND right(name, 5) = '.json' THEN substr(name, 6, 36)
    WHEN left(name, 7) = 'frames/' AND length(name) > 44 AND substr(name, 44, 1) = '/'
      AND strpos(substr(name, 45), '/') = 0 THEN substr(name, 8, 36)
  END
$$;

-- A job a person queued by hand in the dashboard has an uploads row too (no
-- owner): the storage policy and the retention janitor look only there.
-- queued_at tells the janitor that objects beyond the raw upload may exist,
-- so the row (and with it the owner) is kept as long as they may.
ALTER TABLE public.runops_uploads ADD COLUMN IF NOT EXISTS queued_at TIMESTAMPTZ;
CREATE INDEX IF NOT EXISTS runops_uploads_owner_idx ON public.runops_uploads (owner);

INSERT INTO public.runops_uploads (job_id, owner, issued_at, queued_at)
SELECT j.job_id, nullif(j.metadata ->> 'owner', ''), j.created_at, j.created_at
FROM public.jobs j
ON CONFLICT (job_id) DO UPDATE SET queued_at = coalesce(public.runops_uploads.queued_at, EXCLUDED.queued_at);

CREATE OR REPLACE FUNCTION public.runops_jobs_record_upload()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO public.runops_uploads (job_id, queued_at) VALUES (NEW.job_id, now())
  ON CONFLICT (job_id) DO UPDATE SET queued_at = now()
    WHERE public.runops_uploads.queued_at IS NULL;
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS jobs_record_upload ON public.jobs;
CREATE TRIGGER jobs_record_upload
  AFTER INSERT ON public.jobs
  FOR EACH ROW EXECUTE FUNCTION public.runops_jobs_record_upload();

-- The jobs whose objects the caller may read: its own and the unowned ones.
-- runops_uploads has RLS on and no policy for the caller, so the lookup runs
-- as this function's owner (SECURITY DEFINER) with a fixed search_path. It
-- answers that one question only, once per statement: the policy compares
-- each object's job with this set through a hash (docs/security.md, cost).
DO $$
BEGIN
  IF to_regclass('storage.objects') IS NULL THEN
    RAISE NOTICE 'no storage schema: skipping the videos bucket policy';
    RETURN;
  END IF;
  IF to_regprocedure('auth.uid()') IS NULL THEN
    RAISE EXCEPTION 'auth.uid() is missing: the storage policy needs Supabase''s auth schema';
  END IF;
  -- Created here: its body names auth.uid(), which plain PostgreSQL lacks.
  EXECUTE $f$CREATE OR REPLACE FUNCTION public.runops_readable_jobs()
    RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
    AS $b$
      SELECT u.job_id::text FROM public.runops_uploads u WHERE u.owner IS NULL
      UNION ALL
      SELECT u.job_id::text FROM public.runops_uploads u
      WHERE u.owner = (SELECT auth.uid())::text
    $b$
  $f$;
  EXECUTE 'REVOKE ALL ON FUNCTION public.runops_readable_jobs() FROM PUBLIC';
  EXECUTE 'GRANT EXECUTE ON FUNCTION public.runops_readable_jobs() TO authenticated';
  EXECUTE 'DROP POLICY IF EXISTS "runops videos read" ON storage.objects';
  EXECUTE $p$CREATE POLICY "runops videos read" ON storage.objects
    FOR SELECT TO authenticated
    USING (bucket_id = 'videos'
           AND public.runops_object_job(name) IN (SELECT public.runops_readable_jobs()))$p$;
END;
$$;
