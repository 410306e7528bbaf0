// Package local runs one recording through the worker's own pipeline on this
// machine, for `runops process`: a folder stands in for the storage bucket
// and a small runner for the queue engine, so it needs no Supabase and no
// PostgreSQL. It must not change what the pipeline does: only where its
// objects go and where its progress is shown.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pipeline"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// Outputs are the files a run writes: DIR/<name>.slim.mp4, DIR/<name>.sop.json,
// DIR/<name>.sop.md and a screenshot per shown step, DIR/<name>.<nodeId>.jpg,
// where <name> is the recording's file name without its extension.
type Outputs struct {
	Slim, SOP, Markdown string
	framePrefix         string // DIR/<name>.
}

// OutputsFor names the outputs of the recording at input in dir.
func OutputsFor(input, dir string) Outputs {
	base := filepath.Base(input)
	name := strings.TrimSuffix(base, filepath.Ext(base))
	at := func(suffix string) string { return filepath.Join(dir, name+suffix) }
	return Outputs{Slim: at(".slim.mp4"), SOP: at(".sop.json"), Markdown: at(".sop.md"), framePrefix: at(".")}
}

// Frame names the screenshot of the step with id node.
func (o Outputs) Frame(node string) string { return o.framePrefix + node + ".jpg" }

// files is the pipeline's storage: the recording is raw/<id>.mp4, the
// outputs slim/<id>.mp4, frames/<id>/<nodeId>.jpg and sops/<id>.json.
type files struct {
	input string
	out   Outputs
}

var _ pipeline.Objects = (*files)(nil)

func (f *files) Download(_ context.Context, path string) (io.ReadCloser, int64, error) {
	if !strings.HasPrefix(path, "raw/") {
		return nil, 0, jobs.ErrObjectMissing // no slim copy of an earlier attempt to reuse
	}
	file, err := os.Open(f.input)
	if err != nil {
		return nil, 0, err
	}
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, 0, err
	}
	return file, st.Size(), nil
}

func (f *files) Upload(_ context.Context, path string, r io.Reader, _ int64, _ string) error {
	dst := f.out.SOP
	switch first, rest, _ := strings.Cut(path, "/"); first {
	case "slim":
		dst = f.out.Slim
	case "frames":
		_, file, _ := strings.Cut(rest, "/") // <id>/<nodeId>.jpg, the id checked by the pipeline
		dst = f.out.Frame(strings.TrimSuffix(file, ".jpg"))
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".runops-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	// CreateTemp makes it private (0600); the outputs are the user's to
	// share, like the Markdown beside them.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// List finds nothing: every local run is a job of its own, with no
// screenshots of an earlier attempt to tidy (Run tidies an earlier run's).
func (f *files) List(context.Context, string) ([]string, error) { return nil, nil }

// Remove has nothing to remove (see List).
func (f *files) Remove(context.Context, ...string) error { return nil }

// Display shows a run's stages and progress (a progress bar, or log lines).
type Display interface {
	Stage(name string)
	Progress(done float64)
	Done()
}

// Stage is one stage of a run and how long it took.
type Stage struct {
	Name     string
	Duration time.Duration
}

// Result is what a finished run reports.
type Result struct {
	Outputs  Outputs
	Stages   []Stage
	Metadata map[string]any // what the worker would have merged into jobs.metadata
	Total    time.Duration
}

// Run processes the recording at input into dir with the pipeline the worker
// runs, over model and with cfg. When ctx ends (Ctrl-C) the run stops as a job a person stops
// does: ffmpeg is killed and the Gemini file deleted. A refused recording is
// a *jobs.Failure carrying the worker's sentence.
func Run(ctx context.Context, model pipeline.Model, cfg pipeline.Config, input, dir string, show Display) (Result, error) {
	st, err := os.Stat(input)
	switch {
	case err != nil:
		return Result{}, fmt.Errorf("read the recording: %w", err)
	case st.IsDir():
		return Result{}, fmt.Errorf("%s is a folder, not a recording", input)
	case !st.Mode().IsRegular():
		// A pipe or a device would be read for ever (and /dev/zero without
		// end), past Ctrl-C.
		return Result{}, fmt.Errorf("%s is not a file (a pipe or a device?): give the recording's file", input)
	}
	// Every output is named after the recording, a screenshot after it and
	// its step's id too (up to 100 characters): a name past what a file
	// name can hold fails here, not after Gemini was paid.
	if longest := len(filepath.Base(OutputsFor(input, dir).Frame(strings.Repeat("x", jobs.MaxNodeID)))); longest > maxFileName {
		return Result{}, fmt.Errorf("the recording's name is too long for the files named after it (a screenshot's name would be %d bytes, %d at most): rename it shorter", longest, maxFileName)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	// Written to before anything is paid for: a folder this user may not
	// write in (a container's user in a mounted folder) fails here, not
	// after the transcode and Gemini.
	probe, err := os.CreateTemp(dir, ".runops-*")
	if err != nil {
		return Result{}, fmt.Errorf("cannot write the outputs in %s: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	tmp, err := os.MkdirTemp("", "runops-process-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(tmp)

	out := OutputsFor(input, dir)
	id := jobs.ID(uuid.NewString())
	job := queue.Job{Job: jobs.Job{ID: id, Status: jobs.StatusProcessing, CreatedAt: time.Now(),
		Metadata: map[string]any{"upload": map[string]any{"size_bytes": st.Size(), "content_type": "video/mp4"}}},
		Token: "local", Attempt: 1, TempDir: tmp}
	rep := &reporter{show: show, metadata: map[string]any{}}

	// A Ctrl-C is a person stopping the run (pipeline.ErrInterrupted): the
	// pipeline then cleans up what it made remotely (the Gemini file), as
	// for a dashboard edit.
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	stopAfter := context.AfterFunc(ctx, func() { cancel(pipeline.ErrInterrupted) })
	defer stopAfter()

	var earlier map[string]bool // an earlier run's screenshots, in the same folder
	if d, err := out.readSOP(); err == nil {
		earlier = out.frames(d)
	}
	start := time.Now()
	err = pipeline.New(&files{input: input, out: out}, model, pipeline.SoleWriter{}, cfg).Run(runCtx, job, rep)
	stages := rep.finish()
	show.Done()
	res := Result{Outputs: out, Stages: stages, Metadata: rep.metadata, Total: time.Since(start)}
	if err != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("stopped: %w", ctx.Err())
		}
		return res, err
	}
	d, err := out.readSOP()
	if err != nil {
		return res, err
	}
	if err := writeMarkdown(out, d); err != nil {
		return res, err
	}
	// The earlier run's screenshots of steps this SOP does not have go: the
	// folder is shared whole.
	now := out.frames(d)
	for file := range earlier {
		if !now[file] {
			if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
				return res, err
			}
		}
	}
	return res, nil
}

// frames are the screenshot files d shows: the files a run wrote, never
// another (a step id that could name another file is none of them).
func (o Outputs) frames(d *sop.Document) map[string]bool {
	files := map[string]bool{}
	for _, n := range d.Public.Nodes {
		if n.Screenshot != "" && jobs.SafeNodeID(n.ID) {
			files[o.Frame(n.ID)] = true
		}
	}
	return files
}

// maxFileName is the longest file name the usual file systems take, in
// bytes.
const maxFileName = 255

// readSOP reads the SOP document written to o.SOP.
func (o Outputs) readSOP() (*sop.Document, error) {
	b, err := os.ReadFile(o.SOP)
	if err != nil {
		return nil, err
	}
	return sop.Parse(b)
}

// writeMarkdown writes d, the SOP just written, as Markdown beside it.
func writeMarkdown(out Outputs, d *sop.Document) error {
	// Links relative to the Markdown file, which sits beside the screenshots;
	// "./" first, so that a name with a colon ("demo:v2") is not read as a
	// URL's scheme.
	image := func(n sop.Node) string { return "./" + url.PathEscape(filepath.Base(out.Frame(n.ID))) }
	return os.WriteFile(out.Markdown, sop.Markdown(d, image), 0o644)
}

// reporter is queue.Reporter for one local run.
type reporter struct {
	show Display

	mu       sync.Mutex
	stage    string
	started  time.Time
	stages   []Stage
	metadata map[string]any
}

var _ queue.Reporter = (*reporter)(nil)

func (r *reporter) Stage(ctx context.Context, name string) error {
	r.mu.Lock()
	r.closeStage()
	r.stage, r.started = name, time.Now()
	r.mu.Unlock()
	r.show.Stage(name)
	return ctx.Err()
}

func (r *reporter) Progress(ctx context.Context, p float64) error {
	r.show.Progress(min(max(p, 0), 1))
	return ctx.Err()
}

func (r *reporter) Merge(ctx context.Context, patch map[string]any) error {
	// As the database would store it: JSON, so that Go values (a probe, the
	// token usage) read back as plain maps.
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	var plain map[string]any
	if err := json.Unmarshal(b, &plain); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metadata = jobs.MergeMetadata(r.metadata, plain)
	return ctx.Err()
}

// closeStage records the stage that ends; the caller holds mu.
func (r *reporter) closeStage() {
	if r.stage != "" {
		r.stages = append(r.stages, Stage{Name: r.stage, Duration: time.Since(r.started)})
		r.stage = ""
	}
}

func (r *reporter) finish() []Stage {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeStage()
	return r.stages
}

// Refused tells whether err is a recording the pipeline refused (the
// sentence is err's message then).
func Refused(err error) (string, bool) {
	var f *jobs.Failure
	if errors.As(err, &f) {
		return f.Message, true
	}
	return "", false
}
