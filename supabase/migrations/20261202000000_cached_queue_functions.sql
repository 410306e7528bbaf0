-- The queue's bookkeeping functions, same behaviour, in PL/pgSQL. As SQL
-- functions that PostgreSQL cannot inline (a subquery, a recursion, an
-- INSERT), their bodies were parsed and planned again in every statement
-- that called them: every claim, metadata write and outcome. PL/pgSQL keeps
-- its plans for the whole session (docs/lifecycle.md, "What the queue costs").
-- Idempotent.

-- Deep merge for objects (keys a person added survive); anything else is replaced.
CREATE OR REPLACE FUNCTION public.runops_jsonb_merge(a jsonb, b jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  out jsonb;
  k text;
  v jsonb;
BEGIN
  IF jsonb_typeof(a) = 'object' AND jsonb_typeof(b) = 'object' THEN
    out := a;
    FOR k, v IN SELECT key, value FROM jsonb_each(b) LOOP
      IF jsonb_typeof(v) = 'object' AND jsonb_typeof(out->k) = 'object' THEN
        v := public.runops_jsonb_merge(out->k, v);
      END IF;
      out := out || jsonb_build_object(k, v);
    END LOOP;
    RETURN out;
  END IF;
  IF b IS NULL THEN
    RETURN a;
  END IF;
  RETURN b;
END;
$$;

-- Ends the attempts[] entry of lease token tok with outcome (and a short
-- cause), and drops the lease if it is tok's.
CREATE OR REPLACE FUNCTION public.runops_close_attempt(meta jsonb, tok text, outcome text, cause text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  m jsonb := coalesce(meta, '{}'::jsonb);
BEGIN
  IF m->'lease'->>'token' = tok THEN
    m := m - 'lease';
  END IF;
  IF jsonb_typeof(m->'attempts') = 'array' THEN
    m := m || jsonb_build_object('attempts', (
      SELECT coalesce(jsonb_agg(
               CASE WHEN e->>'token' = tok AND NOT e ? 'ended_at'
                    THEN e || jsonb_build_object('ended_at', now(), 'outcome', outcome, 'error', cause)
                    ELSE e END ORDER BY i), '[]'::jsonb)
      FROM jsonb_array_elements(m->'attempts') WITH ORDINALITY AS t(e, i)));
  END IF;
  RETURN m;
END;
$$;

-- The event of an outcome: {id, type, job_id, status, error, sop_path,
-- created_at, completed_at, timings}, one row per URL, all with one id.
-- Nothing at all when no URL is configured (the usual case).
CREATE OR REPLACE FUNCTION public.runops_record_event(job UUID, status TEXT, error TEXT,
  created TIMESTAMPTZ, completed TIMESTAMPTZ, timings JSONB, urls TEXT[])
RETURNS void
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
  ev uuid;
  kind text;
BEGIN
  IF coalesce(cardinality(urls), 0) = 0 THEN
    RETURN;
  END IF;
  ev := gen_random_uuid();
  kind := CASE WHEN status = 'completed' THEN 'job.completed' ELSE 'job.failed' END;
  INSERT INTO public.runops_webhooks (event_id, url, job_id, type, body)
  SELECT ev, u, job, kind, jsonb_build_object(
           'id', ev, 'type', kind, 'job_id', job, 'status', status, 'error', error,
           'sop_path', CASE WHEN status = 'completed' THEN 'sops/' || job || '.json' END,
           'created_at', created, 'completed_at', completed,
           'timings', coalesce(timings, '{}'::jsonb))
  FROM unnest(urls) AS u;
END;
$$;
