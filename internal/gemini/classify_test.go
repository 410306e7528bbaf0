package gemini

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/genai"

	"github.com/runops/runops/internal/jobs"
)

// The API's errors and the same errors as text (the upload's start request:
// the SDK formats its error with %s) are classified alike, by one switch.
func TestClassifyReadsTheAPIErrorOrItsText(t *testing.T) {
	t.Parallel()
	type want int
	const (
		permanent want = iota
		transient
		quota
		refusedKey
	)
	for name, c := range map[string]struct {
		err  error
		want want
	}{
		"429":                  {genai.APIError{Code: 429, Status: "RESOURCE_EXHAUSTED"}, quota},
		"429 as text":          {errors.New("upload start: Error 429, Message: Resource has been exhausted, Status: RESOURCE_EXHAUSTED"), quota},
		"503":                  {genai.APIError{Code: 503, Status: "UNAVAILABLE"}, transient},
		"503 as text":          {errors.New("Error 503, Message: overloaded, Status: UNAVAILABLE, Details: []"), transient},
		"bad key":              {genai.APIError{Code: 400, Message: "API key not valid. Please pass a valid API key."}, refusedKey},
		"bad key as text":      {errors.New("Error 400, Message: API key not valid. Please pass a valid API key., Status: INVALID_ARGUMENT"), refusedKey},
		"denied as text":       {errors.New("Error 403, Message: no, Status: PERMISSION_DENIED"), refusedKey},
		"400":                  {genai.APIError{Code: 400, Status: "INVALID_ARGUMENT", Message: "bad request"}, permanent},
		"400 as text":          {errors.New("Error 400, Message: bad request, Status: INVALID_ARGUMENT"), permanent},
		"the network":          {&net.OpError{Op: "dial", Err: errors.New("refused")}, transient},
		"a dropped connection": {errors.New("read: connection reset by peer"), transient},
		"anything else":        {errors.New("the answer was not JSON"), permanent},
	} {
		err := classify(context.Background(), "test", c.err)
		var tr *Transient
		got := permanent
		switch {
		case errors.As(err, &tr) && tr.Quota:
			got = quota
		case errors.As(err, &tr):
			got = transient
		case errors.Is(err, jobs.ErrRefusedKey):
			got = refusedKey
		}
		if got != c.want {
			t.Errorf("%s: %v classified %d, want %d", name, err, got, c.want)
		}
	}
}
