package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/runops/runops/internal/jobs"
)

// Error is an answer for the client: a status and a sentence. Cause is for the
// log only and never sent.
type Error struct {
	Status  int
	Message string
	Cause   error
	// RetryAfter, in seconds, is sent as Retry-After when positive.
	RetryAfter int
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// unavailable is the answer when a backing service is down: the client
// should retry, and the next call works once it is back.
func unavailable(what string, cause error) *Error {
	if errors.Is(cause, jobs.ErrNoConnections) {
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: 10, Cause: cause,
			Message: "The service is at its database connection limit right now; please try again in a few seconds."}
	}
	return &Error{Status: http.StatusServiceUnavailable, RetryAfter: 5, Cause: cause,
		Message: what + " is temporarily unavailable; please try again in a moment."}
}

// fromBackend maps an error of a backing service: an outage → 503, anything
// else → 500 with the given sentence.
func fromBackend(what string, err error, otherwise string) *Error {
	switch {
	case errors.Is(err, jobs.ErrRefusedKey):
		// Ours to fix, not the caller's, and not temporary: a 500 that the
		// log explains (never a 503 the frontend would poll on for ever).
		return &Error{Status: http.StatusInternalServerError, Message: otherwise,
			Cause: fmt.Errorf("%s refused SUPABASE_SERVICE_ROLE_KEY (check the key): %w", what, err)}
	case errors.Is(err, jobs.ErrUnavailable):
		return unavailable(what, err)
	}
	return &Error{Status: http.StatusInternalServerError, Message: otherwise, Cause: err}
}

// handle adapts a handler that returns an error; every error answer of the
// API is written here, as {"error": "..."}.
func (s *server) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Message: "Internal server error", Cause: err}
	}
	level := slog.LevelInfo
	if e.Status >= 500 {
		level = slog.LevelError
	}
	if e.Cause != nil || e.Status >= 500 {
		s.log.Log(r.Context(), level, "request failed", "request_id", requestOf(r).id,
			"method", r.Method, "path", r.URL.Path, "status", e.Status, "error", err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, map[string]string{"error": e.Message})
}

// Header values the API sends on most answers, made once: Header.Set
// allocates its value's slice at every call. Set as a whole, never changed
// in place (Header.Add copies a full slice before it appends; the server
// copies the header when it writes it).
var (
	jsonType     = []string{"application/json; charset=utf-8"}
	noStoreValue = []string{"no-store"}
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
