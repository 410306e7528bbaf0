package auth

import "time"

// SetClock makes l read the time from now.
func (l *Local) SetClock(now func() time.Time) { l.now = now }

// Kept is how many tokens l keeps.
func (l *Local) Kept() int {
	l.checked.mu.Lock()
	defer l.checked.mu.Unlock()
	return len(l.checked.m)
}
