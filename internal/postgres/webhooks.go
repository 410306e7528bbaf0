package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/webhook"
)

// The outbox's SQL (the runops_webhooks table). A row's body is the event's
// data; the deliverer wraps it with the row's type and created_at
// (webhook.Delivery.Body), so that rows written before the Standard Webhooks
// body still go out in it.
const (
	// At most $1 of each receiver (URL), its oldest due: a receiver with a
	// backlog takes no other's turn. The receivers still waited on are read
	// one index entry each (a loose scan of runops_webhooks_url_due_idx),
	// then each one's first due rows through the same index: the round
	// reads what it takes, never the whole backlog. Only the receivers of
	// $3 (RUNOPS_WEBHOOK_URLS; NULL: every one).
	dueDeliveries = `WITH RECURSIVE receivers AS (
  (SELECT url FROM public.runops_webhooks WHERE delivered_at IS NULL AND given_up_at IS NULL ORDER BY url LIMIT 1)
  UNION ALL
  SELECT (SELECT p.url FROM public.runops_webhooks p
          WHERE p.delivered_at IS NULL AND p.given_up_at IS NULL AND p.url > r.url ORDER BY p.url LIMIT 1)
  FROM receivers r WHERE r.url IS NOT NULL
)
UPDATE public.runops_webhooks w
SET attempts = w.attempts + 1, next_at = now() + make_interval(secs => $2)
FROM (SELECT d.event_id, d.url FROM receivers r CROSS JOIN LATERAL (
        SELECT l.event_id, l.url FROM public.runops_webhooks l
        WHERE l.url = r.url AND l.delivered_at IS NULL AND l.given_up_at IS NULL AND l.next_at <= now()
        ORDER BY l.next_at LIMIT $1 FOR UPDATE SKIP LOCKED) d
      WHERE r.url IS NOT NULL AND ($3::text[] IS NULL OR r.url = ANY ($3::text[]))) due
WHERE w.event_id = due.event_id AND w.url = due.url
RETURNING w.event_id::text, w.url, w.type, w.body::text, w.attempts, w.created_at`

	// Pending events of receivers no longer configured, recorded more than
	// $3 seconds ago: given up.
	abandonUnlisted = `UPDATE public.runops_webhooks SET given_up_at = now(), last_error = $2
WHERE delivered_at IS NULL AND given_up_at IS NULL AND url <> ALL ($1::text[])
  AND created_at < now() - make_interval(secs => $3)`

	markDelivered = `UPDATE public.runops_webhooks SET delivered_at = now(), last_error = NULL WHERE event_id = $1 AND url = $2`
	markRetry     = `UPDATE public.runops_webhooks SET next_at = $3, last_error = $4 WHERE event_id = $1 AND url = $2`
	markGivenUp   = `UPDATE public.runops_webhooks SET given_up_at = now(), last_error = $3 WHERE event_id = $1 AND url = $2`
	// Untried deliveries are due at once, first among the due: their
	// next_at becomes their event's time (the round ordered them by it).
	returnUntried = `UPDATE public.runops_webhooks w SET next_at = least(w.created_at, now()), attempts = greatest(w.attempts - 1, 0)
FROM unnest($1::uuid[], $2::text[]) AS r(event_id, url)
WHERE w.event_id = r.event_id AND w.url = r.url AND w.delivered_at IS NULL AND w.given_up_at IS NULL`

	jobEvents = `SELECT event_id::text, url, type, created_at, attempts, delivered_at, given_up_at, coalesce(last_error, '')
FROM public.runops_webhooks WHERE job_id = $1 ORDER BY created_at, url`
)

// Webhooks is the outbox of completion events.
type Webhooks struct{ s *JobStore }

// Webhooks returns the store's outbox.
func (s *JobStore) Webhooks() *Webhooks { return &Webhooks{s} }

var _ webhook.Store = (*Webhooks)(nil)

// Due implements webhook.Store.
func (w *Webhooks) Due(ctx context.Context, urls []string, n int, hold time.Duration) ([]webhook.Delivery, error) {
	rows, err := w.s.pool.Query(ctx, dueDeliveries, n, hold.Seconds(), urls)
	if err != nil {
		return nil, wrap("due webhooks", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhook.Delivery, error) {
		var d webhook.Delivery
		var data string
		err := r.Scan(&d.EventID, &d.URL, &d.Type, &data, &d.Tries, &d.Created)
		d.Data = []byte(data)
		return d, err
	})
	return out, wrap("due webhooks", err)
}

func (w *Webhooks) exec(ctx context.Context, op, sql string, args ...any) error {
	_, err := w.s.pool.Exec(ctx, sql, args...)
	return wrap(op, err)
}

// Abandon implements webhook.Store.
func (w *Webhooks) Abandon(ctx context.Context, urls []string, olderThan time.Duration, why string) (int, error) {
	tag, err := w.s.pool.Exec(ctx, abandonUnlisted, urls, why, olderThan.Seconds())
	return int(tag.RowsAffected()), wrap("abandon webhooks", err)
}

// Delivered implements webhook.Store.
func (w *Webhooks) Delivered(ctx context.Context, d webhook.Delivery) error {
	return w.exec(ctx, "webhook delivered", markDelivered, d.EventID, d.URL)
}

// Retry implements webhook.Store.
func (w *Webhooks) Retry(ctx context.Context, d webhook.Delivery, next time.Time, why string) error {
	return w.exec(ctx, "webhook retry", markRetry, d.EventID, d.URL, next, why)
}

// GiveUp implements webhook.Store.
func (w *Webhooks) GiveUp(ctx context.Context, d webhook.Delivery, why string) error {
	return w.exec(ctx, "webhook given up", markGivenUp, d.EventID, d.URL, why)
}

// Event is a job's event at one URL, with its delivery state, for runops jobs show.
type Event struct {
	ID          string     `json:"id"`
	URL         string     `json:"url"`
	Type        string     `json:"type"`
	Created     time.Time  `json:"created_at"`
	Tries       int        `json:"attempts"` // the stored attempts column
	DeliveredAt *time.Time `json:"delivered_at"`
	GivenUpAt   *time.Time `json:"given_up_at"`
	LastError   string     `json:"last_error,omitempty"`
}

// Events lists the job's events.
func (w *Webhooks) Events(ctx context.Context, id jobs.ID) ([]Event, error) {
	rows, err := w.s.pool.Query(ctx, jobEvents, string(id))
	if err != nil {
		return nil, wrap("job events", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		err := r.Scan(&e.ID, &e.URL, &e.Type, &e.Created, &e.Tries, &e.DeliveredAt, &e.GivenUpAt, &e.LastError)
		return e, err
	})
	if out == nil {
		out = []Event{} // a JSON array, never null
	}
	return out, wrap("job events", err)
}

// Return implements webhook.Store.
func (w *Webhooks) Return(ctx context.Context, ds []webhook.Delivery) error {
	ids, urls := make([]string, len(ds)), make([]string, len(ds))
	for i, d := range ds {
		ids[i], urls[i] = d.EventID, d.URL
	}
	return w.exec(ctx, "return webhooks", returnUntried, ids, urls)
}
