package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
)

// maxTries bounds the tries of one step (docs/lifecycle.md: at most 5 tries and
// MaxRetryWait of waiting, the lease renewed meanwhile by the engine).
const maxTries = 5

// RetryAfter is implemented by errors whose server said how long to wait.
type RetryAfter interface{ RetryAfter() time.Duration }

// quotaError is implemented by errors that mean "over quota" (HTTP 429).
type quotaError interface{ QuotaExhausted() bool }

const (
	msgStorageDown = "File storage could not be reached for too long; please try again in a few minutes."
	msgStorageKey  = "File storage refused our credentials; the operators have been told. Please try again later."
)

// errExhausted marks a job that ended because a service stayed unavailable:
// the failure is the job's, not the input's (a Gemini file is kept for a rerun).
var errExhausted = errors.New("transient failures outlasted the retries")

// retry runs step until it succeeds, fails permanently, or the tries or the
// waiting budget run out; then the job ends with giveUp (or, when the server
// kept saying it is over quota, msgQuota). Only errors wrapping
// jobs.ErrUnavailable are retried; a wait the server asked for is honoured.
func (p *Pipeline) retry(ctx context.Context, giveUp string, step func() error) error {
	var waited time.Duration
	for try := 1; ; try++ {
		err := step()
		if errors.Is(err, jobs.ErrRefusedKey) {
			p.cfg.Logger.ErrorContext(ctx, "Supabase Storage refused SUPABASE_SERVICE_ROLE_KEY: set the project's service role key", "error", err)
			return jobs.Fail(msgStorageKey, err)
		}
		if err == nil || !errors.Is(err, jobs.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		wait := time.Duration(1<<(try-1)) * time.Second // 1, 2, 4, 8 s
		var ra RetryAfter
		if errors.As(err, &ra) && ra.RetryAfter() > 0 {
			wait = ra.RetryAfter()
		}
		if try == maxTries || waited+wait > p.cfg.MaxRetryWait {
			var q quotaError
			if errors.As(err, &q) && q.QuotaExhausted() {
				giveUp = msgQuota
			}
			return jobs.Fail(giveUp, fmt.Errorf("%w: gave up after %d tries: %w", errExhausted, try, err))
		}
		metrics.Retries.WithLabelValues(stepOf(giveUp)).Inc()
		p.cfg.Logger.WarnContext(ctx, "transient failure; trying again", "try", try, "wait", wait, "error", err)
		if err := p.cfg.Sleep(ctx, wait); err != nil {
			return err
		}
		waited += wait
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// stepOf names, for runops_retries_total, the service a step waits for.
func stepOf(giveUp string) string {
	if giveUp == msgStorageDown {
		return "storage"
	}
	return "gemini"
}
