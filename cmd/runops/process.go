package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/runops/runops/internal/config"
	"github.com/runops/runops/internal/gemini"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/local"
)

// refusedError is a recording the pipeline refused: its sentence goes to
// stderr as it is, and the exit code is 1.
type refusedError string

func (r refusedError) Error() string { return string(r) }

// isNumber tells whether a is a number (a negative one looks like a flag).
func isNumber(a string) bool {
	_, err := strconv.ParseFloat(a, 64)
	return err == nil
}

// parseArgs parses flags wherever they stand among the positional arguments
// ("process rec.mp4 --out DIR" as well as "process --out DIR rec.mp4"); the
// standard flag package stops at the first positional.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(positional, args[i+1:]...), nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" || isNumber(a) { // a negative number is a value (jobs priority ID -20)
			positional = append(positional, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			return nil, usageError(fmt.Sprintf("unknown flag %s", a))
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() && !hasValue {
			value, hasValue = "true", true
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, usageError(fmt.Sprintf("flag %s needs a value", a))
			}
			i++
			value = args[i]
		}
		if err := fs.Set(name, value); err != nil {
			return nil, usageError(fmt.Sprintf("flag %s: %v", a, err))
		}
	}
	return positional, nil
}

// process runs one recording through the worker's pipeline on this machine:
// `runops process VIDEO [--out DIR]`.
func process(ctx context.Context, cfg config.Config, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("process", flag.ContinueOnError)
	out := fs.String("out", ".", "folder for <name>.slim.mp4, <name>.sop.json and <name>.sop.md")
	positional, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(positional) != 1 {
		return usageError("process takes one recording: runops process VIDEO [--out DIR]")
	}
	if err := cfg.RequireGemini("to turn a recording into an SOP (runops process sends it to Gemini)"); err != nil {
		return refusedError(err.Error())
	}
	if err := requireOCR(ctx, cfg); err != nil {
		return refusedError(err.Error())
	}
	model, err := gemini.New(ctx, gemini.Config{APIKey: cfg.GeminiAPIKey, Model: cfg.GeminiModel,
		MediaResolution: cfg.GeminiMediaResolution, BaseURL: cfg.GeminiBaseURL})
	if err != nil {
		return err
	}
	var show local.Display = local.Lines(log)
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		show = local.Bar(stderr)
	}
	pc, err := pipelineConfig(cfg, log)
	if err != nil {
		return err
	}
	res, err := local.Run(ctx, model, pc, positional[0], *out, show)
	if errors.Is(err, jobs.ErrRefusedKey) {
		// The worker's sentence tells a user to wait for the operators; here
		// the user is the operator, and the key is theirs.
		return refusedError("Gemini refused GEMINI_API_KEY: set a valid key of a Gemini API project and run again.")
	}
	if sentence, refused := local.Refused(err); refused {
		return refusedError(sentence)
	}
	if err != nil {
		return err
	}
	summarize(stdout, res)
	return nil
}

// summarize prints what a run made, its stages and its token usage.
func summarize(w io.Writer, res local.Result) {
	md := res.Metadata
	slim, _ := md["slim"].(map[string]any)
	doc, _ := md["sop"].(map[string]any)
	fmt.Fprintf(w, "%s  (%s, %v frames)\n", res.Outputs.Slim, megabytes(slim["size_bytes"]), slim["frames"])
	fmt.Fprintf(w, "%s  (%v nodes, %v edges)\n", res.Outputs.SOP, doc["nodes"], doc["edges"])
	fmt.Fprintf(w, "%s\n", res.Outputs.Markdown)
	// The pipeline's record, as it would be merged into metadata.frames.
	var frames struct {
		Count   int `json:"count"`
		Missing []struct {
			Node   string `json:"node"`
			Reason string `json:"reason"`
		} `json:"missing"`
	}
	if b, err := json.Marshal(md["frames"]); err == nil {
		_ = json.Unmarshal(b, &frames)
	}
	fmt.Fprintf(w, "%s  (%d screenshots of shown steps)\n", res.Outputs.Frame("<step>"), frames.Count)
	for _, m := range frames.Missing {
		fmt.Fprintf(w, "  no screenshot of %s: %s\n", m.Node, m.Reason)
	}
	g, _ := md["gemini"].(map[string]any)
	usage, _ := g["usage"].(map[string]any)
	keys := make([]string, 0, len(usage))
	for k := range usage {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %v", strings.TrimSuffix(k, "_tokens"), usage[k])
	}
	fmt.Fprintf(w, "gemini: %v, prompt %v, %v call(s); tokens: %s\n", g["model"], g["prompt_version"], g["calls"], strings.Join(parts, ", "))
	fmt.Fprintf(w, "total: %s\n", res.Total.Round(time.Millisecond))
	// Last, in the format scripts read (docs/operations.md): a line per
	// stage that ran, its name as in metadata.stage, then its duration.
	fmt.Fprintln(w, "stages:")
	for _, s := range res.Stages {
		fmt.Fprintf(w, "  %-18s %s\n", s.Name, s.Duration.Round(time.Millisecond))
	}
}

func megabytes(v any) string {
	n, _ := v.(float64)
	return fmt.Sprintf("%.1f MB", n/1e6)
}
