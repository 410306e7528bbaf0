package pipeline

import (
	"context"
	"time"
)

// Model is what extraction needs of a video model (package gemini is
// Gemini's). A refused key is an error wrapping jobs.ErrRefusedKey; a failure
// worth retrying wraps jobs.ErrUnavailable, and may say how long to wait
// (RetryDelay) and whether a quota ran out (QuotaExhausted).
type Model interface {
	Model() string
	Upload(ctx context.Context, path, mimeType, displayName string) (ModelFile, error)
	File(ctx context.Context, name string) (ModelFile, error)
	Delete(ctx context.Context, name string) error
	Generate(ctx context.Context, req ModelRequest) (ModelResponse, error)
}

// ModelFile is a video uploaded to the model.
type ModelFile struct {
	Name      string // files/abc
	URI       string
	MIMEType  string
	State     string // PROCESSING, ACTIVE, FAILED
	ExpiresAt time.Time
	Error     string // why processing failed
}

// ModelRequest asks about one video for JSON matching a schema.
type ModelRequest struct {
	System    string
	Prompt    string
	FileURI   string
	MIMEType  string
	Schema    any // a JSON Schema (responseJsonSchema)
	MaxTokens int32
}

// ModelResponse is what came back.
type ModelResponse struct {
	Text         string
	FinishReason string // STOP, MAX_TOKENS, SAFETY, …
	BlockReason  string // set when the prompt itself was blocked (no candidates)
	Usage        Usage
}

// Usage counts tokens.
type Usage struct {
	PromptTokens int `json:"prompt_tokens"`
	VideoTokens  int `json:"video_tokens"`
	OutputTokens int `json:"output_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// Add sums usages.
func (u Usage) Add(o Usage) Usage {
	return Usage{u.PromptTokens + o.PromptTokens, u.VideoTokens + o.VideoTokens, u.OutputTokens + o.OutputTokens, u.TotalTokens + o.TotalTokens}
}
