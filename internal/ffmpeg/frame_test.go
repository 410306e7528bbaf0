package ffmpeg_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/mediatest"
)

// clockCases are recordings whose picture changes every second, one of each
// kind the screenshots must get right.
var clockCases = map[string]mediatest.Spec{
	"one keyframe":        {Width: 320, Height: 240, Seconds: 6, Clock: true},
	"b-frames, 1080p":     {Width: 1920, Height: 1080, Seconds: 5, Clock: true, Preset: "veryfast", FPS: 25},
	"webm, one keyframe":  {Width: 320, Height: 240, Seconds: 5, Clock: true, Format: "webm-live", OneKeyframe: true},
	"rotated, odd height": {Width: 641, Height: 479, Seconds: 4, Clock: true, Rotate: 90},
	"1440p, downscaled":   {Width: 2560, Height: 1440, Seconds: 3, Clock: true, FPS: 10},
	"full range":          {Width: 640, Height: 360, Seconds: 3, Clock: true, FullRange: true},
}

// The transcode's screenshot of second N shows second N, at most 1080
// pixels high and never upscaled; a retake of some seconds in one pass
// gives the same pictures.
func TestScreenshotsShowTheirOwnSecond(t *testing.T) {
	t.Parallel()
	for name, spec := range clockCases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := mediatest.Make(t, dir, "in.mp4", spec)
			probe, err := ffmpeg.ProbeFile(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if (spec.Preset == "veryfast") != (probe.BFrames > 0) {
				t.Fatalf("B-frames %d: the case does not test what it says", probe.BFrames)
			}
			shots := filepath.Join(dir, "shots")
			if err := os.Mkdir(shots, 0o700); err != nil {
				t.Fatal(err)
			}
			err = ffmpeg.Slim(context.Background(), in, filepath.Join(dir, "slim.mp4"), ffmpeg.SlimOptions{
				MaxDuration: 20 * time.Minute, SkipNonReference: probe.BFrames > 0, Frames: shots})
			if err != nil {
				t.Fatal(err)
			}
			seconds := int(spec.Seconds)
			files, _ := filepath.Glob(filepath.Join(shots, "*"))
			if len(files) != seconds {
				t.Fatalf("%d files for %d seconds: %v", len(files), seconds, files)
			}
			for s := range seconds {
				checkShot(t, filepath.Join(shots, ffmpeg.FrameFile(s)), s, spec)
			}

			again := filepath.Join(dir, "again")
			if err := os.Mkdir(again, 0o700); err != nil {
				t.Fatal(err)
			}
			want := []int{1, seconds - 1}
			if err := ffmpeg.Frames(context.Background(), in, again, want, 0, probe.BFrames > 0); err != nil {
				t.Fatal(err)
			}
			files, _ = filepath.Glob(filepath.Join(again, "*"))
			if len(files) != len(want) {
				t.Fatalf("retake of seconds %v wrote %v", want, files)
			}
			for _, s := range want {
				checkShot(t, filepath.Join(again, ffmpeg.FrameFile(s)), s, spec)
			}
		})
	}
}

// checkShot says what is wrong with the screenshot at path of second s of a
// Clock recording.
func checkShot(t *testing.T, path string, s int, spec mediatest.Spec) {
	t.Helper()
	if got := mediatest.ClockSecond(t, path); got != s {
		t.Errorf("the screenshot of second %d shows second %d", s, got)
	}
	// The recording's own brightness: its range converted once, to JPEG's.
	if got, want := mediatest.MeanLuma(t, path), mediatest.ClockLuma(s); math.Abs(got-want) > 3 {
		t.Errorf("second %d: mean luma %.1f, want %.1f", s, got, want)
	}
	w, h := jpegSize(t, path)
	wantW, wantH := spec.Width, displayedHeight(spec)
	if spec.Rotate == 90 {
		wantW = spec.Height
	}
	if h != min(ffmpeg.ScreenshotHeight, wantH/2*2) || float64(w)/float64(h)-float64(wantW)/float64(wantH) > 0.02 {
		t.Errorf("second %d: picture %dx%d of a %dx%d recording", s, w, h, wantW, wantH)
	}
}

func displayedHeight(spec mediatest.Spec) int {
	if spec.Rotate == 90 || spec.Rotate == 270 {
		return spec.Width
	}
	return spec.Height
}

func jpegSize(t *testing.T, path string) (int, int) {
	t.Helper()
	b := mediatest.DecodeJPEG(t, path).Bounds()
	return b.Dx(), b.Dy()
}

// A second past the end has no file; the pass still writes the others.
func TestRetakePastTheEndWritesNothingForIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := mediatest.Make(t, dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2, Clock: true})
	if err := ffmpeg.Frames(context.Background(), in, dir, []int{1, 9}, 0, false); err != nil {
		t.Fatal(err)
	}
	for s, want := range map[int]bool{1: true, 9: false} {
		if _, err := os.Stat(filepath.Join(dir, ffmpeg.FrameFile(s))); (err == nil) != want {
			t.Errorf("second %d: file exists %v, want %v", s, err == nil, want)
		}
	}
}

// The retake stops reading after the last second it needs, and picks
// frames as the transcode does.
func TestFramesArgsReadNoFurtherThanNeeded(t *testing.T) {
	t.Parallel()
	args := ffmpeg.FramesArgs("in", "dir", []int{3, 83}, 0, true)
	limit, in := slices.Index(args, "-t"), slices.Index(args, "-i")
	if limit < 0 || limit > in || args[limit+1] != strconv.Itoa(85) || !slices.Contains(args, "noref") ||
		slices.Index(args, "-format_whitelist") > in || !slices.Contains(args, "-frame_pts") {
		t.Fatalf("%q", args)
	}
}
