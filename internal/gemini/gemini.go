// Package gemini is pipeline.Model over google.golang.org/genai: the three
// things the worker asks of Gemini — upload a video with the Files API, wait
// for it, and generate structured output from it — in the pipeline's own
// types. It turns every outcome into one of three shapes: a result, a
// *Transient error (retry, perhaps after the wait the server asked for) or a
// permanent error (a refused key wraps jobs.ErrRefusedKey). It must not know
// SOPs or prompts. The SDK's own retries stay off: the caller retries, so that
// waits are bounded and the lease is renewed meanwhile.
package gemini

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/genai"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pipeline"
)

var _ pipeline.Model = (*Client)(nil)

// Client talks to the Gemini API.
type Client struct {
	c        *genai.Client
	model    string
	mediaRes genai.MediaResolution
}

// Config says how to reach Gemini.
type Config struct {
	APIKey          string
	Model           string
	MediaResolution string // e.g. MEDIA_RESOLUTION_LOW; "" = API default
	BaseURL         string // "" = the SDK's default (or GOOGLE_GEMINI_BASE_URL)
}

// New returns a client; it does not call the API.
func New(ctx context.Context, cfg Config) (*Client, error) {
	// The SDK's default client keeps 2 idle connections per host: with
	// several jobs at once, most calls would pay a new TLS handshake.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	c, err := genai.NewClient(ctx, &genai.ClientConfig{
		APIKey:      cfg.APIKey,
		Backend:     genai.BackendGeminiAPI,
		HTTPOptions: genai.HTTPOptions{BaseURL: cfg.BaseURL},
		HTTPClient:  &http.Client{Transport: tr},
	})
	if err != nil {
		return nil, fmt.Errorf("gemini client: %w", err)
	}
	mr := genai.MediaResolution("")
	if cfg.MediaResolution != "" {
		mr = genai.MediaResolution(strings.ToUpper(cfg.MediaResolution))
		if !strings.HasPrefix(string(mr), "MEDIA_RESOLUTION_") {
			mr = "MEDIA_RESOLUTION_" + mr
		}
	}
	return &Client{c: c, model: cfg.Model, mediaRes: mr}, nil
}

// Model is the model name requests use.
func (c *Client) Model() string { return c.model }

func fromGenai(f *genai.File) pipeline.ModelFile {
	out := pipeline.ModelFile{Name: f.Name, URI: f.URI, MIMEType: f.MIMEType, State: string(f.State), ExpiresAt: f.ExpirationTime}
	if f.Error != nil {
		out.Error = f.Error.Message
	}
	return out
}

// Upload sends a local video with the resumable Files API.
func (c *Client) Upload(ctx context.Context, path, mimeType, displayName string) (pipeline.ModelFile, error) {
	f, err := c.c.Files.UploadFromPath(ctx, path, &genai.UploadFileConfig{MIMEType: mimeType, DisplayName: displayName})
	if err != nil {
		return pipeline.ModelFile{}, classify(ctx, "upload file", err)
	}
	return fromGenai(f), nil
}

// File returns the file's current state.
func (c *Client) File(ctx context.Context, name string) (pipeline.ModelFile, error) {
	f, err := c.c.Files.Get(ctx, name, nil)
	if err != nil {
		return pipeline.ModelFile{}, classify(ctx, "get file", err)
	}
	return fromGenai(f), nil
}

// Delete removes an uploaded file; one that is gone already is no error.
func (c *Client) Delete(ctx context.Context, name string) error {
	if _, err := c.c.Files.Delete(ctx, name, nil); err != nil {
		if a, ok := apiError(err); ok && (a.Code == http.StatusNotFound || a.Status == "NOT_FOUND") {
			return nil
		}
		return classify(ctx, "delete file", err)
	}
	return nil
}

// Generate asks the model for JSON matching req.Schema about the video.
func (c *Client) Generate(ctx context.Context, req pipeline.ModelRequest) (pipeline.ModelResponse, error) {
	fps := 1.0
	temp := float32(0.2)
	video := genai.NewPartFromURI(req.FileURI, req.MIMEType)
	video.VideoMetadata = &genai.VideoMetadata{FPS: &fps}
	cfg := &genai.GenerateContentConfig{
		SystemInstruction:  genai.NewContentFromText(req.System, genai.RoleUser),
		ResponseMIMEType:   "application/json",
		ResponseJsonSchema: req.Schema,
		Temperature:        &temp,
		MaxOutputTokens:    req.MaxTokens,
		MediaResolution:    c.mediaRes,
	}
	contents := []*genai.Content{genai.NewContentFromParts([]*genai.Part{video, genai.NewPartFromText(req.Prompt)}, genai.RoleUser)}
	res, err := c.c.Models.GenerateContent(ctx, c.model, contents, cfg)
	if err != nil {
		return pipeline.ModelResponse{}, classify(ctx, "generate", err)
	}
	out := pipeline.ModelResponse{Text: res.Text()}
	if res.PromptFeedback != nil {
		out.BlockReason = string(res.PromptFeedback.BlockReason)
	}
	if len(res.Candidates) > 0 && res.Candidates[0] != nil {
		out.FinishReason = string(res.Candidates[0].FinishReason)
	}
	if u := res.UsageMetadata; u != nil {
		out.Usage = pipeline.Usage{PromptTokens: int(u.PromptTokenCount), OutputTokens: int(u.CandidatesTokenCount), TotalTokens: int(u.TotalTokenCount)}
		for _, d := range u.PromptTokensDetails {
			if d != nil && d.Modality == genai.MediaModalityVideo {
				out.Usage.VideoTokens += int(d.TokenCount)
			}
		}
	}
	return out, nil
}

// Transient is a failure worth retrying, after Wait when the server said.
type Transient struct {
	Err  error
	Wait time.Duration
	// Quota is set for 429 RESOURCE_EXHAUSTED.
	Quota bool
}

func (t *Transient) Error() string { return t.Err.Error() }
func (t *Transient) Unwrap() error { return t.Err }

// Is makes a transient failure an outage for callers that branch on jobs.ErrUnavailable.
func (t *Transient) Is(target error) bool { return target == jobs.ErrUnavailable }

// QuotaExhausted tells a 429 from other transient failures.
func (t *Transient) QuotaExhausted() bool { return t.Quota }

// RetryDelay is the wait the server asked for (0: none).
func (t *Transient) RetryDelay() time.Duration { return t.Wait }

// Refused is a request the API refuses for good (400 INVALID_ARGUMENT, a
// precondition, a file it no longer has): asking again gets the same.
type Refused struct{ Err error }

func (r *Refused) Error() string { return r.Err.Error() }
func (r *Refused) Unwrap() error { return r.Err }

// RefusedRequest tells the pipeline's sentence for it.
func (r *Refused) RefusedRequest() bool { return true }

// cutShort are the SDK's words for an answer that broke off on the way (a
// gateway's page without the upload protocol's headers, an upload that
// never finished): passing, as a broken connection is.
var cutShort = []string{"read on closed response body", "Upload status is not finalized", "connection"}

// classify sorts an SDK error into transient and permanent.
func classify(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		// The call's own deadline: the service was too slow this time, which
		// is a timeout like any other (transient), not the job being stopped.
		return &Transient{Err: fmt.Errorf("gemini %s: no answer within the call's deadline: %w", op, err)}
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err()) // the job was stopped: not the server's doing
	}
	wrapped := fmt.Errorf("gemini %s: %w", op, err)
	var netErr net.Error
	apiErr, ok := apiError(err)
	switch {
	case !ok && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || brokenOff(err)):
		return &Transient{Err: wrapped}
	case !ok:
		return wrapped
	case apiErr.Code == 429 || apiErr.Status == "RESOURCE_EXHAUSTED":
		return &Transient{Err: wrapped, Wait: retryDelay(apiErr.Details), Quota: true}
	case apiErr.Code == 408 || apiErr.Code >= 500 || apiErr.Status == "UNAVAILABLE" || apiErr.Status == "INTERNAL":
		return &Transient{Err: wrapped, Wait: retryDelay(apiErr.Details)}
	case apiErr.Code == 401 || apiErr.Code == 403 || apiErr.Status == "PERMISSION_DENIED" || apiErr.Status == "UNAUTHENTICATED" ||
		badKey(apiErr.Message) || hasReason(apiErr.Details, "API_KEY_INVALID"):
		return fmt.Errorf("%w: %w", jobs.ErrRefusedKey, wrapped)
	case apiErr.Code == http.StatusConflict || apiErr.Status == "ABORTED":
		return &Transient{Err: wrapped, Wait: retryDelay(apiErr.Details)}
	case apiErr.Code >= 400 && apiErr.Code < 500:
		return &Refused{Err: wrapped}
	}
	return wrapped
}

// brokenOff tells an answer that broke off on the way: the body cut short
// (io.ErrUnexpectedEOF, a reset), or the SDK's words for it (cutShort).
func brokenOff(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	for _, s := range cutShort {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// apiStatuses are the statuses of Google's APIs that classify reads.
var apiStatuses = []string{"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "PERMISSION_DENIED", "UNAUTHENTICATED"}

// apiCode finds the HTTP status in an error's text ("Error 429, …"), and
// retryDelayText a RetryInfo's wait, as genai.APIError prints its Details
// ("retryDelay:20s").
var (
	apiCode        = regexp.MustCompile(`\bError (\d{3})\b`)
	retryDelayText = regexp.MustCompile(`\bretryDelay:([0-9.]+s)\b`)
)

// apiError is the API's error: genai.APIError, or, for the upload's start
// request (whose error the SDK formats with %s, text only: docs/dependencies.md),
// the same read from its text — its RetryInfo's retryDelay too — so that
// one switch classifies both.
func apiError(err error) (genai.APIError, bool) {
	var apiErr genai.APIError
	if errors.As(err, &apiErr) {
		return apiErr, true
	}
	msg := err.Error()
	apiErr.Message = msg
	if m := apiCode.FindStringSubmatch(msg); m != nil {
		apiErr.Code, _ = strconv.Atoi(m[1])
	}
	if m := retryDelayText.FindStringSubmatch(msg); m != nil {
		apiErr.Details = []map[string]any{{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": m[1]}}
	}
	for _, st := range apiStatuses {
		if strings.Contains(msg, st) {
			apiErr.Status = st
			break
		}
	}
	return apiErr, apiErr.Code != 0 || apiErr.Status != "" || badKey(msg)
}

func badKey(msg string) bool {
	return strings.Contains(msg, "API key not valid") || strings.Contains(msg, "API_KEY_INVALID")
}

func hasReason(details []map[string]any, reason string) bool {
	for _, d := range details {
		if r, _ := d["reason"].(string); r == reason {
			return true
		}
	}
	return false
}

// retryDelay reads google.rpc.RetryInfo's retryDelay ("2s", "1.5s").
func retryDelay(details []map[string]any) time.Duration {
	for _, d := range details {
		if t, _ := d["@type"].(string); strings.HasSuffix(t, "google.rpc.RetryInfo") {
			if s, ok := d["retryDelay"].(string); ok {
				if w, err := time.ParseDuration(s); err == nil && w > 0 {
					return w
				}
			}
		}
	}
	return 0
}
