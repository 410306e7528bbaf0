package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/runops/runops/internal/jobs"
)

// editWait bounds how long an SOP edit waits for the edits of the same SOP
// before it in this process.
var editWait = 5 * time.Second

var errSOPBusy = &Error{Status: http.StatusServiceUnavailable, RetryAfter: 1,
	Message: "The SOP is being changed right now; please try again in a moment."}

// editLocks serialises SOP edits per job inside the process, before they take
// a database connection: forty concurrent edits of one SOP then hold one
// connection between them (waiting on the cross-process SOP lock), not forty.
type editLocks struct {
	mu   sync.Mutex
	held map[jobs.ID]*editLock
}

type editLock struct {
	turn chan struct{} // holds a value while someone edits
	refs int           // holders and waiters; the entry goes when none is left
}

// lock waits for id's turn (at most editWait, or until ctx ends) and returns
// the function that ends it; errSOPBusy when the wait ran out.
func (l *editLocks) lock(ctx context.Context, id jobs.ID) (unlock func(), err error) {
	l.mu.Lock()
	if l.held == nil {
		l.held = map[jobs.ID]*editLock{}
	}
	e := l.held[id]
	if e == nil {
		e = &editLock{turn: make(chan struct{}, 1)}
		l.held[id] = e
	}
	e.refs++
	l.mu.Unlock()

	timer := time.NewTimer(editWait)
	defer timer.Stop()
	select {
	case e.turn <- struct{}{}:
		return func() { <-e.turn; l.release(id, e) }, nil
	case <-timer.C:
		err = errSOPBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.release(id, e)
	return nil, err
}

func (l *editLocks) release(id jobs.ID, e *editLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(l.held, id)
	}
}
