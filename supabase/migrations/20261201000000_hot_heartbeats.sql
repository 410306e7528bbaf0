-- Heartbeats write metadata and updated_at several times a minute per running
-- job. An index on updated_at (jobs_processing_idx) made every one of them a
-- non-HOT update: new index entries, more WAL and bloat. The rescuer's scan
-- needs only the processing rows, which an index on id (never updated) finds
-- as well. Free space left in each page lets the updated row stay on it, which
-- HOT also needs. See docs/dependencies.md (PostgreSQL). Idempotent.

CREATE INDEX IF NOT EXISTS jobs_processing_id_idx
  ON public.jobs (id) WHERE status = 'processing';

DROP INDEX IF EXISTS public.jobs_processing_idx;

ALTER TABLE public.jobs SET (fillfactor = 50);
