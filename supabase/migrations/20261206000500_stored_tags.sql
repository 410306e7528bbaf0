-- The entity tags of what a job has in storage, recorded when it is written
-- (docs/frontend-contract.md, "Revalidation"): the SOP's as GET /api/sop serves it, and
-- each step's screenshot's. A revalidation (If-None-Match) is then one
-- query, not a download. The worker, PATCH /api/sop and runops jobs
-- complete forget an object's tag before they store it and record the new
-- one after, so a tag recorded is always that of what is stored: a write
-- that fails leaves none, and revalidations read storage. A job
-- without a row here (an SOP placed by hand) is read from storage, as
-- before. Kept apart from public.jobs: recording never touches the job's
-- row (its updated_at, the queue's triggers). Idempotent.
CREATE TABLE IF NOT EXISTS public.runops_stored_tags (
  job_id      UUID PRIMARY KEY,
  sop         TEXT,                        -- the served SOP's ETag; NULL while none is known
  frames      JSONB NOT NULL DEFAULT '{}', -- {"<nodeId>": "<ETag>"}
  recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Only the service reads and writes it (20261206000000_api_role_grants.sql).
ALTER TABLE public.runops_stored_tags ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
  api text;
BEGIN
  SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) INTO api
  FROM pg_roles WHERE rolname IN ('anon', 'authenticated');
  IF api IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON TABLE public.runops_stored_tags FROM %s', api);
  END IF;
END $$;
