package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"image/jpeg"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/sop/soptest"
)

// processCmd is `runops process` with the Gemini stand-in.
func processCmd(t *testing.T, ai *geminitest.Server, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"process"}, args...)...)
	cmd.Env = append(os.Environ(), "GEMINI_API_KEY=test-key", "GOOGLE_GEMINI_BASE_URL="+ai.URL, "GEMINI_MAX_RETRY_WAIT=1s")
	return cmd
}

// runProcess runs `runops process` with args to its end, failing the test
// if it fails, and returns what it printed.
func runProcess(t *testing.T, ai *geminitest.Server, args ...string) (stdout, stderr *bytes.Buffer) {
	t.Helper()
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	cmd := processCmd(t, ai, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	return stdout, stderr
}

// One recording in, the slim copy, the SOP and its Markdown out, with no
// Supabase and no PostgreSQL; flags may follow the recording.
func TestProcessMakesTheSOPLocally(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	good := geminitest.JSON(geminitest.SampleSOP)
	ai.Answer(good)
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 640, Height: 360, Seconds: 4, Audio: true})
	out := filepath.Join(dir, "out")
	stdout, stderr := runProcess(t, ai, rec, "--out", out)
	slim, err := ffmpeg.ProbeFile(context.Background(), filepath.Join(out, "rec.slim.mp4"))
	if err != nil || slim.FPS != 1 || slim.Height != 360 || !slim.HasAudio {
		t.Fatalf("slim copy %+v %v", slim, err)
	}
	doc, err := os.ReadFile(filepath.Join(out, "rec.sop.json"))
	if err != nil {
		t.Fatal(err)
	}
	soptest.Check(t, "the SOP of runops process", doc)
	md, err := os.ReadFile(filepath.Join(out, "rec.sop.md"))
	if err != nil || !strings.Contains(string(md), "# Refund a duplicate charge") || !strings.Contains(string(md), "#### 3.1 Refund it") {
		t.Fatalf("markdown %v:\n%s", err, md)
	}
	// The shown steps' screenshots beside it, linked relative to it.
	for step, node := range map[string]string{"1": "open", "3.1": "refund"} {
		if _, err := jpeg.DecodeConfig(openFile(t, filepath.Join(out, "rec."+node+".jpg"))); err != nil {
			t.Errorf("screenshot of %s: %v", node, err)
		}
		if link := "![Screenshot of step " + step + "](./rec." + node + ".jpg)"; !strings.Contains(string(md), link) {
			t.Errorf("markdown lacks %s:\n%s", link, md)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(out, "*.jpg")); len(matches) != 2 {
		t.Errorf("screenshots %v; want the two shown steps'", matches)
	}
	// Made to be shared: readable as any file the user makes.
	all, _ := filepath.Glob(filepath.Join(out, "rec.*"))
	for _, f := range all {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v %v; want 0644", filepath.Base(f), st.Mode().Perm(), err)
		}
	}
	for _, want := range []string{"rec.sop.json  (5 nodes", "(2 screenshots", "\ntotal: ", "prompt sop-v4", "video 774"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
	// It ends with the stages, as scripts read them (docs/operations.md):
	// "stages:", then per stage two spaces, its name, spaces, a Go duration.
	_, tail, _ := strings.Cut(stdout.String(), "\nstages:\n")
	var ran []string
	for _, line := range strings.Split(strings.TrimSuffix(tail, "\n"), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 || !strings.HasPrefix(line, "  "+fields[0]+" ") {
			t.Fatalf("stage line %q in:\n%s", line, stdout.String())
		}
		if _, err := time.ParseDuration(fields[1]); err != nil {
			t.Errorf("stage line %q: %v", line, err)
		}
		ran = append(ran, fields[0])
	}
	if want := "downloading probing transcoding uploading_slim gemini_upload gemini_processing extracting validating frames redacting uploading_sop"; strings.Join(ran, " ") != want {
		t.Errorf("stages %q; want %q", ran, want)
	}
	if !strings.Contains(stderr.String(), `"stage":"transcoding"`) {
		t.Errorf("no log lines of the stages (stderr is not a terminal):\n%s", stderr.String())
	}
}

// A refused recording exits 1 with the worker's sentence on stderr.
func TestProcessRefusesWithTheSentence(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	dir := t.TempDir()
	audio := mediatest.AudioOnly(t, dir, "talk.mp4", 2)
	var stderr bytes.Buffer
	cmd := processCmd(t, ai, "--out", dir, audio)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "The file has no picture") {
		t.Fatalf("last line %q", last)
	}
	if _, err := os.Stat(filepath.Join(dir, "talk.sop.json")); err == nil {
		t.Fatal("an SOP was written")
	}
	if len(ai.Requests()) != 0 {
		t.Fatal("Gemini was asked about a refused recording")
	}
}

// A pipe or a device given as the recording is refused at once, by name:
// it was read for ever (a pipe waits for a writer; /dev/zero has no end),
// past Ctrl-C and SIGTERM.
func TestProcessRefusesWhatIsNoFile(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "recording.mp4")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, input := range []string{fifo, "/dev/zero"} {
		var stderr bytes.Buffer
		cmd := processCmd(t, ai, "--out", dir, input)
		cmd.Stderr = &stderr
		if err := runWithin(t, cmd, 30*time.Second); err == nil || !strings.Contains(stderr.String(), "is not a file") {
			t.Errorf("%s: %v\n%s", input, err, stderr.String())
		}
	}
	if len(ai.Requests()) != 0 {
		t.Fatal("Gemini was asked")
	}
}

// On a terminal the stages show as progress bars (script(1) gives the
// process a pseudo-terminal).
func TestProcessShowsAProgressBarOnATerminal(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	good := geminitest.JSON(geminitest.SampleSOP)
	ai.Answer(good)
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	inner := processCmd(t, ai, rec, "--out", dir)
	cmd := exec.Command("script", "-qec", strings.Join(quoteAll(inner.Args), " "), "/dev/null")
	cmd.Env = inner.Env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(out), "100%") || !strings.Contains(string(out), "transcoding") || strings.Contains(string(out), `"msg":"stage"`) {
		t.Fatalf("no progress bar on the terminal:\n%s", out)
	}
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

func TestParseArgsTakesFlagsAnywhere(t *testing.T) {
	for _, args := range [][]string{{"rec.mp4", "--out", "d"}, {"--out", "d", "rec.mp4"}, {"rec.mp4", "--out=d"}, {"-out", "d", "rec.mp4"}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		out := fs.String("out", ".", "")
		pos, err := parseArgs(fs, args)
		if err != nil || len(pos) != 1 || pos[0] != "rec.mp4" || *out != "d" {
			t.Errorf("%v: %v %v %q", args, pos, err, *out)
		}
	}
	for _, args := range [][]string{{"rec.mp4", "--nope"}, {"rec.mp4", "--out"}} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.String("out", ".", "")
		if _, err := parseArgs(fs, args); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// Ctrl-C stops the run as a person stops a job: the Gemini file is deleted
// and the process exits non-zero, writing no SOP.
func TestProcessCtrlCDeletesTheGeminiFile(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	entered, release := ai.BlockGenerate()
	t.Cleanup(release)
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	cmd := processCmd(t, ai, rec, "--out", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("exited before asking Gemini: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("never asked Gemini")
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("exit 0 after Ctrl-C")
		}
	case <-time.After(time.Minute):
		t.Fatal("still running after Ctrl-C")
	}
	if len(ai.Files()) != 0 || len(ai.Deleted()) != 1 {
		t.Fatalf("files left %v, deleted %v", ai.Files(), ai.Deleted())
	}
	if _, err := os.Stat(filepath.Join(dir, "rec.sop.json")); err == nil {
		t.Fatal("an SOP was written")
	}
}

// RUNOPS_LOG_FORMAT decides the log format over the terminal check.
func TestLogFormatOverride(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	dir := t.TempDir()
	audio := mediatest.AudioOnly(t, dir, "talk.mp4", 1)
	for format, want := range map[string]string{"text": "level=INFO msg=stage stage=downloading", "json": `"msg":"stage","stage":"downloading"`} {
		var stderr bytes.Buffer
		cmd := processCmd(t, ai, audio, "--out", dir)
		cmd.Env = append(cmd.Env, "RUNOPS_LOG_FORMAT="+format)
		cmd.Stderr = &stderr
		_ = cmd.Run() // refused: audio only
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("RUNOPS_LOG_FORMAT=%s: no %q in\n%s", format, want, stderr.String())
		}
	}
}

func openFile(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The case that opened the privacy work, through runops process: a screen
// showing an e-mail address, a live-looking key and a card number, and an
// answer that repeats them. Nothing of the three in --out: not in the SOP,
// not in its Markdown, not on the screenshot (Tesseract reads none back,
// and still reads the rest), not on stdout.
func TestProcessSharesNoSecret(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	answer := sampleAnswer(t)
	answer["nodes"] = []any{
		map[string]any{"id": "open", "type": "task", "label": "Sign in as jane.doe@acme-corp.com", "intent": "Use sk_live_51HxYzAbCdEfGhIjKlMn0123",
			"context": "00:00:01 the card 4242 4242 4242 4242 is on file", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"},
		map[string]any{"id": "done", "type": "end", "label": "Done", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred"},
	}
	answer["edges"] = []any{map[string]any{"source": "open", "target": "done", "condition": "start"}}
	answer["steps"] = []any{}
	b, _ := json.Marshal(answer)
	ai.Answer(geminitest.JSON(string(b)))
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 1280, Height: 720, Seconds: 3, FPS: 5, Texts: []mediatest.Text{
		{Text: "Signed in as jane.doe@acme-corp.com", X: 60, Y: 60, Size: 30},
		{Text: "API key sk_live_51HxYzAbCdEfGhIjKlMn0123", X: 60, Y: 130, Size: 30},
		{Text: "Card on file 4242 4242 4242 4242", X: 60, Y: 200, Size: 30},
		{Text: "Billing Invoices Reports", X: 60, Y: 270, Size: 30},
	}})
	out := filepath.Join(dir, "out")
	stdout, _ := runProcess(t, ai, rec, "--out", out)
	secrets := []string{"jane.doe", "acme-corp", "sk_live", "51HxYz", "4242"}
	// Without the test's folder, whose random name may hold "4242" (a flake
	// under a loaded suite).
	texts := map[string]string{"stdout": strings.ReplaceAll(stdout.String(), dir, "<dir>"), "the screenshot": mediatest.ScreenText(t, filepath.Join(out, "rec.open.jpg"))}
	for _, f := range []string{"rec.sop.json", "rec.sop.md"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		texts[f] = string(b)
	}
	for what, text := range texts {
		for _, v := range secrets {
			if strings.Contains(strings.ToLower(text), strings.ToLower(v)) {
				t.Errorf("%q is in %s", v, what)
			}
		}
	}
	if !strings.Contains(texts["the screenshot"], "Billing") || !strings.Contains(texts["rec.sop.md"], `{{EMAIL\_1}}`) {
		t.Errorf("the screenshot reads:\n%s\nthe Markdown:\n%s", texts["the screenshot"], texts["rec.sop.md"])
	}
	if jpgs, _ := filepath.Glob(filepath.Join(out, "*.jpg")); len(jpgs) != 1 {
		t.Errorf("pictures in --out: %v", jpgs)
	}
}

// runWithin runs cmd, killing it and failing the test if it has not ended
// within d (a guard against a hang, not a timing assertion).
func runWithin(t *testing.T, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s still ran after %s", cmd, d)
		return nil
	}
}

// Every screenshot the Markdown shows, read by goldmark with GFM and
// resolved against the Markdown file's own URL as a browser does, is a
// file that exists, whatever the recording is called: "demo:v2" made
// "demo:v2.open.jpg", a URL of the scheme demo:, before the links began
// with "./".
func TestMarkdownLinksResolveForAnyName(t *testing.T) {
	for _, name := range []string{"my rec (1) <a> #b.mp4", "demo:v2.mp4"} {
		t.Run(name, func(t *testing.T) {
			ai := geminitest.New(t, "test-key")
			ai.Answer(geminitest.JSON(geminitest.SampleSOP))
			dir := t.TempDir()
			rec := mediatest.Make(t, dir, name, mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
			out := filepath.Join(dir, "out")
			runProcess(t, ai, "--out", out, "--", rec)
			mdPath := filepath.Join(out, strings.TrimSuffix(name, ".mp4")+".sop.md")
			src, err := os.ReadFile(mdPath)
			if err != nil {
				t.Fatal(err)
			}
			base := &url.URL{Scheme: "file", Path: mdPath}
			doc := goldmark.New(goldmark.WithExtensions(extension.GFM)).Parser().Parse(text.NewReader(src))
			images := 0
			_ = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
				img, ok := n.(*ast.Image)
				if !ok || !entering {
					return ast.WalkContinue, nil
				}
				images++
				ref, err := url.Parse(string(img.Destination))
				if err != nil {
					t.Errorf("link %q: %v", img.Destination, err)
					return ast.WalkContinue, nil
				}
				target := base.ResolveReference(ref)
				if target.Scheme != "file" {
					t.Errorf("link %q is read as a %q: URL, not a file beside the Markdown", img.Destination, target.Scheme)
					return ast.WalkContinue, nil
				}
				if _, err := os.Stat(target.Path); err != nil {
					t.Errorf("link %q resolves to no file: %v", img.Destination, err)
				}
				return ast.WalkContinue, nil
			})
			if images != 2 {
				t.Errorf("%d images in the Markdown; want 2", images)
			}
		})
	}
}

// A recording whose name leaves room for the slim copy and the SOP but not
// for "<name>.<stepId>.jpg" (255 bytes a name, a step id up to 100) is
// refused before anything is sent to Gemini, with a sentence. It was paid
// for, then thrown away on a raw rename error.
func TestALongNameIsRefusedBeforeGemini(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	ai.Answer(geminitest.JSON(geminitest.SampleSOP))
	name := strings.Repeat("x", 245) // .slim.mp4 and .sop.json: 254 bytes; .refund.jpg: 256
	rec := mediatest.Make(t, t.TempDir(), name+".mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	out := t.TempDir()
	var stderr bytes.Buffer
	cmd := processCmd(t, ai, rec, "--out", out)
	cmd.Stderr = &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || ai.Uploads() != 0 || !strings.Contains(lines[len(lines)-1], "name is too long") {
		t.Fatalf("exit %v after %d upload(s) to Gemini; last line:\n%s", err, ai.Uploads(), lines[len(lines)-1])
	}
}

// A GEMINI_API_KEY that Gemini refuses is the local user's own key: the
// sentence runops process ends with names the key to fix. It was the
// worker's, which tells a user the operators were told and to wait.
func TestARefusedKeySentenceFitsTheLocalUser(t *testing.T) {
	ai := geminitest.New(t, "another-key") // refuses test-key
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	var stderr bytes.Buffer
	cmd := processCmd(t, ai, rec, "--out", dir)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, "GEMINI_API_KEY") || strings.Contains(last, "operators have been told") {
		t.Fatalf("last line of stderr: %q", last)
	}
}

// A second run of the same recording into the same folder leaves only its
// own screenshots: a step the new SOP no longer shows keeps no picture of
// the earlier run beside it, as the worker drops such frames. A file the
// earlier SOP did not name stays. Before, the earlier run's stayed too.
func TestARerunLeavesNoStaleScreenshots(t *testing.T) {
	ai := geminitest.New(t, "test-key")
	answer := sampleAnswer(t)
	answer["nodes"] = []any{
		map[string]any{"id": "open", "type": "task", "label": "Open", "intent": "i", "context": "00:00:01 x", "parent_id": "", "timestamp": "00:00:01", "evidence": "shown"},
		map[string]any{"id": "done", "type": "end", "label": "Done", "intent": "i", "context": "", "parent_id": "", "timestamp": "", "evidence": "inferred"},
	}
	answer["edges"] = []any{map[string]any{"source": "open", "target": "done", "condition": "start"}}
	answer["steps"] = []any{}
	second, _ := json.Marshal(answer)
	ai.Script(geminitest.JSON(geminitest.SampleSOP), geminitest.JSON(string(second)))
	dir := t.TempDir()
	rec := mediatest.Make(t, dir, "rec.mp4", mediatest.Spec{Width: 320, Height: 240, Seconds: 2})
	out := filepath.Join(dir, "out")
	runProcess(t, ai, rec, "--out", out) // shows open and refund
	if _, err := os.Stat(filepath.Join(out, "rec.refund.jpg")); err != nil {
		t.Fatalf("first run: %v", err)
	}
	// A person's own file, no step of the earlier SOP.
	mine := mediatest.File(t, out, "rec.cover.jpg", []byte("a person's own file"))
	stdout, _ := runProcess(t, ai, rec, "--out", out) // shows only open
	if !strings.Contains(stdout.String(), "(1 screenshots") {
		t.Fatalf("second run's summary:\n%s", stdout)
	}
	jpgs, _ := filepath.Glob(filepath.Join(out, "rec.*.jpg"))
	if want := []string{mine, filepath.Join(out, "rec.open.jpg")}; !slices.Equal(jpgs, want) {
		t.Errorf("pictures in --out after the second run: %v; want %v (the summary says 1 screenshot)", jpgs, want)
	}
}

// sampleAnswer is the stand-in's sample SOP answer, decoded, for a test to
// change.
func sampleAnswer(t *testing.T) map[string]any {
	t.Helper()
	var answer map[string]any
	if err := json.Unmarshal([]byte(geminitest.SampleSOP), &answer); err != nil {
		t.Fatal(err)
	}
	return answer
}
