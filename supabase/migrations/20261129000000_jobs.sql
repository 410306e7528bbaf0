-- Runops jobs table, queue triggers, RLS and the videos bucket.
-- Idempotent: safe to apply twice, and applies to a plain PostgreSQL that has no
-- Supabase `storage` schema (those statements are guarded).

CREATE TABLE IF NOT EXISTS public.jobs (
  id SERIAL PRIMARY KEY,
  job_id UUID NOT NULL UNIQUE,
  status VARCHAR(50) NOT NULL DEFAULT 'queued',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  completed_at TIMESTAMPTZ,
  error TEXT,
  metadata JSONB
);

-- Workers claim the oldest queued row; this keeps that scan small however many
-- finished jobs the table holds.
CREATE INDEX IF NOT EXISTS jobs_queued_created_at_idx
  ON public.jobs (created_at, id) WHERE status = 'queued';

-- Rows whose lease may have expired (the rescuer's scan).
CREATE INDEX IF NOT EXISTS jobs_processing_idx
  ON public.jobs (updated_at) WHERE status = 'processing';

CREATE OR REPLACE FUNCTION public.runops_jobs_touch_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS jobs_touch_updated_at ON public.jobs;
CREATE TRIGGER jobs_touch_updated_at
  BEFORE UPDATE ON public.jobs
  FOR EACH ROW EXECUTE FUNCTION public.runops_jobs_touch_updated_at();

-- NOTIFY is a hint for workers: tiny payload, sent at commit. Heartbeats and
-- progress (metadata, updated_at, error, completed_at) stay silent.
CREATE OR REPLACE FUNCTION public.runops_jobs_notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  r public.jobs;
BEGIN
  IF TG_OP = 'DELETE' THEN
    r := OLD;
  ELSE
    r := NEW;
  END IF;
  PERFORM pg_notify('runops_jobs', json_build_object(
    'job_id', r.job_id,
    'op', TG_OP,
    'status', r.status
  )::text);
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS jobs_notify_insert_delete ON public.jobs;
CREATE TRIGGER jobs_notify_insert_delete
  AFTER INSERT OR DELETE ON public.jobs
  FOR EACH ROW EXECUTE FUNCTION public.runops_jobs_notify();

DROP TRIGGER IF EXISTS jobs_notify_status ON public.jobs;
CREATE TRIGGER jobs_notify_status
  AFTER UPDATE OF status ON public.jobs
  FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION public.runops_jobs_notify();

-- Only the service (service_role bypasses RLS, and the table owner) touches jobs:
-- RLS on, and no policy for anon or authenticated.
ALTER TABLE public.jobs ENABLE ROW LEVEL SECURITY;

-- The videos bucket and its policies exist only on a Supabase database.
DO $$
BEGIN
  IF to_regclass('storage.buckets') IS NULL THEN
    RAISE NOTICE 'no storage schema: skipping the videos bucket';
    RETURN;
  END IF;

  INSERT INTO storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  VALUES ('videos', 'videos', false, 786432000, ARRAY['video/*'])
  ON CONFLICT (id) DO UPDATE
    SET public = EXCLUDED.public,
        file_size_limit = EXCLUDED.file_size_limit,
        allowed_mime_types = EXCLUDED.allowed_mime_types;

  -- Authenticated users may read objects of this bucket; nobody but the service
  -- role writes (uploads go through signed URLs the service creates).
  EXECUTE 'DROP POLICY IF EXISTS "runops videos read" ON storage.objects';
  EXECUTE $p$CREATE POLICY "runops videos read" ON storage.objects
    FOR SELECT TO authenticated USING (bucket_id = 'videos')$p$;
END;
$$;
