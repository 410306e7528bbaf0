// Package mediatest makes the recordings the tests and benchmarks run
// through the real ffmpeg: generated with lavfi sources, never downloaded.
// For tests only.
package mediatest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/runops/runops/internal/ocr"
)

// Spec describes a recording to generate.
type Spec struct {
	Width, Height int
	FPS           int
	Seconds       float64
	Audio         bool
	Format        string // mp4 (default), mov, mkv, webm, webm-live (no duration, as browsers write it)
	Rotate        int    // display rotation tag (90, 180, 270)
	VFR           bool   // irregular frame timing
	ScreenLike    bool   // a static page with a small moving part, as screen recordings are
	Clock         bool   // a flat grey a step brighter every second (up to 7 s): ClockSecond tells the second of a picture
	Tags          bool   // location, make and model, as phones write them
	Codec         string // video encoder; default libx264 (or libvpx for webm); rawvideo for an uncompressed picture
	Preset        string // libx264 preset; default ultrafast (veryfast: B-frames, as OBS records)
	OneKeyframe   bool   // a single keyframe, at the start, as browsers' MediaRecorder writes
	FullRange     bool   // full-range ("PC") luma, as some screen recorders write (libx264 only)
	Texts         []Text // drawn, dark on a light page, the whole recording long
}

// Text is text drawn on the recording (lines split at \n), its top left
// at X, Y pixels, Size pixels high; Scroll moves it up that many pixels a
// second, back down every 100 pixels (a page being read).
type Text struct {
	Text               string
	X, Y, Size, Scroll int
}

// Make writes the recording to dir/name and returns its path. It fails the
// test if ffmpeg is missing or fails: it never skips.
func Make(t testing.TB, dir, name string, s Spec) string {
	t.Helper()
	if s.FPS == 0 {
		s.FPS = 30
	}
	out := filepath.Join(dir, name)
	size := strconv.Itoa(s.Width) + "x" + strconv.Itoa(s.Height)
	args := []string{"-hide_banner", "-v", "error", "-nostdin", "-y"}
	video := "testsrc2=size=" + size + ":rate=" + strconv.Itoa(s.FPS)
	if s.ScreenLike {
		video = "color=c=0xf4f4f4:size=" + size + ":rate=" + strconv.Itoa(s.FPS) + "[bg];" +
			"testsrc=size=" + strconv.Itoa(max(s.Width/8, 32)) + "x" + strconv.Itoa(max(s.Height/8, 32)) + ":rate=" + strconv.Itoa(s.FPS) + "[fg];" +
			"[bg][fg]overlay=x='mod(t*60,W-w)':y='H/3'"
	}
	if s.Clock {
		video = "color=c=black:size=" + size + ":rate=" + strconv.Itoa(s.FPS) +
			",format=yuv420p,geq=lum='16+" + strconv.Itoa(clockStep) + "*floor(T)':cb=128:cr=128"
	}
	if len(s.Texts) > 0 {
		video = "color=c=0xf4f4f4:size=" + size + ":rate=" + strconv.Itoa(s.FPS)
		for i, tx := range s.Texts {
			file := filepath.Join(dir, name+".text"+strconv.Itoa(i))
			if err := os.WriteFile(file, []byte(tx.Text), 0o600); err != nil {
				t.Fatal(err)
			}
			video += ",drawtext=textfile='" + file + "':fontcolor=0x1e1e1e:fontsize=" + strconv.Itoa(tx.Size) +
				":x=" + strconv.Itoa(tx.X) + ":y=" + strconv.Itoa(tx.Y)
			if tx.Scroll > 0 {
				video += "-mod(t*" + strconv.Itoa(tx.Scroll) + "\\,100)"
			}
		}
	}
	args = append(args, "-f", "lavfi", "-i", video)
	if s.Audio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100")
	}
	args = append(args, "-t", strconv.FormatFloat(s.Seconds, 'f', 3, 64))
	if s.VFR {
		args = append(args, "-vf", "select='not(mod(n\\,3))+not(mod(n\\,7))'", "-fps_mode", "vfr")
	}
	if s.Tags {
		args = append(args, "-metadata", "location=+48.8577+002.2950/", "-metadata", "make=Apple",
			"-metadata", "model=iPhone 12", "-metadata", "com.apple.quicktime.location.ISO6709=+48.8577+002.2950/")
	}
	if s.OneKeyframe {
		args = append(args, "-g", "1000000", "-sc_threshold", "0")
	}
	switch s.Format {
	case "webm", "webm-live":
		codec := s.Codec
		if codec == "" {
			codec = "libvpx"
		}
		args = append(args, "-c:v", codec, "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M", "-pix_fmt", "yuv420p")
		if s.Audio {
			args = append(args, "-c:a", "libopus")
		}
		if s.Format == "webm-live" {
			args = append(args, "-live", "1")
		}
		args = append(args, "-f", "webm")
	default:
		codec := s.Codec
		if codec == "" {
			codec = "libx264"
		}
		args = append(args, "-c:v", codec)
		if codec == "libx264" {
			preset := s.Preset
			if preset == "" {
				preset = "ultrafast"
			}
			args = append(args, "-preset", preset)
		}
		pix := "yuv420p"
		if s.FullRange {
			pix = "yuvj420p"
		}
		args = append(args, "-pix_fmt", pix)
		if s.Audio {
			args = append(args, "-c:a", "aac")
		}
		args = append(args, "-f", formatOf(s))
	}
	run(t, append(args, out+".tmp")...)
	if s.Rotate != 0 {
		run(t, "-v", "error", "-nostdin", "-y", "-i", out+".tmp", "-map", "0", "-c", "copy",
			"-metadata:s:v:0", "rotate="+strconv.Itoa(s.Rotate), "-f", formatOf(s), out+".rot")
		if err := os.Rename(out+".rot", out+".tmp"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

func formatOf(s Spec) string {
	switch s.Format {
	case "mov":
		return "mov"
	case "mkv":
		return "matroska"
	case "webm", "webm-live":
		return "webm"
	}
	return "mp4"
}

// AudioOnly writes an AAC recording with no picture.
func AudioOnly(t testing.TB, dir, name string, seconds float64) string {
	t.Helper()
	out := filepath.Join(dir, name)
	run(t, "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "sine=frequency=500", "-t",
		strconv.FormatFloat(seconds, 'f', 3, 64), "-c:a", "aac", "-f", "mp4", out)
	return out
}

// Truncated writes a recording cut in the middle (its index, at the end of
// the file, is lost, as in an interrupted upload).
func Truncated(t testing.TB, dir, name string) string {
	t.Helper()
	full := Make(t, dir, name+".full", Spec{Width: 320, Height: 240, Seconds: 3, Audio: true})
	b, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// File writes arbitrary bytes (random data, a PDF, nothing) under dir.
func File(t testing.TB, dir, name string, content []byte) string {
	t.Helper()
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func run(t testing.TB, args ...string) {
	t.Helper()
	if err := FFmpeg(args...); err != nil {
		t.Fatal(err)
	}
}

// FFmpeg runs ffmpeg with args; its error says what ffmpeg printed.
func FFmpeg(args ...string) error {
	out, err := exec.Command("ffmpeg", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ffmpeg %v: %v\n%s", args, err, out)
	}
	return nil
}

// CoverFirst writes an MP4 recording whose first video stream is cover art
// (an attached picture), as files with the cover's metadata ahead of the
// tracks are: ffmpeg's muxer writes it after them, so the metadata box is
// moved ahead of the track boxes.
func CoverFirst(t testing.TB, dir, name string, s Spec) string {
	t.Helper()
	video := Make(t, dir, name+".video.mp4", s)
	cover := filepath.Join(dir, name+".cover.jpg")
	run(t, "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "color=c=red:size=320x240", "-frames:v", "1", cover)
	muxed := filepath.Join(dir, name+".muxed.mp4")
	run(t, "-v", "error", "-nostdin", "-y", "-i", video, "-i", cover, "-map", "0", "-map", "1", "-c", "copy",
		"-disposition:v:1", "attached_pic", "-f", "mp4", muxed)
	b, err := os.ReadFile(muxed)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, udtaFirst(t, b), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// udtaFirst moves moov's udta box right after its mvhd box. Nothing else
// moves, so the sample offsets into mdat stay right.
func udtaFirst(t testing.TB, b []byte) []byte {
	t.Helper()
	type box struct {
		typ        string
		start, end int
	}
	boxes := func(from, to int) []box {
		var out []box
		for off := from; off+8 <= to; {
			size := int(binary.BigEndian.Uint32(b[off:]))
			if size < 8 || off+size > to {
				t.Fatalf("mediatest: unexpected box size %d at %d", size, off)
			}
			out = append(out, box{string(b[off+4 : off+8]), off, off + size})
			off += size
		}
		return out
	}
	for _, top := range boxes(0, len(b)) {
		if top.typ != "moov" {
			continue
		}
		var head, udta, rest []byte
		for _, c := range boxes(top.start+8, top.end) {
			switch c.typ {
			case "mvhd":
				head = append(head, b[c.start:c.end]...)
			case "udta":
				udta = append(udta, b[c.start:c.end]...)
			default:
				rest = append(rest, b[c.start:c.end]...)
			}
		}
		if udta == nil {
			t.Fatal("mediatest: no udta box to move")
		}
		out := append([]byte{}, b[:top.start+8]...)
		out = append(append(append(out, head...), udta...), rest...)
		return append(out, b[top.end:]...)
	}
	t.Fatal("mediatest: no moov box")
	return nil
}

// Playlist writes a text HLS playlist that lists the local file target, and
// Concat an ffconcat list naming it: uploads that, opened by their own
// demuxers, would read another file of the worker's disk.
func Playlist(t testing.TB, dir, name, target string) string {
	return File(t, dir, name, []byte("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n"+target+"\n#EXT-X-ENDLIST\n"))
}

// Concat: see Playlist.
func Concat(t testing.TB, dir, name, target string) string {
	return File(t, dir, name, []byte("ffconcat version 1.0\nfile '"+target+"'\n"))
}

// clockStep is how much brighter (in limited-range luma) a Clock recording
// gets every second.
const clockStep = 30

// ClockSecond reads the JPEG at path, a picture of a Clock recording, and
// tells which second of the recording it shows.
func ClockSecond(t testing.TB, path string) int {
	t.Helper()
	return int(math.Round(MeanLuma(t, path) / ClockLuma(1)))
}

// ClockLuma is the mean luma a faithful JPEG of second n of a Clock
// recording has: JPEG luma is full range, so the recording's steps of
// clockStep become clockStep*255/219.
func ClockLuma(n int) float64 { return float64(n) * clockStep * 255.0 / 219.0 }

// DecodeJPEG reads the JPEG at path, failing the test if it is not one.
func DecodeJPEG(t testing.TB, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := jpeg.Decode(f)
	if err != nil {
		t.Fatalf("%s is not a JPEG: %v", path, err)
	}
	return img
}

// ScreenText is what OCR reads on the picture at path, a line of text per
// line read.
func ScreenText(t testing.TB, path string) string {
	t.Helper()
	lines, err := ocr.Read(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range lines {
		out = append(out, l.Text)
	}
	return strings.Join(out, "\n")
}

// MeanLuma is the mean luma of the JPEG at path.
func MeanLuma(t testing.TB, path string) float64 {
	t.Helper()
	img := DecodeJPEG(t, path)
	ycc, ok := img.(*image.YCbCr)
	if !ok {
		t.Fatalf("%s: a %T, not a YCbCr JPEG", path, img)
	}
	sum := 0
	for _, y := range ycc.Y {
		sum += int(y)
	}
	return float64(sum) / float64(len(ycc.Y))
}

// Patched writes the file at path with old, which must occur once in it,
// replaced by new (of the same length), as name beside it: a container made
// to say what is not so.
func Patched(t testing.TB, path, name string, old, new []byte) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, old); n != 1 || len(old) != len(new) {
		t.Fatalf("mediatest: %q is %d times in %s (want once), or not as long as %q", old, n, path, new)
	}
	return File(t, filepath.Dir(path), name, bytes.Replace(b, old, new, 1))
}

// MatroskaDuration is the Duration element ffmpeg writes into a Matroska
// file's Segment Info (its TimecodeScale 1 ms): its ID, its size (8) and
// seconds in milliseconds as a big-endian float64. Patched with another,
// the file says it lasts that long.
func MatroskaDuration(seconds float64) []byte {
	return binary.BigEndian.AppendUint64([]byte{0x44, 0x89, 0x88}, math.Float64bits(seconds*1000))
}

// Blink writes an MP4 whose picture lasts 0.3 s beside 30 s of sound: a
// recorder that lost the screen and kept the microphone. fps=1 keeps no
// frame of the picture.
func Blink(t testing.TB, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	run(t, "-v", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30:duration=0.3",
		"-f", "lavfi", "-i", "sine=sample_rate=44100:duration=30",
		"-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mp4", out)
	return out
}

// TwoPictures writes a Matroska file of two H.264 pictures of w×h at fps,
// seconds long, the first a moving test pattern, the second a still one.
func TwoPictures(t testing.TB, dir, name string, w, h, fps, seconds int) string {
	t.Helper()
	out := filepath.Join(dir, name)
	size := fmt.Sprintf("size=%dx%d:rate=%d:duration=%d", w, h, fps, seconds)
	run(t, "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2="+size, "-f", "lavfi", "-i", "testsrc="+size,
		"-map", "0", "-map", "1", "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", out)
	return out
}
