// Package logtest collects, in tests, what loggers write from many
// goroutines. For tests only.
package logtest

import (
	"strings"
	"sync"
)

// Logs is an io.Writer that keeps everything written to it.
type Logs struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
