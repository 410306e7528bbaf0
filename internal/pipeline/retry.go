package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// maxTries bounds the tries of one step (docs/lifecycle.md: at most 5 tries
// and the service's budget of waiting, the lease renewed meanwhile by the
// engine).
const maxTries = 5

// transientWaits are the waits between tries, doubling from one second
// with no jitter: 1, 2, 4, 8 s, unless the service said how long to wait
// (Gemini's RetryInfo.retryDelay: RetryDelay); maxTries tries at most, and
// each service's budget (service.budget) for the waits.
var transientWaits = backoff.Policy{First: time.Second, Jitter: 0, Tries: maxTries}

// RetryDelay is implemented by errors whose server said how long to wait
// (Gemini's RetryInfo.retryDelay).
type RetryDelay interface{ RetryDelay() time.Duration }

// quotaError is implemented by errors that mean "over quota" (HTTP 429).
type quotaError interface{ QuotaExhausted() bool }

// errExhausted marks a job that ended because a service stayed unavailable:
// the failure is the job's, not the input's (a Gemini file is kept for a rerun).
var errExhausted = errors.New("transient failures outlasted the retries")

// service is what a retried step waits for: its name in
// runops_retries_total, how long its tries may wait in all, the job's
// sentence when the retries run out, and when it refuses our key (with the
// operator's log line).
type service struct {
	name         string
	giveUp       string
	budget       func(*Pipeline) time.Duration
	refusedKey   string
	refusedKeyOp string
}

// The waiting a step's tries may spend in all (docs/lifecycle.md): a
// Gemini step's is GEMINI_MAX_RETRY_WAIT, by default DefaultMaxRetryWait; a
// storage step's, storageRetryBudget.
const (
	DefaultMaxRetryWait = 2 * time.Minute
	storageRetryBudget  = 2 * time.Minute
)

var (
	storageService = service{name: "storage", giveUp: msgStorageDown,
		budget:     func(*Pipeline) time.Duration { return storageRetryBudget },
		refusedKey: msgStorageKey, refusedKeyOp: "Supabase Storage refused SUPABASE_SERVICE_ROLE_KEY: set the project's service role key"}
	geminiService = service{name: "gemini", giveUp: msgAIDown,
		budget:     func(p *Pipeline) time.Duration { return p.cfg.MaxRetryWait }, // GEMINI_MAX_RETRY_WAIT
		refusedKey: msgBadKey, refusedKeyOp: "Gemini refused GEMINI_API_KEY"}
)

// retry runs step until it succeeds, fails permanently, or the tries or the
// service's waiting budget run out; then the job ends with the service's
// sentence (or, when the server kept saying it is over quota, msgQuota).
// Only errors wrapping jobs.ErrUnavailable are retried; a wait the server
// asked for is honoured.
func (p *Pipeline) retry(ctx context.Context, via service, step func() error) error {
	tries := backoff.Backoff{Policy: transientWaits}
	tries.Budget = via.budget(p)
	for {
		err := step()
		if errors.Is(err, jobs.ErrRefusedKey) {
			p.cfg.Logger.ErrorContext(ctx, via.refusedKeyOp, "error", err)
			return jobs.Fail(via.refusedKey, err)
		}
		if err == nil || !errors.Is(err, jobs.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		var asked time.Duration
		var rd RetryDelay
		if errors.As(err, &rd) {
			asked = rd.RetryDelay()
		}
		wait, again := tries.NextAsked(asked)
		if !again {
			giveUp := via.giveUp
			var q quotaError
			if errors.As(err, &q) && q.QuotaExhausted() {
				giveUp = msgQuota
			}
			return jobs.Fail(giveUp, fmt.Errorf("%w: gave up after %d tries: %w", errExhausted, tries.Failed(), err))
		}
		metrics.Retries.WithLabelValues(via.name).Inc()
		p.cfg.Logger.WarnContext(ctx, "transient failure; trying again", "service", via.name, "try", tries.Failed(), "wait", wait, "error", err)
		if err := p.cfg.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}
