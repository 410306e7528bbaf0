package local_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runops/runops/internal/gemini"
	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/local"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/pipeline"
)

type nopShow struct{}

func (nopShow) Stage(string)     {}
func (nopShow) Progress(float64) {}
func (nopShow) Done()            {}

// `runops process` meets the same recordings as the worker
// (internal/pipeline/hostile_media_test.go) and ends the same way: a
// 21½-minute recording whose header says 10 s is refused for its length; a
// picture shorter than half a second beside 30 s of sound, for having no
// picture. Before, the first was cut at 20 minutes without a word, and the
// second's slim copy, sound only, went to Gemini.
func TestProcessRefusesWhatTheWorkerShouldRefuse(t *testing.T) {
	dir := t.TempDir()
	long := mediatest.Make(t, dir, "long.mkv", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: 21*60 + 30, Format: "mkv"})
	liar := mediatest.Patched(t, long, "liar.mp4", mediatest.MatroskaDuration(21*60+30), mediatest.MatroskaDuration(10))
	blink := mediatest.Blink(t, dir, "blink.mp4")
	for in, want := range map[string]string{liar: "20 minutes", blink: "The file has no picture"} {
		ai := geminitest.New(t, "test-key")
		ai.Answer(geminitest.JSON(geminitest.SampleSOP))
		model, err := gemini.New(context.Background(), gemini.Config{APIKey: "test-key", Model: "gemini-test", BaseURL: ai.URL})
		if err != nil {
			t.Fatal(err)
		}
		res, err := local.Run(context.Background(), model, pipeline.Config{Logger: slog.New(slog.DiscardHandler)},
			in, t.TempDir(), nopShow{})
		if s, ok := local.Refused(err); !ok || !strings.Contains(s, want) {
			t.Errorf("%s: %v (slim copy %v); want a refusal with %q", filepath.Base(in), err, res.Metadata["slim"], want)
		}
	}
}

// An output folder this user cannot write in (a container's user in a
// mounted folder; here /proc/self, which no user writes files in) is
// refused before anything is paid for: the recording is not transcoded and
// Gemini is never asked. Before, the work was done and lost at its first
// write.
func TestAnOutputFolderThatCannotBeWrittenIsRefusedFirst(t *testing.T) {
	in := mediatest.Make(t, t.TempDir(), "screen.mp4", mediatest.Spec{Width: 64, Height: 64, FPS: 1, Seconds: 2})
	ai := geminitest.New(t, "test-key")
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	model, err := gemini.New(context.Background(), gemini.Config{APIKey: "test-key", Model: "gemini-test", BaseURL: ai.URL})
	if err != nil {
		t.Fatal(err)
	}
	stages := &stagesSeen{}
	_, err = local.Run(context.Background(), model, pipeline.Config{Logger: slog.New(slog.DiscardHandler)}, in, "/proc/self", stages)
	if err == nil || !strings.Contains(err.Error(), "cannot write the outputs in /proc/self") {
		t.Fatalf("%v", err)
	}
	if n := len(ai.Requests()); n != 0 || len(stages.names) != 0 {
		t.Fatalf("%d requests to Gemini and stages %v before the refusal", n, stages.names)
	}
}

// stagesSeen is a Display that notes the stages it is shown.
type stagesSeen struct{ names []string }

func (s *stagesSeen) Stage(name string) { s.names = append(s.names, name) }
func (*stagesSeen) Progress(float64)    {}
func (*stagesSeen) Done()               {}
