// Package ffmpeg runs ffprobe and ffmpeg on local files: probing a recording
// and down-sampling it to the slim copy Gemini gets (1 frame per second, at
// most 720 pixels high, H.264 CRF 32, narration kept as small mono AAC). Child
// processes die with their context and with the worker (Pdeathsig). It knows
// nothing of jobs, storage or the limits of the product.
package ffmpeg

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/runops/runops/internal/child"
)

// Probe is what ffprobe tells of a file, in the shape of metadata.probe.
type Probe struct {
	Container  string  `json:"container"`
	VideoCodec string  `json:"video_codec"`
	AudioCodec string  `json:"audio_codec,omitempty"`
	Width      int     `json:"width"`  // as displayed (rotation applied)
	Height     int     `json:"height"` // as displayed (rotation applied)
	Rotation   int     `json:"rotation"`
	Duration   float64 `json:"duration_s"` // 0 when the container does not say (e.g. browser WebM)
	FPS        float64 `json:"fps"`
	Size       int64   `json:"size_bytes"`
	HasAudio   bool    `json:"has_audio"`
	HasVideo   bool    `json:"-"`
	// UnknownVideo: a picture in a codec ffprobe cannot name, and no other
	// (HasVideo false). A codec it names but this build cannot decode still
	// fails at the transcode.
	UnknownVideo bool `json:"-"`
	// VideoStream and AudioStream are the streams the slim copy takes: the
	// first picture (not an attached one) and the first narration whose
	// codec ffmpeg knows, counted among the file's pictures (0:V:n) and
	// sounds (0:a:n).
	VideoStream int `json:"-"`
	AudioStream int `json:"-"`
	Frames      int `json:"-"` // video frames, when the container says
	// BFrames is the video's B-frame reorder depth (has_b_frames): when
	// positive, reference frames come at least every BFrames+1 frames.
	BFrames int `json:"b_frames"`
}

// ErrUnreadable means ffprobe could not read the file as media.
var ErrUnreadable = errors.New("not a readable media file")

// Demuxers are the only containers ffprobe and ffmpeg may open. They choose
// the demuxer from the content, not the name, and some demuxers open other
// files: an HLS playlist uploaded as raw/<id>.mp4 reads every local file it
// lists, a concat list the files it names (docs/dependencies.md, ffmpeg).
// None of these (mov/mp4, Matroska/WebM, AVI, FLV, MPEG-TS) does; anything
// else fails with "Format not on whitelist" and is refused as unreadable.
const Demuxers = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts"

// inputGuard goes before every input: the demuxer allow-list, and plain
// files as the only protocol.
var inputGuard = []string{"-format_whitelist", Demuxers, "-protocol_whitelist", "file"}

// decoderThreads caps the threads a decode takes at the CPUs the process
// may use (GOMAXPROCS: a container's CPU limit), not the machine's cores:
// each decoder thread holds frames, and a 4K recording on a 16-core node
// took 675 MB with 16 of them, 356 MB with 2 (docs/operations.md).
func decoderThreads() []string {
	return []string{"-threads", strconv.Itoa(runtime.GOMAXPROCS(0))}
}

type probeOutput struct {
	Streams []struct {
		CodecType    string            `json:"codec_type"`
		CodecName    string            `json:"codec_name"`
		Width        int               `json:"width"`
		Height       int               `json:"height"`
		AvgFrameRate string            `json:"avg_frame_rate"`
		RFrameRate   string            `json:"r_frame_rate"`
		NbFrames     string            `json:"nb_frames"`
		HasBFrames   int               `json:"has_b_frames"`
		Duration     string            `json:"duration"`
		Tags         map[string]string `json:"tags"`
		SideData     []struct {
			Rotation *float64 `json:"rotation"`
		} `json:"side_data_list"`
		Disposition struct {
			AttachedPic int `json:"attached_pic"`
		} `json:"disposition"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
		Size       string `json:"size"`
	} `json:"format"`
}

// ProbeFile runs ffprobe on path.
func ProbeFile(ctx context.Context, path string) (Probe, error) {
	args := append([]string{"-v", "error"}, inputGuard...)
	args = append(args, "-print_format", "json", "-show_format", "-show_streams", "--", path)
	cmd := child.Command(ctx, "ffprobe", args...)
	stderr := &child.Tail{Max: 4096}
	cmd.Stderr = stderr
	stdout, err := cmd.Output()
	if err != nil {
		if ctx.Err() != nil {
			return Probe{}, ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return Probe{}, fmt.Errorf("%w: %s", ErrUnreadable, stderr)
		}
		return Probe{}, fmt.Errorf("run ffprobe: %w", err)
	}
	var out probeOutput
	if err := json.Unmarshal(stdout, &out); err != nil {
		return Probe{}, fmt.Errorf("%w: ffprobe output: %v", ErrUnreadable, err)
	}
	if len(out.Streams) == 0 {
		return Probe{}, fmt.Errorf("%w: no streams", ErrUnreadable)
	}
	p := Probe{Container: out.Format.FormatName}
	p.Size, _ = strconv.ParseInt(out.Format.Size, 10, 64)
	p.Duration = parseFloat(out.Format.Duration)
	pictures, sounds := 0, 0 // streams seen of each kind, as 0:V:n and 0:a:n count them
	for _, s := range out.Streams {
		// A codec ffprobe has no name for is one no decoder here reads
		// ("Decoder (codec none) not found"): never the stream to take.
		known := s.CodecName != "" && s.CodecName != "none"
		picture := s.CodecType == "video" && s.Disposition.AttachedPic == 0
		switch {
		case picture && !known:
			p.UnknownVideo = p.UnknownVideo || !p.HasVideo
		case picture && !p.HasVideo:
			p.HasVideo, p.VideoCodec, p.VideoStream, p.UnknownVideo = true, s.CodecName, pictures, false
			p.Width, p.Height = s.Width, s.Height
			p.FPS = parseRate(s.AvgFrameRate)
			if p.FPS == 0 {
				p.FPS = parseRate(s.RFrameRate)
			}
			p.Frames, _ = strconv.Atoi(s.NbFrames)
			p.BFrames = s.HasBFrames
			for _, sd := range s.SideData {
				if sd.Rotation != nil {
					p.Rotation = int(math.Round(*sd.Rotation))
				}
			}
			if p.Rotation == 0 && s.Tags["rotate"] != "" {
				p.Rotation, _ = strconv.Atoi(s.Tags["rotate"])
			}
			if r := ((p.Rotation % 360) + 360) % 360; r == 90 || r == 270 {
				p.Width, p.Height = p.Height, p.Width
			}
			if p.Duration == 0 {
				p.Duration = parseFloat(s.Duration)
			}
		case s.CodecType == "audio" && known && !p.HasAudio:
			p.HasAudio, p.AudioCodec, p.AudioStream = true, s.CodecName, sounds
		}
		if picture {
			pictures++
		}
		if s.CodecType == "audio" {
			sounds++
		}
	}
	return p, nil
}

func parseFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0
	}
	return f
}

func parseRate(s string) float64 {
	num, den, ok := strings.Cut(s, "/")
	if !ok {
		return parseFloat(s)
	}
	n, d := parseFloat(num), parseFloat(den)
	if d == 0 {
		return 0
	}
	return math.Round(n/d*1000) / 1000
}

// SlimOptions shape the slim copy.
type SlimOptions struct {
	MaxDuration time.Duration // output capped here (0 = no cap)
	// SkipNonReference lets the decoder skip frames nothing else refers to.
	// At 1 frame per second those are never missed (fps=1 takes the nearest
	// decoded frame, at most a few frames away) and decoding them is most of
	// the cost. Set it only for streams with B-frames, where reference frames
	// are close together; never for streams of unknown structure.
	SkipNonReference bool
	// Frames, when set, is a directory the same run fills with one JPEG per
	// second of the slim copy (FrameFile names them): the very pictures the
	// slim copy shows, at screenshot size; at most MaxFrames of them (0: no
	// cap), the first.
	Frames    string
	MaxFrames int
	// VideoStream and AudioStream are the streams taken (Probe's); NoAudio
	// takes none (the file has no narration ffmpeg can decode). Without
	// them, the first picture and the first sound, if any.
	VideoStream, AudioStream int
	NoAudio                  bool
	// Progress receives out_time / expected duration (0–1); called from the
	// goroutine that reads ffmpeg's progress pipe.
	Progress func(done float64)
	Expected time.Duration // the input's duration, for Progress; 0 = unknown
}

// Screenshots are at most ScreenshotHeight pixels high (never upscaled) and
// written as JPEG with the mjpeg encoder's quantiser ScreenshotQuality (2 is
// the best, 31 the worst): at 3, small text stays sharp; a page of dense text
// at 1080p measured 551 KB a frame, 1.21× what 5 costs and 0.87× what 2 costs
// (docs/dependencies.md, ffmpeg).
const (
	ScreenshotHeight  = 1080
	ScreenshotQuality = 3
)

// FrameBytesPerPixel bounds what one screenshot takes on disk, per pixel
// of its picture: the dense text page measured 0.27.
const FrameBytesPerPixel = 0.3

// FrameFile is the name, inside a Frames directory, of the picture of
// second n: the image2 muxer names each file by its timestamp (-frame_pts),
// which after fps=1 counts seconds from the start of the slim copy.
func FrameFile(n int) string { return fmt.Sprintf("%05d.jpg", n) }

// The one filter that picks the frames: fps first, so only kept frames are
// scaled. slimScale and shotScale size the two outputs: never upscaled, the
// height rounded down to even (libx264 needs it; a JPEG does not mind).
const (
	pickFrames = "fps=1"
	slimScale  = "scale=-2:'min(720,trunc(ih/2)*2)'"
	shotScale  = "zscale=w=-2:h='min(1080,trunc(ih/2)*2)':filter=bicubic:range=full,format=yuvj420p"
)

// shotOutput writes the screenshots: one file per frame, named by its
// second, no metadata.
func shotOutput(dir string) []string {
	return []string{"-an", "-sn", "-dn", "-map_metadata", "-1", "-c:v", "mjpeg", "-q:v", strconv.Itoa(ScreenshotQuality),
		"-f", "image2", "-frame_pts", "1", filepath.Join(dir, "%05d.jpg")}
}

// SlimArgs is the one ffmpeg command line that makes the slim copy: one
// filter chain (fps first, so only kept frames are scaled; never upscaled; the
// height rounded down to even, as libx264 needs), rotation applied by ffmpeg's
// autorotate (so ih is the displayed height) and no rotation tag written,
// every global, stream and chapter metadata (location, make, model) dropped,
// and the input opened only through the demuxer allow-list. With
// opt.Frames, the frames fps=1 keeps are split after it and also written as
// screenshots: one decode for both.
// The narration is resampled to 16 kHz (speech needs no more) with the fast
// AAC coder: at 1 frame per second the default coder cost as much as the video.
func SlimArgs(in, out string, opt SlimOptions) []string {
	args := []string{"-hide_banner", "-nostdin", "-v", "error", "-y"}
	if opt.SkipNonReference {
		args = append(args, "-skip_frame", "noref")
	}
	args = append(args, inputGuard...)
	args = append(args, decoderThreads()...)
	args = append(args, "-i", in)
	// 0:V (capital): the first video stream that is not an attached picture,
	// or a recording with cover art first would become a one-frame copy.
	picture := "0:V:" + strconv.Itoa(opt.VideoStream)
	video := []string{"-map", picture, "-vf", pickFrames + "," + slimScale}
	if opt.Frames != "" {
		args = append(args, "-filter_complex",
			"["+picture+"]"+pickFrames+",split=2[slim][shot];[slim]"+slimScale+"[s];[shot]"+shotScale+"[j]")
		video = []string{"-map", "[s]"}
	}
	sound := []string{"-map", "0:a:" + strconv.Itoa(opt.AudioStream) + "?"}
	if opt.NoAudio {
		sound = nil
	}
	var limit []string
	if opt.MaxDuration > 0 {
		limit = []string{"-t", strconv.FormatFloat(opt.MaxDuration.Seconds(), 'f', 3, 64)}
	}
	args = append(args, "-progress", "pipe:1", "-nostats")
	args = append(args, video...)
	args = append(args, sound...)
	args = append(args,
		"-map_metadata", "-1", "-map_metadata:s", "-1", "-map_chapters", "-1",
		"-c:v", "libx264", "-crf", "32", "-preset", "veryfast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-aac_coder", "fast", "-ac", "1", "-ar", "16000", "-b:a", "32k",
		"-movflags", "+faststart")
	args = append(append(args, limit...), out)
	if opt.Frames != "" {
		args = append(append(append(args, "-map", "[j]"), limit...), shotOutput(opt.Frames)...)
		if opt.MaxFrames > 0 {
			// Before the output's name, with its other options.
			last := len(args) - 1
			args = append(args[:last:last], "-frames:v", strconv.Itoa(opt.MaxFrames), args[last])
		}
	}
	return args
}

// Slim writes the slim copy of in to out.
func Slim(ctx context.Context, in, out string, opt SlimOptions) error {
	cmd := child.Command(ctx, "ffmpeg", SlimArgs(in, out, opt)...)
	stderr := &child.Tail{Max: 8192}
	cmd.Stderr = stderr
	progress, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	readProgress(progress, opt)
	return wait(ctx, cmd, stderr)
}

// FramesArgs is the command line that takes again, in one pass over in, the
// screenshots of the given seconds (sorted, none negative) that a Slim run
// with Frames would have written, into dir: the same frame picking (pass the
// same skipNonReference), the other seconds dropped before they are scaled,
// and the input read only up to the second after the last one.
func FramesArgs(in, dir string, seconds []int, stream int, skipNonReference bool) []string {
	args := []string{"-hide_banner", "-nostdin", "-v", "error", "-y"}
	if skipNonReference {
		args = append(args, "-skip_frame", "noref")
	}
	terms := make([]string, len(seconds))
	for i, s := range seconds {
		terms[i] = "eq(t\\," + strconv.Itoa(s) + ")"
	}
	last := 0
	if len(seconds) > 0 {
		last = seconds[len(seconds)-1]
	}
	args = append(args, "-t", strconv.Itoa(last+2))
	args = append(args, inputGuard...)
	args = append(args, decoderThreads()...)
	args = append(args, "-i", in, "-map", "0:V:"+strconv.Itoa(stream),
		"-vf", pickFrames+",select='"+strings.Join(terms, "+")+"',"+shotScale, "-fps_mode", "passthrough")
	return append(args, shotOutput(dir)...)
}

// Frames writes the screenshots of seconds into dir (see FramesArgs). A
// second past the end of the video has no file.
func Frames(ctx context.Context, in, dir string, seconds []int, stream int, skipNonReference bool) error {
	cmd := child.Command(ctx, "ffmpeg", FramesArgs(in, dir, seconds, stream, skipNonReference)...)
	stderr := &child.Tail{Max: 4096}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	return wait(ctx, cmd, stderr)
}

// wait waits for a started ffmpeg and says why it failed.
func wait(ctx context.Context, cmd *exec.Cmd, stderr *child.Tail) error {
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Err: err, Stderr: stderr.String()}
	}
	return nil
}

// Error is a failed ffmpeg run, with the end of what it printed.
type Error struct {
	Err    error
	Stderr string
}

func (e *Error) Error() string { return fmt.Sprintf("ffmpeg: %v: %s", e.Err, e.Stderr) }

// FFmpegOutput is the end of what ffmpeg printed.
func (e *Error) FFmpegOutput() string { return e.Stderr }
func (e *Error) Unwrap() error        { return e.Err }

// readProgress turns ffmpeg's -progress key=value lines into fractions.
func readProgress(r io.Reader, opt SlimOptions) {
	sc := bufio.NewScanner(r)
	expected := opt.Expected
	if opt.MaxDuration > 0 && (expected == 0 || expected > opt.MaxDuration) {
		expected = opt.MaxDuration
	}
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		if opt.Progress == nil || expected <= 0 {
			continue
		}
		switch k {
		case "out_time_us":
			us, err := strconv.ParseInt(v, 10, 64)
			if err == nil && us > 0 {
				opt.Progress(min(float64(us)/float64(expected.Microseconds()), 1))
			}
		case "progress":
			if v == "end" {
				opt.Progress(1)
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}
