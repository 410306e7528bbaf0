-- Issued uploads: every upload URL the API hands out, with the user it was
-- issued to (NULL: anonymous). It makes a job its owner's from get-upload-url
-- on — before any jobs row exists — so that nobody else can queue it or see
-- it, and it tells the retention janitor about uploads that were never queued
-- (docs/lifecycle.md). public.jobs stays exactly as the app knows it.
-- Idempotent.

CREATE TABLE IF NOT EXISTS public.runops_uploads (
  job_id    UUID PRIMARY KEY,
  owner     TEXT,
  issued_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS runops_uploads_issued_at_idx ON public.runops_uploads (issued_at);

-- Only the service touches it (the service role bypasses RLS).
ALTER TABLE public.runops_uploads ENABLE ROW LEVEL SECURITY;
