package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

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

// reserve books need bytes in dir for the job (replacing what it booked
// before), or returns errDiskFull.
func (p *Pipeline) reserve(ctx context.Context, id jobs.ID, dir string, need uint64) error {
	free, err := p.cfg.FreeSpace(dir)
	if err != nil {
		return fmt.Errorf("check free space in %s: %w", dir, err)
	}
	d := &p.disk
	d.mu.Lock()
	defer d.mu.Unlock()
	others := d.bookedExcept(id)
	if free < others+need {
		d.fullDir, d.fullNeed = dir, need
		p.cfg.Logger.ErrorContext(ctx, "RUNOPS_TMPDIR has too little free space: handing the job back and claiming nothing until there is room",
			"dir", dir, "free", free, "reserved_by_others", others, "need", need)
		return errDiskFull
	}
	if d.reserved == nil {
		d.reserved = map[jobs.ID]uint64{}
	}
	d.reserved[id] = need
	return nil
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

// outOfSpace records that a write in dir failed for want of space.
func (p *Pipeline) outOfSpace(ctx context.Context, id jobs.ID, dir string, err error) error {
	d := &p.disk
	d.mu.Lock()
	d.fullDir, d.fullNeed = dir, d.reserved[id]
	d.mu.Unlock()
	p.cfg.Logger.ErrorContext(ctx, "RUNOPS_TMPDIR ran out of space: handing the job back and claiming nothing until there is room",
		"dir", dir, "error", err)
	return fmt.Errorf("%w: %w", errDiskFull, err)
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
// a write (ENOSPC, EDQUOT), or ffmpeg saying so.
func noSpace(err error) bool {
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
