-- The videos bucket also holds the step screenshots (frames/<jobId>/<nodeId>.jpg,
-- image/jpeg) and Markdown exports (text/markdown): a bucket that does not list
-- a type refuses it (415), even from the service role. The API still queues
-- nothing but a video. Idempotent; skipped where there is no storage schema.
DO $$
BEGIN
  IF to_regclass('storage.buckets') IS NULL THEN
    RETURN;
  END IF;
  UPDATE storage.buckets
  SET allowed_mime_types = ARRAY['video/*', 'application/json', 'image/jpeg', 'text/markdown']
  WHERE id = 'videos';
END;
$$;
