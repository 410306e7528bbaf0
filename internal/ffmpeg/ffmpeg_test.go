package ffmpeg_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/mediatest"
)

func TestSlimCopies(t *testing.T) {
	t.Parallel()
	cases := map[string]mediatest.Spec{
		"1080p landscape": {Width: 1920, Height: 1080, Seconds: 5, Audio: true},
		"portrait":        {Width: 1080, Height: 1920, Seconds: 3, Audio: true},
		"4k":              {Width: 3840, Height: 2160, Seconds: 2, FPS: 10},
		"b-frames":        {Width: 1280, Height: 720, Seconds: 6, Audio: true, Preset: "veryfast"},
		"odd size":        {Width: 641, Height: 479, Seconds: 3, Audio: true},
		"small, no audio": {Width: 320, Height: 240, Seconds: 4},
		"vfr":             {Width: 640, Height: 360, Seconds: 6, Audio: true, VFR: true},
		"rotated":         {Width: 1280, Height: 720, Seconds: 3, Audio: true, Rotate: 90},
		"mov":             {Width: 640, Height: 480, Seconds: 3, Audio: true, Format: "mov"},
		"webm live":       {Width: 640, Height: 480, Seconds: 3, Audio: true, Format: "webm-live"},
		"phone tags":      {Width: 640, Height: 480, Seconds: 2, Audio: true, Tags: true},
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := mediatest.Make(t, dir, "in.mp4", spec) // whatever the container, named .mp4 as uploads are
			src, err := ffmpeg.ProbeFile(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			if (spec.Tags || spec.Rotate != 0) && carried(t, in) == "" {
				t.Fatal("the source carries no tags: the check below would prove nothing")
			}
			out, shots := filepath.Join(dir, "slim.mp4"), t.TempDir()
			var last atomic.Value
			if err := ffmpeg.Slim(context.Background(), in, out, ffmpeg.SlimOptions{MaxDuration: 20 * time.Minute,
				SkipNonReference: src.BFrames > 0, Frames: shots,
				Expected: time.Duration(src.Duration * float64(time.Second)),
				Progress: func(f float64) { last.Store(f) }}); err != nil {
				t.Fatal(err)
			}
			got, err := ffmpeg.ProbeFile(context.Background(), out)
			if err != nil {
				t.Fatal(err)
			}
			wantH := min(720, spec.Height/2*2)
			if spec.Rotate == 90 || spec.Rotate == 270 {
				wantH = min(720, spec.Width/2*2)
			}
			if got.Height != wantH || got.Width%2 != 0 || got.Rotation != 0 {
				t.Errorf("picture %dx%d rotation %d; want height %d, even width, no rotation", got.Width, got.Height, got.Rotation, wantH)
			}
			if got.VideoCodec != "h264" || got.FPS != 1 {
				t.Errorf("codec %s at %v fps", got.VideoCodec, got.FPS)
			}
			if spec.Preset == "veryfast" && src.BFrames == 0 {
				t.Error("the source has no B-frames: the skip is not exercised")
			}
			if math.Abs(float64(got.Frames)-math.Round(got.Duration)) > 1 {
				t.Errorf("%d frames for %.2f s", got.Frames, got.Duration)
			}
			// A screenshot of every frame of the slim copy, as high as the
			// recording up to 1080 pixels.
			if files, _ := filepath.Glob(filepath.Join(shots, "*.jpg")); len(files) != got.Frames {
				t.Errorf("%d screenshots for %d frames", len(files), got.Frames)
			}
			if w, h := jpegSize(t, filepath.Join(shots, ffmpeg.FrameFile(got.Frames-1))); h != min(1080, displayedHeight(spec)/2*2) ||
				math.Abs(float64(w)/float64(h)-float64(got.Width)/float64(got.Height)) > 0.02 {
				t.Errorf("last screenshot %dx%d, slim copy %dx%d", w, h, got.Width, got.Height)
			}
			if got.HasAudio != spec.Audio || (got.HasAudio && got.AudioCodec != "aac") {
				t.Errorf("audio %v (%s); source had audio: %v", got.HasAudio, got.AudioCodec, spec.Audio)
			}
			if p, _ := last.Load().(float64); p != 1 {
				t.Errorf("progress ended at %v", p)
			}
			if leaks := carried(t, out); leaks != "" {
				t.Errorf("output still carries %s", leaks)
			}
		})
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	p, err := ffmpeg.ProbeFile(ctx, mediatest.Make(t, dir, "r.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 2, Audio: true, Rotate: 90}))
	if err != nil || p.Width != 360 || p.Height != 640 || !p.HasVideo || !p.HasAudio || (p.Rotation != 90 && p.Rotation != -90) ||
		math.Abs(p.Duration-2) > 0.1 || p.FPS != 30 || p.Size == 0 || p.Container == "" {
		t.Fatalf("rotated: %+v %v", p, err)
	}
	if p, err := ffmpeg.ProbeFile(ctx, mediatest.AudioOnly(t, dir, "a.mp4", 2)); err != nil || p.HasVideo || !p.HasAudio {
		t.Fatalf("audio only: %+v %v", p, err)
	}
	if p, err := ffmpeg.ProbeFile(ctx, mediatest.Make(t, dir, "w.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2, Format: "webm-live"})); err != nil || p.Duration != 0 {
		t.Fatalf("live webm has no duration: %+v %v", p, err)
	}
	random := make([]byte, 100000)
	rand.Read(random)
	for name, path := range map[string]string{
		"random":    mediatest.File(t, dir, "rand.mp4", random),
		"pdf":       mediatest.File(t, dir, "doc.mp4", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")),
		"empty":     mediatest.File(t, dir, "empty.mp4", nil),
		"truncated": mediatest.Truncated(t, dir, "cut.mp4"),
	} {
		if _, err := ffmpeg.ProbeFile(ctx, path); !errors.Is(err, ffmpeg.ErrUnreadable) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSlimStopsWithItsContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := mediatest.Make(t, dir, "in.mp4", mediatest.Spec{Width: 1280, Height: 720, Seconds: 120, FPS: 30})
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once atomic.Bool
	err := ffmpeg.Slim(ctx, in, filepath.Join(dir, "out.mp4"), ffmpeg.SlimOptions{Expected: 120 * time.Second,
		Progress: func(float64) {
			if once.CompareAndSwap(false, true) {
				close(started)
				cancel()
			}
		}})
	<-started
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
}

// A decode takes the CPUs the process may use (GOMAXPROCS: a container's
// CPU limit), not the machine's cores. Not parallel: it sets GOMAXPROCS
// below the cores, so that the two differ.
func TestDecodersTakeTheCPUsTheProcessMayUse(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for _, args := range [][]string{ffmpeg.SlimArgs("in", "out", ffmpeg.SlimOptions{}), ffmpeg.FramesArgs("in", "dir", []int{1}, 0, false)} {
		if line := strings.Join(args, " "); !strings.Contains(line, "-threads 1 -i in") {
			t.Errorf("args %v: not decoded on GOMAXPROCS (1) threads", args)
		}
	}
}

func TestSlimArgsUseOneFilterChain(t *testing.T) {
	t.Parallel()
	args := ffmpeg.SlimArgs("in", "out", ffmpeg.SlimOptions{MaxDuration: 20 * time.Minute})
	vf := 0
	for i, a := range args {
		if a == "-vf" {
			vf++
			if args[i+1] != "fps=1,scale=-2:'min(720,trunc(ih/2)*2)'" {
				t.Fatalf("filter %q", args[i+1])
			}
		}
	}
	if vf != 1 || !strings.Contains(strings.Join(args, " "), "-t 1200.000") {
		t.Fatalf("args %v", args)
	}
	// With the screenshots: one graph, fps first and split after it (one
	// decode, the same frames), both outputs capped.
	args = ffmpeg.SlimArgs("in", "out", ffmpeg.SlimOptions{MaxDuration: 20 * time.Minute, Frames: "shots"})
	line := strings.Join(args, " ")
	if slices.Contains(args, "-vf") || strings.Count(line, "-filter_complex") != 1 ||
		!strings.Contains(line, "[0:V:0]fps=1,split=2") || strings.Count(line, "-t 1200.000") != 2 {
		t.Fatalf("args %v", args)
	}
}

// carried lists the tags and side data of a file that must not survive:
// location, device make and model, rotation.
func carried(t *testing.T, path string) string {
	t.Helper()
	raw, err := exec.Command("ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Format struct {
			Tags map[string]string `json:"tags"`
		} `json:"format"`
		Streams []struct {
			Tags     map[string]string `json:"tags"`
			SideData []map[string]any  `json:"side_data_list"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	var leaks []string
	check := func(tags map[string]string) {
		for k, v := range tags {
			for _, bad := range []string{"location", "make", "model", "rotate", "creation_time"} {
				if strings.Contains(strings.ToLower(k), bad) {
					leaks = append(leaks, k+"="+v)
				}
			}
		}
	}
	check(out.Format.Tags)
	for _, s := range out.Streams {
		check(s.Tags)
		for _, sd := range s.SideData {
			leaks = append(leaks, fmt.Sprint(sd["side_data_type"]))
		}
	}
	return strings.Join(leaks, ", ")
}

// Uploads whose content opens another file — an HLS playlist, a concat list —
// are refused before any demuxer reads what they name. The control run shows
// each one is live: plain ffprobe, without our guard, opens the local file.
func TestHostileContainersAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	secret := mediatest.Make(t, dir, "secret.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	for name, upload := range map[string]string{
		"hls playlist, absolute path": mediatest.Playlist(t, dir, "hls.mp4", secret),
		"concat list, relative path":  mediatest.Concat(t, dir, "concat.mp4", filepath.Base(secret)),
	} {
		t.Run(name, func(t *testing.T) {
			control, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv", upload).Output()
			if err != nil || !strings.Contains(string(control), "h264") {
				t.Fatalf("control: plain ffprobe does not read the listed file (%v %s): the test proves nothing", err, control)
			}
			if p, err := ffmpeg.ProbeFile(ctx, upload); !errors.Is(err, ffmpeg.ErrUnreadable) {
				t.Fatalf("probe: %+v %v", p, err)
			}
			out := filepath.Join(t.TempDir(), "slim.mp4")
			var ee *ffmpeg.Error
			if err := ffmpeg.Slim(ctx, upload, out, ffmpeg.SlimOptions{}); !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "not on whitelist") {
				t.Fatalf("slim: %v", err)
			}
			if _, err := ffmpeg.ProbeFile(ctx, out); err == nil {
				t.Fatal("a slim copy was written")
			}
		})
	}
}

// A recording whose first video stream is its cover art gives a slim copy of
// the recording, not of the cover.
func TestCoverArtIsNotTheVideo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := mediatest.CoverFirst(t, dir, "cover.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 4, Audio: true})
	streams, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream_disposition=attached_pic",
		"-of", "csv=p=0", in).Output()
	if err != nil || strings.TrimSpace(string(streams)) != "1" {
		t.Fatalf("the cover is not the first video stream (%v %q): the test proves nothing", err, streams)
	}
	p, err := ffmpeg.ProbeFile(context.Background(), in)
	if err != nil || p.Width != 640 || p.Height != 360 {
		t.Fatalf("probe %+v %v", p, err)
	}
	out := filepath.Join(dir, "slim.mp4")
	if err := ffmpeg.Slim(context.Background(), in, out, ffmpeg.SlimOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := ffmpeg.ProbeFile(context.Background(), out)
	if err != nil || got.Frames < 3 || got.Height != 360 {
		t.Fatalf("slim copy %+v %v: want the 4-second recording at 1 fps", got, err)
	}
}

// MaxFrames caps the screenshots the transcode writes, not the slim copy:
// the first ones, as many as were booked.
func TestMaxFramesCapsTheScreenshotsOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := mediatest.Make(t, dir, "in.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 8})
	out, shots := filepath.Join(dir, "slim.mp4"), t.TempDir()
	if err := ffmpeg.Slim(context.Background(), in, out, ffmpeg.SlimOptions{MaxDuration: time.Minute, Frames: shots, MaxFrames: 3}); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(shots, "*.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	want := []string{filepath.Join(shots, ffmpeg.FrameFile(0)), filepath.Join(shots, ffmpeg.FrameFile(1)), filepath.Join(shots, ffmpeg.FrameFile(2))}
	if !slices.Equal(files, want) {
		t.Errorf("screenshots %v; want the first three", files)
	}
	if got, err := ffmpeg.ProbeFile(context.Background(), out); err != nil || got.Frames < 8 {
		t.Errorf("the slim copy: %d frames, %v; want all 8 seconds", got.Frames, err)
	}
}

// A stream whose codec ffprobe cannot name (no decoder here reads it) is
// never the one taken: a narration in an unknown codec leaves the file
// without narration, a picture in one without a picture it can read.
func TestStreamsNoDecoderReadsAreNotTaken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := mediatest.Make(t, dir, "good.mkv", mediatest.Spec{Width: 320, Height: 240, Seconds: 3, Audio: true, Format: "mkv"})
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		old, new       string
		audio, video   bool
		unknownPicture bool
	}{
		"narration": {"A_AAC", "A_QQQ", false, true, false},
		"picture":   {"V_MPEG4/ISO/AVC", "V_QQQQQQQQQQQQQ", true, false, true},
	} {
		if bytes.Count(b, []byte(c.old)) != 1 {
			t.Fatalf("%s: %q is not once in the file", name, c.old)
		}
		f := mediatest.File(t, dir, name+".mkv", bytes.Replace(b, []byte(c.old), []byte(c.new), 1))
		p, err := ffmpeg.ProbeFile(context.Background(), f)
		if err != nil || p.HasAudio != c.audio || p.HasVideo != c.video || p.UnknownVideo != c.unknownPicture {
			t.Errorf("%s: audio %v, video %v, unknown picture %v, %v", name, p.HasAudio, p.HasVideo, p.UnknownVideo, err)
		}
	}
}

// A file whose first picture no decoder reads and whose second is fine is
// accepted now (ProbeFile takes the second: VideoStream 1, and the slim
// copy maps 0:V:1); the screenshots taken again from the upload (Frames,
// after a reused slim copy or an understated container) must come from
// that same picture, not from 0:V:0.
func TestFramesTakesThePictureTheProbeChose(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	two := mediatest.TwoPictures(t, dir, "two.mkv", 320, 240, 30, 4)
	b, err := os.ReadFile(two)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("V_MPEG4/ISO/AVC")); n != 2 {
		t.Fatalf("codec id %d times", n)
	}
	f := mediatest.File(t, dir, "first-unknown.mkv", bytes.Replace(b, []byte("V_MPEG4/ISO/AVC"), []byte("V_QQQQQQQQQQQQQ"), 1))
	p, err := ffmpeg.ProbeFile(context.Background(), f)
	if err != nil || !p.HasVideo || p.UnknownVideo || p.VideoStream != 1 {
		t.Fatalf("probe %+v, %v: want the second picture taken", p, err)
	}
	// The slim copy (what the transcode makes) is fine.
	if err := ffmpeg.Slim(context.Background(), f, filepath.Join(dir, "slim.mp4"), ffmpeg.SlimOptions{VideoStream: p.VideoStream, AudioStream: p.AudioStream, NoAudio: !p.HasAudio}); err != nil {
		t.Fatalf("slim: %v", err)
	}
	// The retake path.
	shots := t.TempDir()
	if err := ffmpeg.Frames(context.Background(), f, shots, []int{2}, p.VideoStream, false); err != nil {
		t.Fatalf("Frames on the file the probe accepted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(shots, ffmpeg.FrameFile(2))); err != nil {
		t.Fatalf("no screenshot of second 2: %v", err)
	}
}
