package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// errDiskFull: RUNOPS_TMPDIR cannot hold the job. The worker's problem, not
// the video's: the job goes back to the queue (for a worker with room, or for
// later) and this worker claims nothing until there is room again.
var errDiskFull = fmt.Errorf("not enough free space in RUNOPS_TMPDIR: %w", queue.ErrHandBack)

// ErrDiskFull is what Ready answers while the work directory is full.
var ErrDiskFull = errors.New("disk full")

// disk is the space this process's running jobs have reserved in their work
// directories, and what the last job refused for want of space needed: each
// job checks the free space as if the others had already written all of
// theirs, not as if it were alone.
type disk struct {
	mu       sync.Mutex
	reserved map[jobs.ID]uint64
	fullDir  string // where space ran out; "" while it has not
	fullNeed uint64
}

// maxDiskHandBacks is how many times in a row a job is handed back for want
// of room before it ends in error: a worker that never has room for it must
// not hand it back, and be paused by it, forever.
const maxDiskHandBacks = 3

// diskHandBacks is the metadata key that counts them (reset once a run
// finds room for the job).
const diskHandBacks = "disk_handbacks"

// reserve books need bytes in dir for the job (replacing what it booked
// before), or returns errDiskFull (the job is handed back) or, for a job that
// cannot ever fit, or has been handed back too often, its failure.
func (p *Pipeline) reserve(ctx context.Context, job queue.Job, r queue.Reporter, dir string, need uint64) error {
	size, err := p.cfg.DiskSize(dir)
	if err != nil {
		return fmt.Errorf("check the size of %s: %w", dir, err)
	}
	if need > size {
		return jobs.Fail(tooBig(need, size), fmt.Errorf("needs %d bytes in %s, which holds %d", need, dir, size))
	}
	free, err := p.cfg.FreeSpace(dir)
	if err != nil {
		return fmt.Errorf("check free space in %s: %w", dir, err)
	}
	d := &p.disk
	d.mu.Lock()
	others := d.bookedExcept(job.ID)
	if free < others+need {
		d.fullDir, d.fullNeed = dir, need
		d.mu.Unlock()
		p.cfg.Logger.ErrorContext(ctx, "RUNOPS_TMPDIR has too little free space: handing the job back and claiming nothing until there is room",
			"dir", dir, "free", free, "reserved_by_others", others, "need", need)
		return p.handBackForRoom(ctx, job, r, need, errDiskFull)
	}
	if d.reserved == nil {
		d.reserved = map[jobs.ID]uint64{}
	}
	d.reserved[job.ID] = need
	d.mu.Unlock()
	if handBacks(job) > 0 {
		// It fits: the count of hand-backs in a row starts again in the
		// row. This run's own hand-backs still count from the number it was
		// claimed with: a disk whose free space says there is room while
		// writes fail (a quota, no inodes left) hands the job back at most
		// maxDiskHandBacks times, not for ever.
		if err := r.Merge(ctx, map[string]any{diskHandBacks: 0}); err != nil {
			return err
		}
	}
	return nil
}

func handBacks(job queue.Job) int {
	n, _ := job.Metadata[diskHandBacks].(float64)
	return int(n)
}

// handBackForRoom hands the job back (err), counted in its metadata, or,
// after maxDiskHandBacks in a row, fails it with a sentence.
func (p *Pipeline) handBackForRoom(ctx context.Context, job queue.Job, r queue.Reporter, need uint64, err error) error {
	n := handBacks(job) + 1
	if n > maxDiskHandBacks {
		return jobs.Fail(msgNoRoom(need), errors.New(err.Error())) // the cause, no longer a hand-back
	}
	if werr := r.Merge(ctx, map[string]any{diskHandBacks: n}); werr != nil {
		return werr
	}
	return err
}

// bookedExcept sums the reservations of the other jobs; the caller holds mu.
func (d *disk) bookedExcept(id jobs.ID) uint64 {
	var sum uint64
	for j, n := range d.reserved {
		if j != id {
			sum += n
		}
	}
	return sum
}

// outOfSpace records that a write failed for want of space: the job is
// handed back (counted) and claims pause.
func (p *Pipeline) outOfSpace(ctx context.Context, job queue.Job, r queue.Reporter, err error) error {
	d := &p.disk
	dir := spaceDir(job)
	d.mu.Lock()
	need := d.reserved[job.ID]
	d.fullDir, d.fullNeed = dir, need
	d.mu.Unlock()
	p.cfg.Logger.ErrorContext(ctx, "RUNOPS_TMPDIR ran out of space: handing the job back and claiming nothing until there is room",
		"dir", dir, "error", err)
	return p.handBackForRoom(ctx, job, r, need, fmt.Errorf("%w: %w", errDiskFull, err))
}

// shrinkBooking sets the job's booking to what its work directory holds once the
// raw upload has left it: the slim copy and its screenshots, and some to
// spare. It never asks for room: it only gives some back.
func (p *Pipeline) shrinkBooking(id jobs.ID, res SlimResult) {
	need := uint64(64 << 20)
	if st, err := os.Stat(res.File); err == nil {
		need += uint64(st.Size())
	}
	if files, err := os.ReadDir(res.Shots); err == nil {
		for _, f := range files {
			if info, err := f.Info(); err == nil {
				need += uint64(info.Size())
			}
		}
	}
	p.disk.mu.Lock()
	defer p.disk.mu.Unlock()
	if booked, ok := p.disk.reserved[id]; ok {
		p.disk.reserved[id] = min(booked, need)
	}
}

func (p *Pipeline) unreserve(id jobs.ID) {
	p.disk.mu.Lock()
	defer p.disk.mu.Unlock()
	delete(p.disk.reserved, id)
}

// Ready implements queue.Gate: ErrDiskFull while the work directory has less
// room than the job that was handed back needed; nil once it has.
func (p *Pipeline) Ready() error {
	d := &p.disk
	d.mu.Lock()
	dir, need, booked := d.fullDir, d.fullNeed, d.bookedExcept("")
	d.mu.Unlock()
	if dir == "" {
		return nil
	}
	free, err := p.cfg.FreeSpace(dir)
	if err != nil || free < booked+need {
		return ErrDiskFull
	}
	d.mu.Lock()
	d.fullDir = ""
	d.mu.Unlock()
	p.cfg.Logger.Info("RUNOPS_TMPDIR has room again", "dir", dir, "free", free)
	return nil
}

var _ queue.Gate = (*Pipeline)(nil)

// noSpace tells a write that failed because the disk is full: the error of
// a write (ENOSPC, EDQUOT), or ffmpeg saying so; not one already handed
// back for it (errDiskFull, which wraps the write's error).
func noSpace(err error) bool {
	if errors.Is(err, errDiskFull) {
		return false
	}
	var fe interface{ FFmpegOutput() string }
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		(errors.As(err, &fe) && strings.Contains(fe.FFmpegOutput(), "No space left on device"))
}

// fileWriter remembers the error of a write, so that a failed copy can tell
// the local disk's failure from the stream's.
type fileWriter struct {
	f   *os.File
	err error
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	if err != nil {
		w.err = err
	}
	return n, err
}

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
	h := float64(min(probe.Height, ffmpeg.ScreenshotHeight))
	w := float64(probe.Width) * h / float64(max(probe.Height, 1))
	return uint64(float64(shotsBooked(probe)) * w * h * ffmpeg.FrameBytesPerPixel)
}

// shotsBooked is how many screenshots the transcode may write: one a second
// of the length the container says (at most the limit), and one more; a
// second past the limit when it does not say (browser WebM).
func shotsBooked(probe ffmpeg.Probe) int {
	if probe.Duration == 0 {
		return int(jobs.MaxDuration.Seconds()) + 2
	}
	return int(math.Ceil(min(probe.Duration, jobs.MaxDuration.Seconds()))) + 1
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
