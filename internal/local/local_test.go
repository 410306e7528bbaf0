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
