package auth

import (
	"sync"
	"time"
)

// kept is what a verifier reuses of its checks: answers by key, each until
// its own time, at most max of them (under a flood of distinct tokens the
// expired go first, then any). Safe for concurrent use.
type kept[K comparable, V any] struct {
	max int

	mu sync.Mutex
	m  map[K]keptAnswer[V]
}

type keptAnswer[V any] struct {
	v     V
	until time.Time
}

// get returns the answer kept for k, if it still holds at now.
func (c *kept[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	a, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(a.until) {
		var zero V
		return zero, false
	}
	return a.v, true
}

// put keeps v for k until until.
func (c *kept[K, V]) put(k K, v V, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[K]keptAnswer[V]{}
	}
	if len(c.m) >= c.max {
		for old, a := range c.m {
			if !now.Before(a.until) {
				delete(c.m, old)
			}
		}
		for old := range c.m {
			if len(c.m) < c.max {
				break
			}
			delete(c.m, old)
		}
	}
	c.m[k] = keptAnswer[V]{v, until}
}
