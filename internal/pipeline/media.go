package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

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
	// are booked too (and it writes no more than were booked).
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
	p.shrinkBooking(job.ID, res)
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
	err := p.retry(ctx, storageService, func() error {
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

// download streams the raw upload to file (stage downloading).
func (p *Pipeline) download(ctx context.Context, job queue.Job, r queue.Reporter, file string) error {
	if err := r.Stage(ctx, "downloading"); err != nil {
		return err
	}
	return p.fetchRaw(ctx, job, r, file)
}

// fetchRaw streams the raw upload to file, refusing more than the limit,
// with room reserved for it first. An upload no longer in storage is
// jobs.ErrObjectMissing, with its sentence.
func (p *Pipeline) fetchRaw(ctx context.Context, job queue.Job, r queue.Reporter, file string) error {
	// The size queue-job recorded, at most the limit: a person can write any
	// number there, and room for more than any upload may have would never
	// be found (the worker would wait for it for good).
	expected := int64(0)
	if up, ok := job.Metadata["upload"].(map[string]any); ok {
		if s, ok := up["size_bytes"].(float64); ok && s > 0 {
			expected = int64(min(s, float64(jobs.MaxUploadBytes)))
		}
	}
	if err := p.checkSpace(ctx, job, r, expected); err != nil {
		return err
	}
	err := p.retry(ctx, storageService, func() error {
		body, size, err := p.objects.Download(ctx, job.ID.RawPath())
		if errors.Is(err, jobs.ErrObjectMissing) {
			return jobs.Fail(msgNoUpload, err)
		}
		if err != nil {
			return err
		}
		defer body.Close()
		if size > jobs.MaxUploadBytes {
			return jobs.CheckUploadSize(size)
		}
		if size > expected {
			if err := p.checkSpace(ctx, job, r, size); err != nil {
				return err
			}
		}
		if err := workDir(job); err != nil {
			return err
		}
		src := io.Reader(body)
		if size > 0 {
			src = &progressReader{r: body, total: size, report: func(f float64) { _ = r.Progress(ctx, f) }}
		}
		_, n, err := saveHashed(src, file, jobs.MaxUploadBytes)
		if err != nil && !errors.Is(err, errTooLarge) {
			return err
		}
		return jobs.CheckUploadSize(n) // n is the limit + 1 when there was more
	})
	if noSpace(err) {
		return p.outOfSpace(ctx, job, r, err)
	}
	return err
}

// workDir makes the claim's work directory: the engine only names it, so
// that a job that ends before it has anything to write (its upload is gone)
// touches no disk. Many at once in one parent directory contend for its lock.
func workDir(job queue.Job) error { return os.MkdirAll(job.TempDir, 0o700) }

// Picture sizes outside these bounds are refused.
const (
	minSide = 16
	maxSide = 8192
)

// validate refuses what cannot become an SOP, with the reason.
func validate(p ffmpeg.Probe) error {
	if err := jobs.CheckUploadSize(p.Size); err != nil {
		return err
	}
	switch {
	case p.UnknownVideo:
		return jobs.Fail(msgUnreadable, errors.New("no decoder for the picture's codec"))
	case !p.HasVideo:
		return jobs.Fail(msgNoVideo, nil)
	case p.Duration > jobs.MaxDuration.Seconds() && !spanOfTimestamps(p):
		return jobs.Fail(msgVideoTooLong(p.Duration), nil)
	case p.Width < minSide || p.Height < minSide || p.Width > maxSide || p.Height > maxSide:
		return jobs.Fail(msgPictureSize(p.Width, p.Height), nil)
	}
	return nil
}

// spanOfTimestamps tells a container whose length is the span of its
// timestamps (MPEG-TS: a recorder restarted mid-file makes it go back, and
// the span hours long), not a length it states: only the transcode tells
// how long it plays.
func spanOfTimestamps(p ffmpeg.Probe) bool { return p.Container == "mpegts" }

// transcode makes the slim copy with one ffmpeg run. It plays at most a
// second past the limit, whatever the container says: a slim copy longer
// than the limit is refused then (a container can understate its length).
// It writes at most the screenshots booked (shotsNeed); when it plays
// longer than that, the screenshots the SOP's steps need are taken again
// from the upload (takeShots), not all of them.
func (p *Pipeline) transcode(ctx context.Context, job queue.Job, r queue.Reporter, raw string, probe ffmpeg.Probe) (SlimResult, error) {
	if err := r.Stage(ctx, "transcoding"); err != nil {
		return SlimResult{}, err
	}
	out, shots := filepath.Join(job.TempDir, "slim.mp4"), filepath.Join(job.TempDir, "shots")
	if err := os.MkdirAll(shots, 0o700); err != nil {
		return SlimResult{}, err
	}
	// One second past the limit tells a recording that is too long from one
	// at the limit.
	limit := jobs.MaxDuration + time.Second
	tctx, cancel := context.WithTimeout(ctx, p.cfg.FFmpegTimeout)
	defer cancel()
	booked := shotsBooked(probe)
	err := ffmpeg.Slim(tctx, raw, out, ffmpeg.SlimOptions{
		MaxDuration:      limit,
		SkipNonReference: probe.BFrames > 0,
		Expected:         time.Duration(min(probe.Duration, limit.Seconds()) * float64(time.Second)),
		Frames:           shots,
		MaxFrames:        booked,
		VideoStream:      probe.VideoStream,
		AudioStream:      probe.AudioStream,
		NoAudio:          !probe.HasAudio,
		Progress:         func(f float64) { _ = r.Progress(ctx, f) },
	})
	switch {
	case ctx.Err() != nil:
		return SlimResult{}, ctx.Err()
	case noSpace(err):
		return SlimResult{}, p.outOfSpace(ctx, job, r, err)
	case errors.Is(err, context.DeadlineExceeded):
		return SlimResult{}, jobs.Fail(msgConvertTooSlow(p.cfg.FFmpegTimeout), err)
	case err != nil:
		return SlimResult{}, jobs.Fail(msgDamaged, err)
	}
	slim, err := ffmpeg.ProbeFile(ctx, out)
	switch {
	case err != nil:
		return SlimResult{}, jobs.Fail(msgDamaged, err)
	case !slim.HasVideo || slim.Frames == 0:
		// A picture well under half a second long, of which fps=1 keeps no
		// frame (a recorder that lost the screen and kept the microphone):
		// there is nothing to show.
		return SlimResult{}, jobs.Fail(msgNoVideo, errors.New("the slim copy has no picture"))
	case slim.Duration > jobs.MaxDuration.Seconds()+0.5:
		return SlimResult{}, jobs.Fail(msgVideoOverLimit(), nil)
	case slim.Frames > booked:
		// It plays longer than its container said: the screenshots past
		// the booking were not written; the steps' are taken again.
		p.cfg.Logger.InfoContext(ctx, "the recording plays longer than its container says; its steps' screenshots will be taken again",
			"container_s", probe.Duration, "slim_s", slim.Duration)
		if err := os.RemoveAll(shots); err != nil {
			return SlimResult{}, err
		}
		shots = ""
	}
	sum, size, err := hashFile(out)
	if err != nil {
		return SlimResult{}, err
	}
	return SlimResult{File: out, Shots: shots, Path: job.ID.SlimPath(), Size: size, Duration: slim.Duration, Frames: slim.Frames, SHA256: sum}, nil
}

// uploadSlim stores the slim copy (upsert, with a Content-Length) and records it.
func (p *Pipeline) uploadSlim(ctx context.Context, job queue.Job, r queue.Reporter, res SlimResult) error {
	if err := r.Stage(ctx, "uploading_slim"); err != nil {
		return err
	}
	err := p.retry(ctx, storageService, func() error {
		f, err := os.Open(res.File)
		if err != nil {
			return err
		}
		defer f.Close()
		return p.objects.Upload(ctx, res.Path, f, res.Size, "video/mp4")
	})
	if err != nil {
		return err
	}
	// A slim copy the janitor deleted after an earlier run is here again:
	// it expires in its turn (retention: <kind>_deleted_at marks what the
	// janitor is done with; JSON null is not done).
	return r.Merge(ctx, map[string]any{"slim": res, "retention": map[string]any{"slim_deleted_at": nil}})
}

// progressReader reports how much of total has been read.
type progressReader struct {
	r      io.Reader
	total  int64
	read   int64
	report func(float64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	p.report(float64(p.read) / float64(p.total))
	return n, err
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
