package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/wait"
)

// statusAfter answers a status read after a delay (the database under
// load), or fails it first a number of times (a moment's outage).
type statusAfter struct {
	Store
	delay time.Duration
	fails int
	reads int
}

func (s *statusAfter) Status(ctx context.Context, id jobs.ID) (jobs.Status, bool, error) {
	s.reads++
	if s.reads <= s.fails {
		return "", false, errors.New("connection reset by peer")
	}
	select {
	case <-time.After(s.delay):
		return jobs.StatusQueued, true, nil // a person re-queued it
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
}

// Why a run lost its job is read within 5 s, however that time is spent: a
// slow read still answers, failed reads are tried again, and a database
// that never answers makes it lost.
func TestReadLossCause(t *testing.T) {
	t.Parallel()
	const id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	for _, c := range []struct {
		name string
		s    *statusAfter
		want error
	}{
		{"a slow read", &statusAfter{delay: 2500 * time.Millisecond}, ErrCancelled},
		{"two failed reads", &statusAfter{fails: 2}, ErrCancelled},
		{"three failed reads", &statusAfter{fails: 3}, ErrLost},
		{"no answer", &statusAfter{delay: time.Hour}, ErrLost},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			answer := make(chan error, 1)
			go func() { answer <- readLossCause(c.s, id) }()
			if got := wait.Recv(t, answer, "the cause, read within its 5 s"); got != c.want {
				t.Errorf("%v; want %v", got, c.want)
			}
		})
	}
}
