package auth

import (
	"testing"
	"time"
)

// A full cache drops its expired answers before any that still holds, and
// keeps no more than its bound.
func TestKeptDropsTheExpiredFirst(t *testing.T) {
	now := time.Now()
	c := kept[int, int]{max: 4}
	c.put(1, 1, now.Add(time.Hour), now)
	c.put(2, 2, now.Add(time.Second), now)
	c.put(3, 3, now.Add(time.Second), now)
	c.put(4, 4, now.Add(time.Second), now)
	later := now.Add(time.Minute) // 2, 3 and 4 have expired
	c.put(5, 5, later.Add(time.Hour), later)
	if v, ok := c.get(1, later); !ok || v != 1 {
		t.Fatalf("an answer that still holds was dropped for expired ones: %v %v", v, ok)
	}
	if _, ok := c.get(2, later); ok {
		t.Fatal("an expired answer was served")
	}
	for i := 6; i < 20; i++ {
		c.put(i, i, later.Add(time.Hour), later)
	}
	if len(c.m) > 4 {
		t.Fatalf("%d answers kept; the bound is 4", len(c.m))
	}
}
