-- A job has one owner, runops_uploads.owner (docs/security.md), which
-- storage's policy reads; jobs.metadata.owner is its copy, which the API
-- reads with the row (one statement) and the claim's fairness groups by. A
-- person's edit could make them differ: metadata replaced in the dashboard
-- without its owner opened an owned job's status, SOP and screenshots to
-- everyone through the API while storage still held it closed, and a row
-- inserted by hand with an owner was closed in the API and open to every
-- signed-in user in storage (TestOneOwnerWhateverTheDashboardDoes). Now:
-- - the copy is kept: a row inserted or updated with an owner that is not
--   its upload's gets its upload's (none when the upload has none);
-- - a row inserted by hand, with no upload recorded, records its own owner
--   as its upload's (jobs_record_upload);
-- - an owner changed in runops_uploads by hand is copied to the row.
-- - an owner blanked by hand ('', what a cleared cell holds) is no owner
--   (NULL), as storage's policy reads it.
-- Metadata that is no object holds no owner: the API reads the upload's
-- then (postgres.JobStore.Summary). The row's triggers are named to run
-- after every other BEFORE trigger of jobs: jobs_requeued makes NULL
-- metadata an object, which must get the owner too. The upload's row is
-- locked as it is read, so that an owner edited meanwhile is waited for and
-- copied, not missed; locked for update (not shared), as jobs_record_upload
-- then locks it in the same statement: two callers queueing one job at
-- once, each holding a share, deadlocked. Rows that differ now are put right. Idempotent.
CREATE OR REPLACE FUNCTION public.runops_jobs_keep_owner()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  recorded boolean;
  o text;
BEGIN
  IF jsonb_typeof(NEW.metadata) IS DISTINCT FROM 'object' THEN
    RETURN NEW;
  END IF;
  SELECT true, u.owner INTO recorded, o FROM public.runops_uploads u WHERE u.job_id = NEW.job_id FOR NO KEY UPDATE;
  IF recorded IS NULL THEN
    RETURN NEW; -- no upload: a row made by hand, whose owner jobs_record_upload records
  END IF;
  IF o IS NULL THEN
    IF NEW.metadata ? 'owner' THEN
      NEW.metadata := NEW.metadata - 'owner';
    END IF;
  ELSIF NEW.metadata->'owner' IS DISTINCT FROM to_jsonb(o) THEN
    NEW.metadata := NEW.metadata || jsonb_build_object('owner', o);
  END IF;
  RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS runops_keep_owner_insert ON public.jobs;
CREATE TRIGGER runops_keep_owner_insert
  BEFORE INSERT ON public.jobs
  FOR EACH ROW
  EXECUTE FUNCTION public.runops_jobs_keep_owner();

DROP TRIGGER IF EXISTS runops_keep_owner_update ON public.jobs;
CREATE TRIGGER runops_keep_owner_update
  BEFORE UPDATE ON public.jobs
  FOR EACH ROW
  WHEN (OLD.metadata->'owner' IS DISTINCT FROM NEW.metadata->'owner'
        OR jsonb_typeof(OLD.metadata) IS DISTINCT FROM jsonb_typeof(NEW.metadata))
  EXECUTE FUNCTION public.runops_jobs_keep_owner();

-- An owner blanked by hand is none.
CREATE OR REPLACE FUNCTION public.runops_uploads_blank_owner()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  NEW.owner := nullif(NEW.owner, '');
  RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS runops_uploads_blank_owner ON public.runops_uploads;
CREATE TRIGGER runops_uploads_blank_owner
  BEFORE INSERT OR UPDATE OF owner ON public.runops_uploads
  FOR EACH ROW
  WHEN (NEW.owner = '')
  EXECUTE FUNCTION public.runops_uploads_blank_owner();

UPDATE public.runops_uploads SET owner = NULL WHERE owner = '';

-- A row inserted with no upload recorded (by hand) records one, owned by the
-- owner its metadata names, if any.
CREATE OR REPLACE FUNCTION public.runops_jobs_record_upload()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  INSERT INTO public.runops_uploads (job_id, owner, queued_at)
  VALUES (NEW.job_id,
          CASE WHEN jsonb_typeof(NEW.metadata->'owner') = 'string' THEN nullif(NEW.metadata->>'owner', '') END,
          now())
  ON CONFLICT (job_id) DO UPDATE SET queued_at = now()
    WHERE public.runops_uploads.queued_at IS NULL;
  RETURN NULL;
END;
$$;

-- An owner changed in runops_uploads is copied to its job's row (whose
-- update trigger then reads it back from here), in one statement for all
-- the rows a statement changed: the claim's bookkeeping then locks their
-- owners together, in order, as for any other edit of several jobs (one
-- statement a row locked them out of order, and deadlocked with claims).
CREATE OR REPLACE FUNCTION public.runops_uploads_owner_changed()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  UPDATE public.jobs j
  SET metadata = CASE WHEN n.owner IS NULL THEN j.metadata - 'owner'
                      ELSE j.metadata || jsonb_build_object('owner', n.owner) END
  FROM new_rows n JOIN old_rows o ON o.job_id = n.job_id
  WHERE j.job_id = n.job_id AND o.owner IS DISTINCT FROM n.owner
    AND jsonb_typeof(j.metadata) = 'object' AND j.metadata->'owner' IS DISTINCT FROM to_jsonb(n.owner);
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS runops_uploads_owner_changed ON public.runops_uploads;
CREATE TRIGGER runops_uploads_owner_changed
  AFTER UPDATE ON public.runops_uploads
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT
  EXECUTE FUNCTION public.runops_uploads_owner_changed();

-- Rows whose copy differs now.
UPDATE public.jobs j
SET metadata = CASE WHEN u.owner IS NULL THEN j.metadata - 'owner'
                    ELSE j.metadata || jsonb_build_object('owner', u.owner) END
FROM public.runops_uploads u
WHERE u.job_id = j.job_id AND jsonb_typeof(j.metadata) = 'object'
  AND j.metadata->'owner' IS DISTINCT FROM to_jsonb(u.owner);

-- Not the API roles' (20261206000000_api_role_grants.sql).
DO $$
DECLARE
  api text;
  f text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  FOREACH f IN ARRAY ARRAY['public.runops_jobs_keep_owner()', 'public.runops_jobs_record_upload()',
                           'public.runops_uploads_owner_changed()', 'public.runops_uploads_blank_owner()'] LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    IF api IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', f, api);
    END IF;
  END LOOP;
END $$;
