// Package pipeline is the work of one job, plugged into the queue engine as
// its Handler: the raw upload streamed to disk, probed and refused with a
// sentence when it cannot be processed, down-sampled by one ffmpeg run, and
// the slim copy uploaded (reused when a previous attempt already did). Every
// stage reports progress through the engine's fenced Reporter. It must not
// know SQL or HTTP details: storage comes in through the Objects interface.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
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
type Config struct {
	FFmpegTimeout     time.Duration // RUNOPS_FFMPEG_TIMEOUT
	MaxRetryWait      time.Duration // GEMINI_MAX_RETRY_WAIT: total wait between tries of one step
	FileActiveTimeout time.Duration // GEMINI_FILE_ACTIVE_TIMEOUT
	GenerateTimeout   time.Duration // one generateContent call (default 5m); past it the call is retried
	// FramesTimeout bounds taking the screenshots again (a rerun) and
	// storing them (default 5m); steps not stored by then are noted, and
	// the SOP is written.
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

// Pipeline runs jobs.
type Pipeline struct {
	objects Objects
	model   Model
	fence   Fence
	cfg     Config
	disk    disk
}

var _ queue.Handler = (*Pipeline)(nil)

// New returns a pipeline over storage, Gemini and the fence its writes go through.
func New(objects Objects, model Model, fence Fence, cfg Config) *Pipeline {
	if cfg.FFmpegTimeout <= 0 {
		cfg.FFmpegTimeout = 15 * time.Minute
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 2 * time.Minute
	}
	if cfg.FileActiveTimeout <= 0 {
		cfg.FileActiveTimeout = 5 * time.Minute
	}
	if cfg.GenerateTimeout <= 0 {
		cfg.GenerateTimeout = 5 * time.Minute
	}
	if cfg.FramesTimeout <= 0 {
		cfg.FramesTimeout = 5 * time.Minute
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
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
	return &Pipeline{objects: objects, model: model, fence: fence, cfg: cfg}
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
		defer func() { p.settleFile(ctx, file, err) }() // with the run's outcome
	}
	if err != nil {
		return err
	}
	shots, err := p.frames(ctx, job, r, ans.doc, slim.Shots)
	if err != nil {
		return err
	}
	if err := p.redact(ctx, r, ans, shots); err != nil {
		return err
	}
	return p.writeSOP(ctx, job, r, ans.doc, shots)
}

// SlimResult is the slim copy on local disk, as recorded in metadata.slim.
type SlimResult struct {
	File string `json:"-"`
	// Shots is the directory of the transcode's screenshots, one per second
	// (ffmpeg.FrameFile); "" when the slim copy was reused.
	Shots string `json:"-"`

	Path     string  `json:"path"`
	Size     int64   `json:"size_bytes"`
	Duration float64 `json:"duration_s"`
	Frames   int     `json:"frames"`
	SHA256   string  `json:"sha256"`
}

// Slim makes sure videos/slim/<jobId>.mp4 exists and is on local disk:
// reused from a previous attempt when its checksum still matches, otherwise
// made from the raw upload.
func (p *Pipeline) Slim(ctx context.Context, job queue.Job, r queue.Reporter) (SlimResult, error) {
	if res, ok := p.reuseSlim(ctx, job); ok {
		return res, nil
	}
	raw := filepath.Join(job.TempDir, "raw")
	if err := p.download(ctx, job, r, raw); err != nil {
		return SlimResult{}, err
	}
	if err := r.Stage(ctx, "probing"); err != nil {
		return SlimResult{}, err
	}
	probe, err := ffmpeg.ProbeFile(ctx, raw)
	if err != nil {
		if errors.Is(err, ffmpeg.ErrUnreadable) {
			return SlimResult{}, jobs.Fail(msgUnreadable, err)
		}
		return SlimResult{}, err
	}
	if err := r.Merge(ctx, map[string]any{"probe": probe}); err != nil {
		return SlimResult{}, err
	}
	if err := validate(probe); err != nil {
		return SlimResult{}, err
	}
	// Now that its length is known, the screenshots the transcode writes
	// are booked too.
	if err := p.reserve(ctx, job, r, spaceDir(job), rawNeed(probe.Size)+shotsNeed(probe)); err != nil {
		return SlimResult{}, err
	}
	res, err := p.transcode(ctx, job, r, raw, probe)
	if err != nil {
		return SlimResult{}, err
	}
	// Nothing reads the raw upload again in this run: its room goes back.
	if err := os.Remove(raw); err != nil {
		return SlimResult{}, err
	}
	p.rebook(job.ID, res)
	if err := p.uploadSlim(ctx, job, r, res); err != nil {
		return SlimResult{}, err
	}
	return res, nil
}

// reuseSlim downloads the slim copy a previous attempt recorded and keeps it
// if its sha256 still matches.
func (p *Pipeline) reuseSlim(ctx context.Context, job queue.Job) (SlimResult, bool) {
	rec, _ := job.Metadata["slim"].(map[string]any)
	want, _ := rec["sha256"].(string)
	if want == "" {
		return SlimResult{}, false
	}
	file := filepath.Join(job.TempDir, "slim.mp4")
	if err := workDir(job); err != nil {
		return SlimResult{}, false
	}
	var got string
	var size int64
	err := p.retry(ctx, viaStorage, func() error {
		body, _, err := p.objects.Download(ctx, job.ID.SlimPath())
		if err != nil {
			return err
		}
		defer body.Close()
		got, size, err = saveHashed(body, file, -1)
		return err
	})
	if err != nil || got != want {
		p.cfg.Logger.InfoContext(ctx, "slim copy of a previous attempt not reusable", "error", err, "sha256_match", got == want)
		os.Remove(file)
		return SlimResult{}, false
	}
	res := SlimResult{File: file, Path: job.ID.SlimPath(), Size: size, SHA256: got}
	res.Duration, _ = rec["duration_s"].(float64)
	if frames, ok := rec["frames"].(float64); ok {
		res.Frames = int(frames)
	}
	p.cfg.Logger.InfoContext(ctx, "reusing the slim copy of a previous attempt", "sha256", got)
	return res, true
}

// saveHashed copies r into file (at most limit bytes, -1 = no limit; one
// byte more is reported as too large) and returns its sha256 and size.
func saveHashed(r io.Reader, file string, limit int64) (string, int64, error) {
	f, err := os.Create(file)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	src := r
	if limit >= 0 {
		src = io.LimitReader(r, limit+1)
	}
	fw := &fileWriter{f: f}
	n, err := io.Copy(io.MultiWriter(fw, h), src)
	switch {
	case fw.err != nil:
		return "", n, fmt.Errorf("write %s: %w", file, fw.err) // the local disk's failure
	case err != nil:
		return "", n, fmt.Errorf("%w: %w", jobs.ErrUnavailable, err) // the stream broke: try again
	}
	if limit >= 0 && n > limit {
		return "", n, errTooLarge
	}
	return hex.EncodeToString(h.Sum(nil)), n, f.Close()
}

var errTooLarge = errors.New("larger than the limit")

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	return hashReader(f)
}

func hashReader(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
