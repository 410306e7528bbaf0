package ffmpeg_test

import (
	"context"
	"errors"
	"image/jpeg"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/mediatest"
)

// The frame of the moment asked for, not of the keyframe before it: the
// recording has one keyframe, at 0 s, and a picture that changes every second.
func TestFrameIsOfTheMomentAskedFor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cases := map[string]mediatest.Spec{
		"one keyframe":        {Width: 320, Height: 240, Seconds: 6, Clock: true},
		"b-frames, 1080p":     {Width: 1920, Height: 1080, Seconds: 5, Clock: true, Preset: "veryfast", FPS: 25},
		"webm, no duration":   {Width: 320, Height: 240, Seconds: 5, Clock: true, Format: "webm-live"},
		"rotated, odd height": {Width: 641, Height: 479, Seconds: 4, Clock: true, Rotate: 90},
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := mediatest.Make(t, t.TempDir(), "in.mp4", spec)
			for _, second := range []int{0, 1, 3, int(spec.Seconds) - 1} {
				out := filepath.Join(dir, name+"-"+string(rune('0'+second))+".jpg")
				if err := ffmpeg.Frame(context.Background(), in, time.Duration(second)*time.Second, out); err != nil {
					t.Fatalf("second %d: %v", second, err)
				}
				if got := mediatest.ClockSecond(t, out); got != second {
					t.Errorf("asked for second %d, got the picture of second %d", second, got)
				}
				f, _ := os.Open(out)
				cfg, err := jpeg.DecodeConfig(f)
				f.Close()
				wantW, wantH := spec.Width, spec.Height
				if spec.Rotate == 90 {
					wantW, wantH = wantH, wantW
				}
				if err != nil || cfg.Height > 720 || cfg.Height > wantH || (wantH <= 720 && cfg.Height < wantH-1) ||
					float64(cfg.Width)/float64(cfg.Height)-float64(wantW)/float64(wantH) > 0.02 {
					t.Errorf("picture %dx%d of a %dx%d recording (%v)", cfg.Width, cfg.Height, wantW, wantH, err)
				}
			}
		})
	}
}

func TestFramePastTheEndIsNoFrame(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := mediatest.Make(t, dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2, Clock: true})
	err := ffmpeg.Frame(context.Background(), in, 9*time.Second, filepath.Join(dir, "late.jpg"))
	if !errors.Is(err, ffmpeg.ErrNoFrame) {
		t.Fatalf("a frame past the end: %v", err)
	}
}

func TestFrameArgsSeekAccurately(t *testing.T) {
	t.Parallel()
	args := ffmpeg.FrameArgs("in", 83*time.Second, "out.jpg")
	ss, in := slices.Index(args, "-ss"), slices.Index(args, "-i")
	if ss < 0 || in < ss || args[ss+1] != "83.000" || slices.Contains(args, "-skip_frame") ||
		!slices.Contains(args, "-format_whitelist") || slices.Index(args, "-format_whitelist") > in {
		t.Fatalf("%q", args)
	}
}
