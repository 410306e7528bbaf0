package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/runops/runops/internal/jobs"
)

// maxTries bounds the tries of one step (DESIGN.md: at most 5 tries and
// MaxRetryWait of waiting, the lease renewed meanwhile by the engine).
const maxTries = 5

// RetryAfter is implemented by errors whose server said how long to wait.
type RetryAfter interface{ RetryAfter() time.Duration }

const msgStorageDown = "File storage could not be reached for too long; please try again in a few minutes."

// retry runs step until it succeeds, fails permanently, or the tries or the
// waiting budget run out. Only errors wrapping jobs.ErrUnavailable are retried.
func (p *Pipeline) retry(ctx context.Context, step func() error) error {
	var waited time.Duration
	for try := 1; ; try++ {
		err := step()
		if err == nil || !errors.Is(err, jobs.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		wait := time.Duration(1<<(try-1)) * time.Second // 1, 2, 4, 8 s
		var ra RetryAfter
		if errors.As(err, &ra) && ra.RetryAfter() > 0 {
			wait = ra.RetryAfter()
		}
		if try == maxTries || waited+wait > p.cfg.MaxRetryWait {
			return jobs.Fail(msgStorageDown, fmt.Errorf("gave up after %d tries: %w", try, err))
		}
		p.cfg.Logger.Warn("transient failure; trying again", "try", try, "wait", wait, "error", err)
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
