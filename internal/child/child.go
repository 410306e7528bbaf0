// Package child starts the tools the worker runs (ffmpeg, ffprobe,
// tesseract) so that none outlives its job or the worker, and keeps the end
// of what they print for the error that says why they failed.
package child

import (
	"bytes"
	"context"
	"os/exec"
	"syscall"
	"time"
)

// Command is exec.CommandContext for a child that dies with ctx and with
// the worker itself (Pdeathsig), its output pipes closed within 5 s of that.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Tail keeps the last Max bytes written to it.
type Tail struct {
	Max int
	buf bytes.Buffer
}

func (t *Tail) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if over := t.buf.Len() - t.Max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

// String is what was kept, without surrounding blanks.
func (t *Tail) String() string { return string(bytes.TrimSpace(t.buf.Bytes())) }
