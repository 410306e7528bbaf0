package pipeline_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/mediatest"
)

// mkvDuration makes a Matroska recording of seconds whose header says it
// lasts claimed seconds.
func mkvDuration(t *testing.T, dir, name string, seconds, claimed float64) string {
	t.Helper()
	in := mediatest.Make(t, dir, name+".true.mkv", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: seconds, Format: "mkv"})
	return mediatest.Patched(t, in, name, mediatest.MatroskaDuration(seconds), mediatest.MatroskaDuration(claimed))
}

// earlyAndLate is the model's answer for a recording of a minute: a step
// at 2 s and one at 45 s.
var earlyAndLate = chain(
	`{"id": "early", "type": "task", "label": "Open the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:02", "evidence": "shown"}`,
	`{"id": "late", "type": "task", "label": "Save the page", "intent": "i", "context": "", "parent_id": "", "timestamp": "00:00:45", "evidence": "shown"}`,
)

// bothScreenshots runs file with earlyAndLate and checks that it completes
// with a screenshot for both steps.
func bothScreenshots(t *testing.T, r *rig, file string) {
	t.Helper()
	r.ai.Script(geminitest.JSON(earlyAndLate))
	j := r.finished(r.submit(file, nil))
	if got := outcome(j); got != done {
		t.Fatalf("ended %q", got)
	}
	checkFrames(t, j, `{"count":2,"missing":[]}`)
}

// A 21½-minute recording whose Matroska header says 10 seconds is refused
// for its length: what the transcode plays decides, not the header. (It was
// cut at 1,200 s without a word, and completed.)
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

// A video track whose picture lasts well under half a second, beside
// 30 seconds of narration, is refused as having no picture: validate sees
// a picture, but fps=1 keeps no frame of it, and the slim copy, sound only,
// is not sent to Gemini. (It was, and the job completed with no
// screenshot.)
func TestASlimCopyWithoutAPictureIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	blink := mediatest.Blink(t, r.dir, "blink.mp4")
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
// video, and becomes an SOP: ffprobe's duration, the span of its
// timestamps, is 26 hours, and refused it as that long.
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

// A narration track in a codec no decoder here reads is left out (the SOP
// needs the pictures), and a picture in one gets the unreadable-video
// sentence. Both ended with "could not be converted; it may be damaged ...
// upload the recording again", which the person could only follow to the
// same failure.
func TestUndecodableStreamsEndWithAnActionableSentence(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	good := mediatest.Make(t, r.dir, "good.mkv", mediatest.Spec{Width: 320, Height: 240, Seconds: 3, Audio: true, Format: "mkv"})
	cases := map[string]struct {
		file, says string
	}{
		"narration no decoder reads": {mediatest.Patched(t, good, "sound.mp4", []byte("A_AAC"), []byte("A_QQQ")), done},
		"picture no decoder reads": {mediatest.Patched(t, good, "picture.mp4", []byte("V_MPEG4/ISO/AVC"), []byte("V_QQQQQQQQQQQQQ")),
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
// (TestMaxFramesCapsTheScreenshotsOnly), and the steps past them are taken
// again from the upload.
func TestAnUnderstatedRecordingKeepsItsLateScreenshots(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	bothScreenshots(t, r, mkvDuration(t, r.dir, "liar.mp4", 60, 10))
}

// A recording whose first picture no decoder reads and whose second is
// fine is accepted (the slim copy takes 0:V:1). When it plays longer than
// its container says, the late steps' screenshots are taken again from
// the upload: from the same picture, not from the unreadable 0:V:0.
func TestRetakenScreenshotsComeFromThePictureTheSlimCopyTook(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	two := mediatest.TwoPictures(t, r.dir, "two.mkv", 64, 64, 1, 60)
	says10 := mediatest.Patched(t, two, "says10.mkv", mediatest.MatroskaDuration(60), mediatest.MatroskaDuration(10))
	// The first picture: no decoder (both are H.264: the first codec id is
	// patched; Patched wants it once, so the second is set apart first).
	b, err := os.ReadFile(says10)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Index(b, []byte("V_MPEG4/ISO/AVC"))
	if first < 0 || bytes.Count(b, []byte("V_MPEG4/ISO/AVC")) != 2 {
		t.Fatalf("%d codec ids", bytes.Count(b, []byte("V_MPEG4/ISO/AVC")))
	}
	copy(b[first:], "V_QQQQQQQQQQQQQ")
	bothScreenshots(t, r, mediatest.File(t, r.dir, "liar.mp4", b))
}
