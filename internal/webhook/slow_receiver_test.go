package webhook_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/webhook"
)

// silentReceiver is a receiver that never answers (until the test ends, or
// its client gives up). Each request it gets is told on arrived, which
// holds up to 100 unread.
func silentReceiver(t *testing.T) (silent *httptest.Server, arrived <-chan struct{}) {
	hang, got := make(chan struct{}), make(chan struct{}, 100)
	silent = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(func() { close(hang); silent.Close() })
	return silent, got
}

// One receiver that never answers (a firewall dropping packets, a hung
// process) must not hold up the events of the receivers that answer at once:
// their events are due, and answered in milliseconds.
func TestAHangingReceiverDoesNotHoldUpTheOthers(t *testing.T) {
	pool, exec, _ := database(t)
	silent, _ := silentReceiver(t)
	healthy := webhook.NewReceiver(t, webhook.SecretOld)
	q := postgres.NewQueueStore(pool).SendEvents([]string{silent.URL, healthy.URL})
	const n = 20
	for range n {
		finish(t, q, exec, false)
	}
	d := deliverer(t, postgres.NewJobStore(pool), webhook.SecretOld)
	// The production settings scaled down 20 times: a 10 s client timeout
	// and a minute's hold become 500 ms and 3 s.
	d.Client = &http.Client{Timeout: 500 * time.Millisecond}
	d.Hold = 3 * time.Second
	for range 3 {
		if _, err := d.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(healthy.Verified()); got != n {
		t.Fatalf("after 3 rounds the healthy receiver got %d of its %d due events: each try at the hanging one costs the whole client timeout, one after another", got, n)
	}
}
