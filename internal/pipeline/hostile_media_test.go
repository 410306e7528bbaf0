package pipeline_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/mediatest"
)

// patchFile rewrites the bytes old (which must occur exactly once) of the
// file at path with new (same length), into a new file.
func patchFile(t *testing.T, path, name string, old, new []byte) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, old); n != 1 || len(old) != len(new) {
		t.Fatalf("%q occurs %d times in %s", old, n, path)
	}
	return mediatest.File(t, filepath.Dir(path), name, bytes.Replace(b, old, new, 1))
}

// mkvDuration makes a Matroska recording of seconds whose Segment Info
// Duration element says claimed seconds instead.
func mkvDuration(t *testing.T, dir, name string, seconds, claimed float64) string {
	t.Helper()
	in := mediatest.Make(t, dir, name+".true.mkv", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: seconds, Format: "mkv"})
	elem := func(ms float64) []byte { // ID 0x4489, size 8, big-endian float64 (TimecodeScale 1 ms)
		return binary.BigEndian.AppendUint64([]byte{0x44, 0x89, 0x88}, math.Float64bits(ms))
	}
	return patchFile(t, in, name, elem(seconds*1000), elem(claimed*1000))
}

// A recording's length is what its container says. A 21½-minute
// recording whose Matroska header says 10 seconds is not refused: the
// transcode cuts it at 1,200 s without a word, the job completes, and the
// screenshots booked on disk were for 11 seconds, not 1,200.
func TestAContainerThatUnderstatesItsLengthIsStillRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	liar := mkvDuration(t, r.dir, "liar.mp4", 21*60+30, 10)
	j := r.finished(r.submit(liar, nil))
	if got := outcome(j); !strings.Contains(got, "20 minutes") {
		slim, _ := j.Metadata["slim"].(map[string]any)
		t.Fatalf("a 21 min 30 s recording ended %q (slim copy %v s, %v frames); want the 20-minute limit's sentence",
			got, slim["duration_s"], slim["frames"])
	}
}

// A video track whose picture lasts less than half a second, beside
// 30 seconds of narration: validate sees a picture, fps=1 keeps no frame
// of it, and the slim copy, sound only, goes to Gemini; the job completes
// with no screenshot ("the video has no picture at ...") instead of being
// refused as audio only.
func TestASlimCopyWithoutAPictureIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	blink := filepath.Join(r.dir, "blink.mp4")
	if err := mediatest.FFmpeg("-v", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30:duration=0.3",
		"-f", "lavfi", "-i", "sine=sample_rate=44100:duration=30",
		"-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mp4", blink); err != nil {
		t.Fatal(err)
	}
	id := r.submit(blink, nil)
	j := r.finished(id)
	if got := outcome(j); !strings.Contains(got, "The file has no picture") {
		slim, _ := j.Metadata["slim"].(map[string]any)
		t.Errorf("ended %q, slim copy %v frames, Gemini asked %d time(s); want the no-picture sentence",
			got, slim["frames"], len(r.ai.Requests()))
	}
}

// An MPEG-TS whose timestamps go back (two recordings one after the
// other, the second starting earlier: a recorder restarted) is 20 s of
// video, and ffmpeg makes a 20 s slim copy of it; but ffprobe's duration
// is the span of its timestamps, and the job is refused as 26 hours long.
func TestTimestampsThatGoBackAreNotAnHoursLongVideo(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var parts [][]byte
	for i, offset := range []string{"1000", "10"} {
		part := filepath.Join(r.dir, "part"+string(rune('0'+i))+".ts")
		if err := mediatest.FFmpeg("-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
			"-f", "lavfi", "-i", "sine", "-t", "10", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
			"-output_ts_offset", offset, "-f", "mpegts", part); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(part)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, b)
	}
	ts := mediatest.File(t, r.dir, "restart.mp4", bytes.Join(parts, nil))
	if got := outcome(r.finished(r.submit(ts, nil))); got != done {
		t.Fatalf("a 20 s recording ended %q", got)
	}
}

// A recording with a good picture and a narration track in a codec this
// ffmpeg cannot decode, or a picture it cannot decode: both end with
// "could not be converted; it may be damaged ... upload the recording
// again", which the person can only follow to the same failure. The
// narration is not needed for an SOP's pictures; a picture no decoder reads
// is "not a video we can read".
func TestUndecodableStreamsEndWithAnActionableSentence(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	good := mediatest.Make(t, r.dir, "good.mkv", mediatest.Spec{Width: 320, Height: 240, Seconds: 3, Audio: true, Format: "mkv"})
	cases := map[string]struct {
		file, says string
	}{
		"narration no decoder reads": {patchFile(t, good, "sound.mp4", []byte("A_AAC"), []byte("A_QQQ")), done},
		"picture no decoder reads": {patchFile(t, good, "picture.mp4", []byte("V_MPEG4/ISO/AVC"), []byte("V_QQQQQQQQQQQQQ")),
			"The file could not be read as a video"},
	}
	for name, c := range cases {
		if got := outcome(r.finished(r.submit(c.file, nil))); !strings.Contains(got, c.says) {
			t.Errorf("%s: ended %q; want %q", name, got, c.says)
		}
	}
}

// A recording that plays longer than its container says, within the
// limit, completes with a screenshot for its late steps too: the transcode
// writes no more screenshots than were booked from the container's length
// (it wrote one a second of all it played: on a real recording, hundreds of
// megabytes nobody booked), and the steps past them are taken again from
// the upload.
func TestAnUnderstatedRecordingKeepsItsLateScreenshots(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	liar := mkvDuration(t, r.dir, "liar.mp4", 60, 10)
	r.ai.Script(geminitest.JSON(chain(
		`{"id": "early", "type": "task", "label": "Open the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:02", "evidence": "shown"}`,
		`{"id": "late", "type": "task", "label": "Save the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:45", "evidence": "shown"}`,
	)))
	j := r.finished(r.submit(liar, nil))
	if got := outcome(j); got != done {
		t.Fatalf("a 60 s recording whose header says 10 s ended %q", got)
	}
	checkFrames(t, j, `{"count":2,"missing":[]}`)
}

// A recording whose first picture no decoder reads and whose second is
// fine is accepted (the slim copy takes 0:V:1). When it plays longer than
// its container says, the late steps' screenshots are taken again from
// the upload: from the same picture, not from the unreadable 0:V:0.
func TestRetakenScreenshotsComeFromThePictureTheSlimCopyTook(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	two := filepath.Join(r.dir, "two.mkv")
	if err := mediatest.FFmpeg("-v", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=64x64:rate=1:duration=60",
		"-f", "lavfi", "-i", "testsrc=size=64x64:rate=1:duration=60",
		"-map", "0", "-map", "1", "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", two); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(two)
	if err != nil {
		t.Fatal(err)
	}
	elem := func(ms float64) []byte {
		return binary.BigEndian.AppendUint64([]byte{0x44, 0x89, 0x88}, math.Float64bits(ms))
	}
	if bytes.Count(b, elem(60000)) != 1 || bytes.Count(b, []byte("V_MPEG4/ISO/AVC")) != 2 {
		t.Fatalf("duration %d, codec ids %d", bytes.Count(b, elem(60000)), bytes.Count(b, []byte("V_MPEG4/ISO/AVC")))
	}
	b = bytes.Replace(b, elem(60000), elem(10000), 1)                             // the container says 10 s
	b = bytes.Replace(b, []byte("V_MPEG4/ISO/AVC"), []byte("V_QQQQQQQQQQQQQ"), 1) // the first picture: no decoder
	f := mediatest.File(t, r.dir, "liar.mp4", b)
	r.ai.Script(geminitest.JSON(chain(
		`{"id": "early", "type": "task", "label": "Open the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:02", "evidence": "shown"}`,
		`{"id": "late", "type": "task", "label": "Save the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:45", "evidence": "shown"}`,
	)))
	j := r.finished(r.submit(f, nil))
	if got := outcome(j); got != done {
		t.Fatalf("ended %q", got)
	}
	checkFrames(t, j, `{"count":2,"missing":[]}`)
}
