package webhook

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/runops/runops/internal/api/apitest"
)

// The webhook tests' receivers (this file is shared by this package's tests
// and package webhook_test's): every request any of them gets is verified
// with the reference Standard Webhooks library, as a receiver would.

// The tests' secrets, made as docs/operations.md says:
// echo whsec_$(openssl rand -base64 32).
const (
	SecretOld   = "whsec_Dn/4azeLajvmbbOiXpCwXowRhY8imR8mP4CDd5Z+BEA="
	SecretNew   = "whsec_QrLIp9s/4vMQrMVe758REXrj78W3Lv0V27uRT0uboMs="
	SecretOther = "whsec_UGDPiMqMZylC4QXq4VYgVw2aFD5rl4sR35KOC1sU4yg=" // never given to a deliverer
)

// Received is one request a Receiver got.
type Received struct {
	ID, Timestamp, Signature string // the webhook-* headers
	Body                     []byte
	Event                    map[string]any // the body, parsed
	Err                      error          // why the library refused it; nil if it verified
}

// Data is the event's "data" object.
func (r Received) Data() map[string]any {
	d, _ := r.Event["data"].(map[string]any)
	return d
}

// Receiver is a real local endpoint holding one secret. A request that
// does not verify is answered 401 and fails the test, unless the test said
// it expects refusals (ExpectRefusals). Down makes it drop connections
// (after verifying); Fail makes its next answers 500s; Status, if set, is
// its answer to a verified request (default 204).
type Receiver struct {
	URL    string
	Down   atomic.Bool
	Fail   atomic.Int32
	Status atomic.Int32

	t       *testing.T
	wh      *standardwebhooks.Webhook
	refuses atomic.Bool
	mu      sync.Mutex
	got     []Received
}

// NewReceiver starts a receiver that verifies with secret (whsec_…).
func NewReceiver(t *testing.T, secret string) *Receiver {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{t: t, wh: wh}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

// ExpectRefusals lets requests that do not verify be answered 401 without
// failing the test (which then checks Received's Err).
func (r *Receiver) ExpectRefusals() { r.refuses.Store(true) }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		r.t.Errorf("webhook body: %v", err)
		return
	}
	got := Received{ID: req.Header.Get("webhook-id"), Timestamp: req.Header.Get("webhook-timestamp"),
		Signature: req.Header.Get("webhook-signature"), Body: body}
	got.Err = r.wh.Verify(body, req.Header)
	if got.Err != nil && !r.refuses.Load() {
		r.t.Errorf("a delivery did not verify with the Standard Webhooks library: %v\nheaders %v\nbody %s", got.Err, req.Header, body)
	}
	if got.Err == nil {
		// Signed as Standard Webhooks say, and shaped as they recommend.
		if err := json.Unmarshal(body, &got.Event); err != nil {
			r.t.Errorf("body %s: %v", body, err)
		}
		ts, _ := got.Event["timestamp"].(string)
		if _, err := time.Parse(time.RFC3339, ts); err != nil || got.Data() == nil ||
			(got.Event["type"] != "job.completed" && got.Event["type"] != "job.failed") || len(got.Event) != 3 {
			r.t.Errorf("body %s is not {type, timestamp, data}", body)
		}
		if req.Header.Get("Content-Type") != "application/json" {
			r.t.Errorf("content type %q", req.Header.Get("Content-Type"))
		}
		// As the OpenAPI document's webhooks section describes it.
		if err := apitest.CheckWebhook(req, body); err != nil {
			r.t.Errorf("a delivery the OpenAPI document does not describe: %v\nbody %s", err, body)
		}
	}
	r.mu.Lock()
	r.got = append(r.got, got)
	r.mu.Unlock()
	switch {
	case got.Err != nil:
		w.WriteHeader(http.StatusUnauthorized)
	case r.Down.Load():
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		r.t.Error("cannot drop the connection")
	case r.Fail.Add(-1) >= 0:
		w.WriteHeader(http.StatusInternalServerError)
	case r.Status.Load() != 0:
		w.WriteHeader(int(r.Status.Load()))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// Received returns what it got so far.
func (r *Receiver) Received() []Received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Received(nil), r.got...)
}

// Verified returns what it got that verified.
func (r *Receiver) Verified() []Received {
	var out []Received
	for _, g := range r.Received() {
		if g.Err == nil {
			out = append(out, g)
		}
	}
	return out
}

// Refused returns the errors of what it got that did not verify.
func (r *Receiver) Refused() []error {
	var out []error
	for _, g := range r.Received() {
		if g.Err != nil {
			out = append(out, g.Err)
		}
	}
	return out
}

// RefusedAll reports whether it got something and refused all of it, each
// with target (errors.Is).
func (r *Receiver) RefusedAll(target error) bool {
	got := r.Received()
	for _, g := range got {
		if !errors.Is(g.Err, target) {
			return false
		}
	}
	return len(got) > 0
}

// SetClock makes d sign (and decide giving up) by now instead of the time.
func (d *Deliverer) SetClock(now func() time.Time) { d.now = now }
