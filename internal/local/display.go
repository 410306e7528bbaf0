package local

import (
	"io"
	"log/slog"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Bar shows the run as a progress bar per stage, on a terminal.
func Bar(w io.Writer) Display {
	return &bar{w: w}
}

type bar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

const barSteps = 1000

func (b *bar) Stage(name string) {
	if b.bar != nil {
		_ = b.bar.Finish()
	}
	b.bar = progressbar.NewOptions(barSteps, progressbar.OptionSetWriter(b.w), progressbar.OptionSetDescription(pad(name)),
		progressbar.OptionSetWidth(30), progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { _, _ = io.WriteString(b.w, "\n") }), progressbar.OptionSetPredictTime(false))
	_ = b.bar.RenderBlank()
}

func (b *bar) Progress(done float64) {
	if b.bar != nil {
		_ = b.bar.Set(int(done * barSteps))
	}
}

func (b *bar) Done() {
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}

// pad lines the stage names up.
func pad(name string) string {
	const width = len("gemini_processing")
	for len(name) < width {
		name += " "
	}
	return name
}

// Lines shows the run as log lines (stderr not a terminal).
func Lines(log *slog.Logger) Display {
	return &lines{log: log}
}

type lines struct {
	log      *slog.Logger
	stage    string
	reported float64
}

func (l *lines) Stage(name string) {
	l.stage, l.reported = name, 0
	l.log.Info("stage", "stage", name)
}

// Progress logs every quarter of a stage, not every update.
func (l *lines) Progress(done float64) {
	if done >= l.reported+0.25 || (done == 1 && l.reported < 1) {
		l.reported = done
		l.log.Info("progress", "stage", l.stage, "progress", done)
	}
}

func (l *lines) Done() {}
