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

// AgeJWKS makes the JWKS l holds d older.
func (l *Local) AgeJWKS(d time.Duration) {
	l.jwks.mu.Lock()
	defer l.jwks.mu.Unlock()
	if l.jwks.cur != nil {
		l.jwks.cur = &fetchedKeys{keys: l.jwks.cur.keys, at: l.jwks.cur.at.Add(-d)}
	}
}
