-- The videos bucket also holds sops/<jobId>.json: a bucket limited to video/*
-- refuses those uploads (415), whoever makes them. Allow JSON too; the API
-- still refuses to queue anything but a video. Idempotent; skipped where there
-- is no storage schema.
DO $$
BEGIN
  IF to_regclass('storage.buckets') IS NULL THEN
    RETURN;
  END IF;
  UPDATE storage.buckets
  SET allowed_mime_types = ARRAY['video/*', 'application/json']
  WHERE id = 'videos';
END;
$$;
