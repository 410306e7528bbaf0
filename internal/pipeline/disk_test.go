package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/mediatest"
)

// Writes that fail for want of space are told apart — a file write's ENOSPC
// and ffmpeg's own report — from other failures (/dev/full answers every
// write with ENOSPC).
func TestNoSpaceIsRecognised(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("/dev/full: %v", err)
	}
	defer full.Close()
	fw := &fileWriter{f: full}
	if _, err := fw.Write([]byte("x")); !noSpace(err) || !noSpace(fw.err) {
		t.Fatalf("a write to a full disk: %v", err)
	}
	dir := t.TempDir()
	in := mediatest.Make(t, dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	out := filepath.Join(dir, "slim.mp4") // named as the slim copy is, so ffmpeg picks the mp4 muxer
	if err := os.Symlink("/dev/full", out); err != nil {
		t.Fatal(err)
	}
	err = ffmpeg.Slim(context.Background(), in, out, ffmpeg.SlimOptions{})
	var fe *ffmpeg.Error
	if !errors.As(err, &fe) || !noSpace(err) {
		t.Fatalf("ffmpeg writing to a full disk: %v", err)
	}
	if noSpace(errors.New("moov atom not found")) || noSpace(&ffmpeg.Error{Err: errors.New("exit status 1"), Stderr: "Invalid data found"}) {
		t.Fatal("other failures count as a full disk")
	}
}
