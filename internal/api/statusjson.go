package api

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// job-status is the API's most frequent answer (every open viewer, every
// 3 s). encoding/json spends an allocation on each of its times and on its
// encoder; writeStatus appends the same bytes into a reused buffer, and
// leaves to encoding/json any answer with a value it does not write byte
// for byte as encoding/json does (TestStatusJSON).

var statusBuffers = sync.Pool{New: func() any { return new([]byte) }}

// writeStatus writes out as writeJSON(w, 200, out) would.
func writeStatus(w http.ResponseWriter, out *jobStatus) {
	bp := statusBuffers.Get().(*[]byte)
	defer statusBuffers.Put(bp)
	b, ok := out.appendJSON((*bp)[:0])
	*bp = b
	if !ok {
		writeJSON(w, http.StatusOK, out.detached())
		return
	}
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// detached is a deep copy of j that shares no memory with it: what j
// points to can then stay on its caller's stack (escape analysis sees no
// path from j to encoding/json's interface).
func (j *jobStatus) detached() *jobStatus {
	c := &jobStatus{JobID: strings.Clone(j.JobID), Status: strings.Clone(j.Status),
		CreatedAt: detachedTime(j.CreatedAt), UpdatedAt: detachedTime(j.UpdatedAt)}
	if j.CompletedAt != nil {
		t := detachedTime(*j.CompletedAt)
		c.CompletedAt = &t
	}
	c.Error, c.Stage = clonedString(j.Error), clonedString(j.Stage)
	if j.Progress != nil {
		p := *j.Progress
		c.Progress = &p
	}
	return c
}

func clonedString(p *string) *string {
	if p == nil {
		return nil
	}
	s := strings.Clone(*p)
	return &s
}

// detachedTime is t, in a zone of t's name and offset (all that RFC 3339
// shows of a zone).
func detachedTime(t time.Time) time.Time {
	d := time.Unix(t.Unix(), int64(t.Nanosecond()))
	if t.Location() == time.UTC {
		return d.UTC()
	}
	name, offset := t.Zone()
	return d.In(time.FixedZone(strings.Clone(name), offset))
}

// appendJSON appends what json.Encoder.Encode writes of j (a newline
// last), or reports false when a value is one it leaves to encoding/json.
func (j *jobStatus) appendJSON(b []byte) ([]byte, bool) {
	ok := true
	field := func(name string) { b = append(b, name...) }
	str := func(s string) {
		if ok = ok && plainJSON(s); ok {
			b = append(append(append(b, '"'), s...), '"')
		}
	}
	stamp := func(t time.Time) {
		// MarshalJSON's RFC 3339 with nanoseconds, in UTC, for the years
		// it accepts.
		if ok = ok && t.Location() == time.UTC && t.Year() >= 0 && t.Year() <= 9999; ok {
			b = append(t.AppendFormat(append(b, '"'), time.RFC3339Nano), '"')
		}
	}
	field(`{"jobId":`)
	str(j.JobID)
	field(`,"status":`)
	str(j.Status)
	field(`,"createdAt":`)
	stamp(j.CreatedAt)
	field(`,"updatedAt":`)
	stamp(j.UpdatedAt)
	field(`,"completedAt":`)
	if j.CompletedAt == nil {
		field("null")
	} else {
		stamp(*j.CompletedAt)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{`,"error":`, j.Error}, {`,"stage":`, j.Stage}} {
		field(f.name)
		if f.v == nil {
			field("null")
		} else {
			str(*f.v)
		}
	}
	field(`,"progress":`)
	switch p := j.Progress; {
	case p == nil:
		field("null")
	case *p == 0 || math.Abs(*p) >= 1e-6 && math.Abs(*p) < 1e21:
		// encoding/json's plain form; it writes the others with an
		// exponent, in a form of its own.
		b = strconv.AppendFloat(b, *p, 'f', -1, 64)
	default:
		ok = false
	}
	b = append(b, "}\n"...)
	return b, ok
}

// plainJSON tells whether s is written between quotes as it is: printable
// ASCII that encoding/json neither escapes nor, in HTML's sake, spells as
// \u003c and the like.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
