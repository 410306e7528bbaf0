-- The worker's own claim and outcome writes notify nobody (docs/lifecycle.md,
-- Notifications): queued -> processing, and processing -> completed or error,
-- when the writing transaction says it is the worker's (the transaction-local
-- setting runops.writer = 'worker', which only the queue's statements set).
-- PostgreSQL serialises notifying commits, so every notification saved is a
-- commit that no longer waits behind the others. Everything else notifies as
-- before: inserts, deletes, a job going back to queued (a rescue or a hand-back:
-- idle workers must take it at once), and any status change made by anybody
-- else (the dashboard, SQL, runops jobs) — even the same transitions. Idempotent.

CREATE OR REPLACE FUNCTION public.runops_jobs_notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
  r public.jobs;
BEGIN
  IF TG_OP = 'UPDATE'
     AND current_setting('runops.writer', true) = 'worker'
     AND ((OLD.status = 'queued' AND NEW.status = 'processing')
          OR (OLD.status = 'processing' AND NEW.status IN ('completed', 'error'))) THEN
    RETURN NULL;
  END IF;
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
