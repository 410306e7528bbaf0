// Package webhook delivers the completion events the worker records (an
// outbox table written in the same transaction that finishes a job) to the
// URLs in RUNOPS_WEBHOOK_URLS: each event at least once, under a stable id,
// signed with RUNOPS_WEBHOOK_SECRET as Standard Webhooks
// (https://www.standardwebhooks.com) sign them; retried after about a
// second, doubling with jitter up to an hour, given up 24 hours after the
// event. Safe with many worker processes: each delivery's try is taken by
// one of them.
package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/metrics"
)

// Delivery is one event to send to one URL.
type Delivery struct {
	EventID string // the webhook-id: the same on every try, and at every URL
	URL     string
	Type    string // job.completed or job.failed
	Data    []byte // the event's fields, a JSON object: the body's "data"
	Tries   int    // including this one (the stored attempts)
	Created time.Time
}

// Body is what is sent for d, the same bytes on every try:
// {"type": d.Type, "timestamp": d.Created in RFC 3339, "data": d.Data},
// with data as the document describes it (dataAsDescribed).
func (d Delivery) Body() ([]byte, error) {
	return json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{d.Type, d.Created.UTC().Format(time.RFC3339Nano), dataAsDescribed(d.Data)})
}

// The times an event can say (RFC 3339 has four-digit years), as the API's
// answers clamp a time a person wrote by hand.
var (
	earliest = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339Nano)
	latest   = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC).Format(time.RFC3339Nano)
)

// dataAsDescribed is an event's data as the OpenAPI document's
// JobEventData describes it, whatever a person wrote into the job before
// it ended: a time PostgreSQL printed beyond RFC 3339 ("infinity", a year
// past 9999, a date BC) as the nearest one it can say, and timings that are
// not an object of whole numbers without what is not. Data that needs
// nothing is sent as it was recorded.
func dataAsDescribed(data json.RawMessage) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return data
	}
	changed := false
	for _, k := range []string{"created_at", "completed_at"} {
		var v *string
		if json.Unmarshal(fields[k], &v) != nil || v == nil {
			continue // null (a failed job never completed), or absent
		}
		if _, err := time.Parse(time.RFC3339Nano, *v); err == nil {
			continue
		}
		at := latest
		if strings.HasPrefix(*v, "-") || strings.HasSuffix(*v, " BC") {
			at = earliest
		}
		fields[k], _ = json.Marshal(at)
		changed = true
	}
	var timings map[string]any
	if raw, ok := fields["timings"]; ok && (json.Unmarshal(raw, &timings) != nil || timings == nil) {
		timings, changed = map[string]any{}, true // not an object, or null
	}
	for k, v := range timings {
		if f, ok := v.(float64); !ok || f != math.Trunc(f) {
			delete(timings, k)
			changed = true
		}
	}
	if !changed {
		return data
	}
	if timings != nil {
		fields["timings"], _ = json.Marshal(timings)
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return data
	}
	return out
}

// Store is what delivering needs of the outbox.
type Store interface {
	// Due takes up to n deliveries of each receiver of urls (nil: every
	// one) whose time has come, oldest first, holding them from other
	// deliverers for hold (a try each).
	Due(ctx context.Context, urls []string, n int, hold time.Duration) ([]Delivery, error)
	// Abandon gives up the pending deliveries to any URL not in urls,
	// recorded more than olderThan ago, with why, and says how many.
	Abandon(ctx context.Context, urls []string, olderThan time.Duration, why string) (int, error)
	// Delivered records a success; Retry the next try at next, with why it
	// failed; GiveUp the end of trying.
	Delivered(ctx context.Context, d Delivery) error
	Retry(ctx context.Context, d Delivery, next time.Time, why string) error
	GiveUp(ctx context.Context, d Delivery, why string) error
	// Return returns deliveries untried: due at once, the try that
	// Due counted taken back.
	Return(ctx context.Context, ds []Delivery) error
}

// Deliverer sends due events.
type Deliverer struct {
	Store Store
	// URLs are the receivers configured (RUNOPS_WEBHOOK_URLS): only theirs
	// are sent (a URL removed: a receiver retired, or one whose token
	// leaked, gets nothing more). Run gives up, as it starts and every hour,
	// the pending events of any other that are past the day a delivery is
	// tried for: a worker of an older list, started during a rollout, leaves
	// a new receiver's events to the workers that send them. Nil sends to
	// every URL the outbox holds.
	URLs []string
	// Keys sign every try, each its own webhook-signature entry: one
	// key, or several while a secret is rotated (ParseSecrets).
	Keys   [][]byte
	Client *http.Client // its timeout bounds one try; redirects are never followed
	Every  time.Duration
	// Hold is how long the deliveries of one round are kept from other
	// deliverers (default a minute): the round ends well inside it, however
	// slow the receivers, so that no other worker sends them meanwhile.
	Hold   time.Duration
	Logger *slog.Logger
	now    func() time.Time
}

// msgUnlisted is the last_error of an event given up because its receiver
// is no longer configured.
const msgUnlisted = "its URL is no longer in RUNOPS_WEBHOOK_URLS"

// Tuning fixed by the contract with receivers.
const (
	firstRetry = time.Second
	maxWait    = time.Hour
	giveUpAt   = 24 * time.Hour
	holdFor    = time.Minute
	perRound   = 20
	// A round stops starting tries, and cuts the one under way, at this
	// share of the hold: what is left is for recording the outcomes.
	roundShare = 0.75
	// What a round records once the process stops: its outcomes so far,
	// and the deliveries it gives back.
	recordFor = 5 * time.Second
)

// Secret sizes, in bytes once decoded, as Standard Webhooks asks them.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
	secretPrefix   = "whsec_"
)

// ParseSecrets reads RUNOPS_WEBHOOK_SECRET: one or more values
// whsec_<base64 of 24 to 64 bytes>, space-separated, and returns their
// decoded bytes (the signing keys). Its errors never repeat the value.
func ParseSecrets(s string) ([][]byte, error) {
	values := strings.Fields(s)
	if len(values) == 0 {
		return nil, errors.New("is empty")
	}
	keys := make([][]byte, 0, len(values))
	for i, v := range values {
		which := "it"
		if len(values) > 1 {
			which = fmt.Sprintf("value %d of %d", i+1, len(values))
		}
		b64, ok := strings.CutPrefix(v, secretPrefix)
		if !ok {
			return nil, fmt.Errorf("is not in the whsec_<base64> form: %s does not start with whsec_", which)
		}
		key, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("is not in the whsec_<base64> form: what follows whsec_ in %s is not standard base64", which)
		}
		if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
			return nil, fmt.Errorf("is not in the whsec_<base64> form: %s decodes to %d bytes, not %d to %d", which, len(key), MinSecretBytes, MaxSecretBytes)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// Sign is the webhook-signature header of the event id with body, sent at
// t: for each key, "v1,<base64 HMAC-SHA256(key, "<id>.<unix t>.<body>")>",
// space-separated.
func Sign(keys [][]byte, id string, t time.Time, body []byte) string {
	signed := id + "." + strconv.FormatInt(t.Unix(), 10) + "."
	sigs := make([]string, len(keys))
	for i, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(signed))
		mac.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// Backoff is the wait before try n+1 after n failed tries: a second first,
// doubling up to an hour, each wait ±20 % (at most 72 minutes).
func Backoff(n int) time.Duration {
	return retries.Wait(n)
}

var retries = backoff.Policy{First: firstRetry, Max: maxWait, Jitter: 0.2}

// Once sends what is due now and returns how many it sent successfully.
// Each receiver's deliveries go in order, and receivers at once: one that
// hangs costs the others nothing. A receiver that fails one delivery is
// not tried again this round: its others go back untried, for the next. The
// round ends inside the hold its deliveries were taken under: each try
// is cut at the round's deadline, and the deliveries not tried by then are
// returned as they were (not counted as tries).
func (d *Deliverer) Once(ctx context.Context) (int, error) {
	heldFor := cmp.Or(d.Hold, holdFor)
	start := time.Now()
	due, err := d.Store.Due(ctx, d.URLs, perRound, heldFor)
	if err != nil {
		return 0, err
	}
	roundCtx, cancel := context.WithDeadline(ctx, start.Add(time.Duration(float64(heldFor)*roundShare)))
	defer cancel()
	byURL := map[string][]Delivery{}
	for _, del := range due {
		byURL[del.URL] = append(byURL[del.URL], del)
	}
	var (
		wg   sync.WaitGroup
		sent atomic.Int64
		mu   sync.Mutex
		errs []error
	)
	for _, dels := range byURL {
		slices.SortStableFunc(dels, func(a, b Delivery) int { return a.Created.Compare(b.Created) })
		wg.Go(func() {
			n, err := d.deliver(ctx, roundCtx, dels)
			sent.Add(int64(n))
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	return int(sent.Load()), errors.Join(errs...)
}

// deliver sends one receiver's deliveries in order until one fails or the
// round's time is up; the rest go back untried. It returns how many it sent.
func (d *Deliverer) deliver(ctx, roundCtx context.Context, dels []Delivery) (int, error) {
	stopping := ctx
	now := time.Now
	if d.now != nil {
		now = d.now
	}
	ctx, cancel := outliving(ctx, recordFor)
	defer cancel()
	sent := 0
	for i, del := range dels {
		if roundCtx.Err() != nil {
			return sent, d.Store.Return(ctx, dels[i:]) // out of time, or stopped
		}
		why := d.send(roundCtx, del, now())
		if why != "" && stopping.Err() != nil {
			return sent, d.Store.Return(ctx, dels[i:]) // cut by the shutdown: not a try
		}
		var err error
		switch {
		case why == "":
			sent++
			metrics.WebhookDeliveries.WithLabelValues("delivered").Inc()
			err = d.Store.Delivered(ctx, del)
		case now().Sub(del.Created) >= giveUpAt:
			// The log lines' key is the stored column's, "attempts", as log
			// readers know it; it counts this delivery's tries.
			metrics.WebhookDeliveries.WithLabelValues("given_up").Inc()
			d.Logger.Error("webhook: giving up on an event", "event_id", del.EventID, "url", ShownURL(del.URL), "attempts", del.Tries, "error", why)
			err = d.Store.GiveUp(ctx, del, why)
		default:
			metrics.WebhookDeliveries.WithLabelValues("failed").Inc()
			d.Logger.Warn("webhook: delivery failed; trying again", "event_id", del.EventID, "url", ShownURL(del.URL), "attempts", del.Tries, "error", why)
			err = d.Store.Retry(ctx, del, now().Add(Backoff(del.Tries)), why)
		}
		if err != nil {
			return sent, errors.Join(err, d.Store.Return(ctx, dels[i+1:]))
		}
		if why != "" && i+1 < len(dels) {
			return sent, d.Store.Return(ctx, dels[i+1:]) // the receiver failed: the rest wait for the next round
		}
	}
	return sent, nil
}

// outliving is ctx, but ending d after ctx does. What a round writes
// outlives a shutdown for that moment: a delivery sent is recorded, and
// the rest are given back for another deliverer at once, not held until
// the hold ends.
func outliving(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(d, cancel) })
	return out, func() { stop(); cancel() }
}

// noRedirects makes a client answer a 3xx as it is: a followed redirect
// would turn the signed POST into a body-less GET (whose 2xx would count as
// delivered) or carry the signed request elsewhere.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// send POSTs one delivery; "" on a 2xx answer, else why not.
func (d *Deliverer) send(ctx context.Context, del Delivery, at time.Time) string {
	body, err := del.Body()
	if err != nil {
		return err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, del.URL, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "runops-webhook/1")
	req.Header.Set("webhook-id", del.EventID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", Sign(d.Keys, del.EventID, at, body))
	client := *d.Client
	client.CheckRedirect = noRedirects
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = ShownURL(del.URL) // the error is logged and stored
		}
		return err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// A 3xx too: retried like a 5xx, never followed.
		return fmt.Sprintf("answered %d", resp.StatusCode)
	}
	return ""
}

// ShownURL is a receiver's URL as logs, stored errors and the CLI show it:
// its scheme and host alone, "/…" for a path and "?…" for a query, where
// tokens ride (Slack's and Discord's webhook URLs, Telegram's bot URLs carry
// theirs in the path), and no user or password.
func ShownURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(a URL that does not parse)"
	}
	s := (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	if strings.Trim(u.Path, "/") != "" {
		s += "/…"
	}
	if u.RawQuery != "" {
		s += "?…"
	}
	return s
}

// Run delivers every Every until ctx is done, giving up, as it starts and
// every hour, the day-old events of receivers not among URLs.
func (d *Deliverer) Run(ctx context.Context) {
	var abandoned time.Time
	for {
		if d.URLs != nil && time.Since(abandoned) >= time.Hour {
			abandoned = time.Now()
			n, err := d.Store.Abandon(ctx, d.URLs, giveUpAt, msgUnlisted)
			switch {
			case err != nil && ctx.Err() == nil:
				d.Logger.Warn("webhook: could not give up the events of receivers no longer configured", "error", err)
			case n > 0:
				d.Logger.Warn("webhook: gave up the day-old events of receivers not in RUNOPS_WEBHOOK_URLS", "events", n)
			}
		}
		if backoff.Sleep(ctx, d.Every) != nil {
			return
		}
		if _, err := d.Once(ctx); err != nil && ctx.Err() == nil {
			d.Logger.Warn("webhook: delivery round failed", "error", err)
		}
	}
}
