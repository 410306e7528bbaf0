package api

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"
)

// TestStatusJSON: job-status's answer is written byte for byte as
// encoding/json writes it (docs/frontend-contract.md: not a byte of an
// answer changes), strings that need escaping, times and numbers of every
// form included; what the fast form leaves to encoding/json comes out
// the same too.
func TestStatusJSON(t *testing.T) {
	ptr := func(s string) *string { return &s }
	num := func(f float64) *float64 { return &f }
	at := func(t time.Time) *time.Time { return &t }
	now := time.Date(2026, 12, 7, 5, 1, 2, 123456789, time.UTC)
	strs := []string{"", "queued", `say "hi"`, `back\slash`, "<b>&amp;</b>", "line\nbreak\ttab\r\b\f\x00\x1f\x7f",
		"naïve café", "\u2028\u2029", "\xff\xfe bad utf-8", "emoji 🎬", "Gemini quota exhausted; try again later."}
	floats := []float64{0, math.Copysign(0, -1), 0.5, 1, 1e-6, 9.99e-7, 1e-7, -1e-7, 1e20, 1e21, 123456789.123456789,
		0.1 + 0.2, math.MaxFloat64, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1), math.Inf(-1)}
	times := []time.Time{now, {}, now.Truncate(time.Second), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), now.In(time.FixedZone("odd", 5*3600+30)), now.Local()}
	var cases []jobStatus
	for _, s := range strs {
		cases = append(cases, jobStatus{JobID: s, Status: "processing", CreatedAt: now, UpdatedAt: now, Error: ptr(s), Stage: ptr(s)},
			jobStatus{JobID: "j", Status: s, CreatedAt: now, UpdatedAt: now})
	}
	for _, f := range floats {
		cases = append(cases, jobStatus{JobID: "j", Status: "processing", CreatedAt: now, UpdatedAt: now, Progress: num(f)})
	}
	for _, tm := range times {
		cases = append(cases, jobStatus{JobID: "j", Status: "completed", CreatedAt: tm, UpdatedAt: now, CompletedAt: at(tm)},
			jobStatus{JobID: "j", Status: "completed", CreatedAt: now, UpdatedAt: tm})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("abcXYZ09 -_.:/\"\\<>&\n\t\x00\x7féü€🎬\u2028")
	for range 2000 {
		rs := make([]rune, rng.IntN(12))
		for i := range rs {
			rs[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := string(rs)
		cases = append(cases, jobStatus{JobID: s, Status: s, CreatedAt: now.Add(time.Duration(rng.Int64())), UpdatedAt: now,
			Stage: ptr(s), Progress: num(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(50)-25)))})
	}
	for _, c := range cases {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(c); err != nil {
			// A value encoding/json refuses (NaN, a year past 9999; the
			// store never gives one): the fast form must leave it to
			// encoding/json, which writes what it always wrote.
			if _, ok := c.appendJSON(nil); ok {
				t.Fatalf("%#v: the fast form wrote what encoding/json refuses (%v)", c, err)
			}
		}
		got := httptest.NewRecorder()
		writeStatus(got, &c)
		if !bytes.Equal(got.Body.Bytes(), want.Bytes()) {
			t.Fatalf("%#v:\n got %q\nwant %q", c, got.Body.Bytes(), want.Bytes())
		}
		if ct := got.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" || got.Code != 200 {
			t.Fatalf("%#v: %d %q", c, got.Code, ct)
		}
	}
	// The answers viewers poll for take the fast form.
	id := "0b6f4bb4-6b8e-4f7a-9d55-4a1b8a0f2c11"
	for _, c := range []jobStatus{
		{JobID: id, Status: "queued", CreatedAt: now, UpdatedAt: now},
		{JobID: id, Status: "processing", CreatedAt: now, UpdatedAt: now, Stage: ptr("extracting"), Progress: num(0.42)},
		{JobID: id, Status: "completed", CreatedAt: now, UpdatedAt: now, CompletedAt: at(now), Progress: num(1)},
		{JobID: id, Status: "error", CreatedAt: now, UpdatedAt: now, CompletedAt: at(now), Error: ptr(
			"The recording has no video track. Please upload a screen recording with video.")},
	} {
		if _, ok := c.appendJSON(nil); !ok {
			t.Errorf("%#v did not take the fast form", c)
		}
	}
}
