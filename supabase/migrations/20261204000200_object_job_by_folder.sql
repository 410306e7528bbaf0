-- The object's job for the storage policy (20261204000000_owner_scoped_storage.sql)
-- from the first folder of its path: the id after raw/, slim/, sops/ or
-- frames/ (raw/<id>.mp4, slim/<id>.mp4, sops/<id>.json,
-- frames/<id>/<node>.jpg); NULL under any other folder. The policy runs this
-- on every object a listing scans: one strpos and one comparison cost a third
-- of the earlier CASE of lengths and suffixes (a regular expression ~6 µs an
-- object, this ~0.3 µs). The id is not checked here: only canonical ids are
-- in runops_uploads, so anything else matches no job, and whatever else the
-- service stored under a job's id is that job's. Replaces the function of the
-- migration above, which has shipped. Idempotent.
CREATE OR REPLACE FUNCTION public.runops_object_job(name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE strpos(name, '/')
    WHEN 4 THEN CASE WHEN left(name, 4) = 'raw/' THEN substr(name, 5, 36) END
    WHEN 5 THEN CASE WHEN left(name, 5) IN ('slim/', 'sops/') THEN substr(name, 6, 36) END
    WHEN 7 THEN CASE WHEN left(name, 7) = 'frames/' THEN substr(name, 8, 36) END
  END
$$;
