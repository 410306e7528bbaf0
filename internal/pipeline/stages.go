package pipeline

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// Picture sizes outside these bounds are refused.
const (
	minSide = 16
	maxSide = 8192
)

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
	expected := int64(0)
	if up, ok := job.Metadata["upload"].(map[string]any); ok {
		if s, ok := up["size_bytes"].(float64); ok {
			expected = int64(s)
		}
	}
	if err := p.checkSpace(ctx, job, r, expected); err != nil {
		return err
	}
	err := p.retry(ctx, viaStorage, func() error {
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

// spaceDir is where free space is measured: the work directories' parent,
// which outlives every claim (the Gate asks it again after the job is gone).
func spaceDir(job queue.Job) string { return filepath.Dir(job.TempDir) }

// checkSpace reserves room for the raw file, the slim copy and some to
// spare, or says the disk is full (the job is handed back).
func (p *Pipeline) checkSpace(ctx context.Context, job queue.Job, r queue.Reporter, rawSize int64) error {
	return p.reserve(ctx, job, r, spaceDir(job), rawNeed(rawSize))
}

// rawNeed is the room for a raw upload of size bytes, its slim copy (a
// fraction of it) and some to spare.
func rawNeed(size int64) uint64 { return uint64(max(size, 0))*12/10 + 64<<20 }

// shotsNeed bounds the room the transcode's screenshots take: one per
// second (of the limit, when the container does not say), at most
// ffmpeg.ScreenshotHeight pixels high.
func shotsNeed(probe ffmpeg.Probe) uint64 {
	seconds := math.Ceil(min(probe.Duration, jobs.MaxDuration.Seconds())) + 1
	if probe.Duration == 0 {
		seconds = jobs.MaxDuration.Seconds() + 1
	}
	h := float64(min(probe.Height, ffmpeg.ScreenshotHeight))
	w := float64(probe.Width) * h / float64(max(probe.Height, 1))
	return uint64(seconds * w * h * ffmpeg.FrameBytesPerPixel)
}

func freeSpace(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func diskSize(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Blocks * uint64(st.Bsize), nil
}

// validate refuses what cannot become an SOP, with the reason.
func validate(p ffmpeg.Probe) error {
	if err := jobs.CheckUploadSize(p.Size); err != nil {
		return err
	}
	switch {
	case !p.HasVideo:
		return jobs.Fail(msgNoVideo, nil)
	case p.Duration > jobs.MaxDuration.Seconds():
		return jobs.Fail(msgVideoTooLong(p.Duration), nil)
	case p.Width < minSide || p.Height < minSide || p.Width > maxSide || p.Height > maxSide:
		return jobs.Fail(msgPictureSize(p.Width, p.Height), nil)
	}
	return nil
}

// transcode makes the slim copy with one ffmpeg run.
func (p *Pipeline) transcode(ctx context.Context, job queue.Job, r queue.Reporter, raw string, probe ffmpeg.Probe) (SlimResult, error) {
	if err := r.Stage(ctx, "transcoding"); err != nil {
		return SlimResult{}, err
	}
	out, shots := filepath.Join(job.TempDir, "slim.mp4"), filepath.Join(job.TempDir, "shots")
	if err := os.MkdirAll(shots, 0o700); err != nil {
		return SlimResult{}, err
	}
	limit := jobs.MaxDuration
	if probe.Duration == 0 {
		// The container does not say how long it is (browser WebM): one more
		// second tells a recording that is too long from one at the limit.
		limit += time.Second
	}
	tctx, cancel := context.WithTimeout(ctx, p.cfg.FFmpegTimeout)
	defer cancel()
	err := ffmpeg.Slim(tctx, raw, out, ffmpeg.SlimOptions{
		MaxDuration:      limit,
		SkipNonReference: probe.BFrames > 0,
		Expected:         time.Duration(probe.Duration * float64(time.Second)),
		Frames:           shots,
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
	if err != nil {
		return SlimResult{}, jobs.Fail(msgDamaged, err)
	}
	if probe.Duration == 0 && slim.Duration > jobs.MaxDuration.Seconds()+0.5 {
		return SlimResult{}, jobs.Fail(msgVideoOverLimit(), nil)
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
	err := p.retry(ctx, viaStorage, func() error {
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
	return r.Merge(ctx, map[string]any{"slim": res})
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
