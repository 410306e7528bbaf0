// Package pipeline is the work of one job, plugged into the queue engine as
// its Handler. Its files follow the stages, in the order they run:
// media.go (the raw upload downloaded, probed — refused with a sentence when
// it cannot be processed —, one ffmpeg run for the slim copy and the
// screenshots, the slim copy uploaded or reused), gemini.go (the Gemini
// file, the SOP asked for), answer.go and schema.go (the answer checked and
// turned into the viewer's document), frames.go (a picture per shown
// step), redact.go (the privacy pass and the highlights), store.go (the
// screenshots and the SOP stored); beside them sentences.go (every sentence
// a person reads), retry.go and disk.go. Every stage reports progress through
// the engine's fenced Reporter. It must not know SQL or HTTP details:
// storage comes in through the Objects interface, writes through an OutputLock.
package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
)

// Objects is what the pipeline needs of the videos bucket.
type Objects interface {
	Download(ctx context.Context, path string) (io.ReadCloser, int64, error)
	Upload(ctx context.Context, path string, r io.Reader, size int64, contentType string) error
	// List names the objects directly inside folder; Remove deletes objects.
	List(ctx context.Context, folder string) ([]string, error)
	Remove(ctx context.Context, paths ...string) error
}

// Config tunes the pipeline.
// A zero duration is its default.
type Config struct {
	FFmpegTimeout     time.Duration // RUNOPS_FFMPEG_TIMEOUT
	MaxRetryWait      time.Duration // GEMINI_MAX_RETRY_WAIT: total wait between tries of one Gemini step
	FileActiveTimeout time.Duration // GEMINI_FILE_ACTIVE_TIMEOUT
	GenerateTimeout   time.Duration // one generateContent call; past it the call is retried
	// FileCallTimeout bounds one call of the Files API (a file's state, its
	// deletion); an upload has twice that and its size at minUploadRate.
	// Past it the call is retried: a stalled connection is no hang.
	FileCallTimeout time.Duration
	// FramesTimeout bounds taking the screenshots again (a rerun) and
	// storing them; steps not stored by then are noted, and the SOP is
	// written.
	FramesTimeout time.Duration
	// Sleep waits between tries (tests inject their own); default honours ctx.
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *slog.Logger
	// FreeSpace reports bytes available under a directory (tests shrink it).
	FreeSpace func(dir string) (uint64, error)
	// DiskSize reports the size of the file system that holds a directory:
	// a job that needs more than that can never run here.
	DiskSize func(dir string) (uint64, error)
	// Privacy finds the sensitive values the SOP must not keep
	// (RUNOPS_REDACT_PATTERNS included); nil when RUNOPS_REDACT is off.
	Privacy *privacy.Detector
}

// The pipeline's defaults; the configuration's are these.
const (
	DefaultFFmpegTimeout     = 15 * time.Minute
	DefaultFileActiveTimeout = 5 * time.Minute
	defaultGenerateTimeout   = 5 * time.Minute
	defaultFileCallTimeout   = 30 * time.Second
	defaultFramesTimeout     = 5 * time.Minute
)

// Pipeline runs jobs.
type Pipeline struct {
	objects    Objects
	model      Model
	outputLock OutputLock
	cfg        Config
	disk       disk
}

var _ queue.Handler = (*Pipeline)(nil)

// New returns a pipeline over storage, Gemini and the lock its outputs are written under.
func New(objects Objects, model Model, lock OutputLock, cfg Config) *Pipeline {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.FFmpegTimeout, DefaultFFmpegTimeout}, {&cfg.MaxRetryWait, DefaultMaxRetryWait},
		{&cfg.FileActiveTimeout, DefaultFileActiveTimeout}, {&cfg.GenerateTimeout, defaultGenerateTimeout},
		{&cfg.FileCallTimeout, defaultFileCallTimeout},
		{&cfg.FramesTimeout, defaultFramesTimeout},
	} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.Sleep == nil {
		cfg.Sleep = backoff.Sleep
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FreeSpace == nil {
		cfg.FreeSpace = freeSpace
	}
	if cfg.DiskSize == nil {
		cfg.DiskSize = diskSize
	}
	return &Pipeline{objects: objects, model: model, outputLock: lock, cfg: cfg}
}

// Run processes one job: the slim copy, the SOP from it, a screenshot of
// every step it shows, the privacy pass over both, then the screenshots and
// the SOP stored.
func (p *Pipeline) Run(ctx context.Context, job queue.Job, r queue.Reporter) (err error) {
	defer p.unreserve(job.ID)
	slim, err := p.Slim(ctx, job, r)
	if err != nil {
		return err
	}
	ans, file, err := p.extract(ctx, job, r, slim)
	if file != "" {
		defer func() { p.keepOrDeleteModelFile(ctx, file, err) }() // with the run's outcome
	}
	if err != nil {
		return err
	}
	shots, err := p.frames(ctx, job, r, ans.doc, slim.Shots)
	if err != nil {
		return err
	}
	if err := p.redact(ctx, job, r, ans, shots); err != nil {
		return err
	}
	return p.writeSOP(ctx, job, r, ans.doc, shots)
}

// OutputLock is what every write of a job's outputs (screenshots, the SOP) goes
// through: under the SOP lock, which serialises it with the API's edits,
// and only while this claim (its lease token) still holds the job;
// otherwise it returns queue.ErrCancelled (a person's edit) or queue.ErrLost.
type OutputLock interface {
	WithSOPLockWhileHolding(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error
	// StoreTagged stores the SOP with store and records its ETag and the
	// screenshots' (frames: node → tag), and RecordFrames records or ("")
	// forgets screenshots' ETags, inside WithSOPLockWhileHolding, so that a tag
	// recorded is always that of what is stored and shown
	// (docs/frontend-contract.md, "Revalidation").
	StoreTagged(ctx context.Context, id jobs.ID, served []byte, shown []string, frames map[string]string, store func() error) (string, error)
	RecordFrames(ctx context.Context, id jobs.ID, tags map[string]string) error
}

// ErrInterrupted is why a local run (runops process) stops on Ctrl-C or
// SIGTERM. It is not a cancellation (queue.ErrCancelled: a person's edit of
// a job's row), but the run treats it as one: the work stops for
// good, and the Gemini file is deleted.
var ErrInterrupted = errors.New("interrupted")

// SoleWriter is the OutputLock of a run that is the only writer of its
// outputs and serves them to nobody (a local run, a benchmark): there is no
// lease to hold and no tag to record; StoreTagged just stores.
type SoleWriter struct{}

func (SoleWriter) WithSOPLockWhileHolding(ctx context.Context, _ jobs.ID, _ string, fn func(context.Context) error) error {
	return fn(ctx)
}

func (SoleWriter) RecordFrames(context.Context, jobs.ID, map[string]string) error { return nil }

func (SoleWriter) StoreTagged(_ context.Context, _ jobs.ID, _ []byte, _ []string, _ map[string]string, store func() error) (string, error) {
	return "", store()
}
