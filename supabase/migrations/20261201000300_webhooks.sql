-- Completion webhooks: an outbox of events, one row per event and URL,
-- written in the same transaction that finishes a job (so an event exists
-- exactly when the outcome does) while RUNOPS_WEBHOOK_URLS is set, and
-- delivered by the workers (internal/webhook; docs/operations.md).
-- public.jobs stays exactly as the app knows it. Idempotent.

CREATE TABLE IF NOT EXISTS public.runops_webhooks (
  event_id     UUID NOT NULL,
  url          TEXT NOT NULL,
  job_id       UUID NOT NULL,
  type         TEXT NOT NULL,
  body         JSONB NOT NULL,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  attempts     INTEGER NOT NULL DEFAULT 0,
  next_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  delivered_at TIMESTAMPTZ,
  given_up_at  TIMESTAMPTZ,
  last_error   TEXT,
  PRIMARY KEY (event_id, url)
);

CREATE INDEX IF NOT EXISTS runops_webhooks_due_idx ON public.runops_webhooks (next_at)
  WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX IF NOT EXISTS runops_webhooks_job_idx ON public.runops_webhooks (job_id);

ALTER TABLE public.runops_webhooks ENABLE ROW LEVEL SECURITY;

-- The event of an outcome: {id, type, job_id, status, error, sop_path,
-- created_at, completed_at, timings}, one row per URL, all with one id. It
-- takes the finished row's values (called in the statement that finishes the
-- job, whose own update it could not read back).
CREATE OR REPLACE FUNCTION public.runops_record_event(job UUID, status TEXT, error TEXT,
  created TIMESTAMPTZ, completed TIMESTAMPTZ, timings JSONB, urls TEXT[])
RETURNS void
LANGUAGE sql
AS $$
  WITH ev AS (SELECT gen_random_uuid() AS id,
                     CASE WHEN status = 'completed' THEN 'job.completed' ELSE 'job.failed' END AS type)
  INSERT INTO public.runops_webhooks (event_id, url, job_id, type, body)
  SELECT ev.id, u, job, ev.type, jsonb_build_object(
           'id', ev.id, 'type', ev.type, 'job_id', job, 'status', status, 'error', error,
           'sop_path', CASE WHEN status = 'completed' THEN 'sops/' || job || '.json' END,
           'created_at', created, 'completed_at', completed,
           'timings', coalesce(timings, '{}'::jsonb))
  FROM ev, unnest(urls) AS u
$$;
