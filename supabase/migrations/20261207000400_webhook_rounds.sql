-- A webhook round takes up to n due deliveries of each receiver (URL),
-- oldest first (internal/postgres/webhooks.go, dueDeliveries): the
-- receivers still waited on, read one index entry each, then each one's
-- first due rows. Without this index the round read and sorted every
-- pending row, every second, of every worker: a receiver down for hours
-- keeps a backlog (TestDueReadsTheRoundNotTheBacklog). The index of due
-- times alone, which the round read before, serves nothing now. Idempotent.
CREATE INDEX IF NOT EXISTS runops_webhooks_url_due_idx ON public.runops_webhooks (url, next_at)
  WHERE delivered_at IS NULL AND given_up_at IS NULL;
DROP INDEX IF EXISTS public.runops_webhooks_due_idx;
