package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// memStore records what the deliverer decided.
type memStore struct {
	due                       []Delivery
	delivered, retried, given int
	next                      time.Time
}

func (m *memStore) Due(context.Context, []string, int, time.Duration) ([]Delivery, error) {
	d := m.due
	m.due = nil
	return d, nil
}
func (m *memStore) Delivered(context.Context, Delivery) error { m.delivered++; return nil }
func (m *memStore) Retry(_ context.Context, _ Delivery, next time.Time, _ string) error {
	m.retried++
	m.next = next
	return nil
}
func (m *memStore) GiveUp(context.Context, Delivery, string) error { m.given++; return nil }
func (m *memStore) Return(context.Context, []Delivery) error       { return nil }
func (m *memStore) Abandon(context.Context, []string, time.Duration, string) (int, error) {
	return 0, nil
}

// A failing delivery is retried until the event is 24 hours old, then given
// up; the retry comes after the backoff of its count of tries.
func TestGiveUpAfterADay(t *testing.T) {
	down := NewReceiver(t, SecretOld)
	down.Status.Store(http.StatusBadGateway)
	keys, err := ParseSecrets(SecretOld)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// A job.failed event's data as the outbox holds it (docs/operations.md).
	data := []byte(`{"id": "e", "type": "job.failed", "job_id": "6f1c1c3e-2a7b-4c55-9d0e-8a1f3b2c4d5e", "status": "error",
		"error": "The video is 23 minutes long; the limit is 20 minutes.", "sop_path": null,
		"created_at": "2026-12-06T21:02:41Z", "completed_at": "2026-12-06T21:02:44Z", "timings": {}}`)
	m := &memStore{}
	d := &Deliverer{Store: m, Keys: keys, Client: &http.Client{}, Logger: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}

	m.due = []Delivery{{EventID: "e", URL: down.URL, Type: "job.failed", Data: data, Tries: 3, Created: now.Add(-23 * time.Hour)}}
	if _, err := d.Once(context.Background()); err != nil || m.retried != 1 || m.given != 0 {
		t.Fatalf("a day not over: retried %d, given up %d, %v", m.retried, m.given, err)
	}
	if wait := m.next.Sub(now); wait < 3200*time.Millisecond || wait > 4800*time.Millisecond {
		t.Fatalf("retry after %s; want about 4 s after 3 tries", wait)
	}
	m.due = []Delivery{{EventID: "e", URL: down.URL, Type: "job.failed", Data: data, Tries: 20, Created: now.Add(-24 * time.Hour)}}
	if _, err := d.Once(context.Background()); err != nil || m.given != 1 || m.retried != 1 {
		t.Fatalf("a day over: retried %d, given up %d, %v", m.retried, m.given, err)
	}
	if got := down.Verified(); len(got) != 2 || got[0].ID != "e" || got[1].ID != "e" {
		t.Fatalf("the receiver verified %d tries of event e: %+v", len(got), got)
	}
}
