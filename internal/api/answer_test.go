package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// answer records what the log line and metrics say of an answer: the
// first status (200 when the body comes first), and the bytes of the body
// however they were written.
func TestAnswerCountsStatusAndBytes(t *testing.T) {
	for _, c := range []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		bytes  int
	}{
		{"nothing written", func(http.ResponseWriter) {}, 0, 0},
		{"a body alone", func(w http.ResponseWriter) { _, _ = w.Write([]byte("hello")) }, 200, 5},
		{"a status, then another", func(w http.ResponseWriter) { w.WriteHeader(404); w.WriteHeader(500) }, 404, 0},
		{"flushed", func(w http.ResponseWriter) { http.NewResponseController(w).Flush() }, 200, 0},
	} {
		rec := httptest.NewRecorder()
		a := &answer{ResponseWriter: rec}
		c.write(a)
		if a.status != c.status || a.bytes != c.bytes {
			t.Errorf("%s: status %d, %d bytes; want %d, %d", c.name, a.status, a.bytes, c.status, c.bytes)
		}
		if c.status != 0 && rec.Code != c.status {
			t.Errorf("%s: the server's writer got %d", c.name, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	a := &answer{ResponseWriter: rec}
	if n, err := a.ReadFrom(strings.NewReader("copied body")); n != 11 || err != nil || a.bytes != 11 || a.status != 200 || rec.Body.String() != "copied body" {
		t.Errorf("ReadFrom: %d, %v; counted %d bytes, status %d; body %q", n, err, a.bytes, a.status, rec.Body)
	}
}

// A request id made here: the process's prefix, then the count in at
// least six digits, one allocation.
func TestNewRequestID(t *testing.T) {
	id := newRequestID()
	count := strings.TrimPrefix(id, requestIDs.prefix)
	if !strings.HasPrefix(id, requestIDs.prefix) || len(count) < 6 || strings.Trim(count, "0123456789") != "" {
		t.Fatalf("request id %q (prefix %q)", id, requestIDs.prefix)
	}
	if n := testing.AllocsPerRun(100, func() { _ = newRequestID() }); n > 1 {
		t.Errorf("%v allocations an id", n)
	}
}
