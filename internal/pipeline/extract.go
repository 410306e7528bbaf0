package pipeline

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"strings"
	"time"

	"github.com/runops/runops/internal/gemini"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// PromptVersion names the embedded prompt; it is recorded with every SOP.
const PromptVersion = "sop-v4"

//go:embed prompt_sop_v4.md
var prompt string

const systemInstruction = "You write Standard Operating Procedures from narrated screen recordings. " +
	"You answer with JSON that matches the response schema, and nothing else."

// Model is what extraction needs of Gemini.
type Model interface {
	Model() string
	Upload(ctx context.Context, path, mimeType, displayName string) (gemini.File, error)
	File(ctx context.Context, name string) (gemini.File, error)
	Delete(ctx context.Context, name string) error
	Generate(ctx context.Context, req gemini.Request) (gemini.Response, error)
}

// Fence is what every write of a job's outputs (screenshots, the SOP) goes
// through: under the SOP lock, which serialises it with the API's edits,
// and only while this claim (its lease token) still holds the job;
// otherwise it returns queue.ErrLeaseLost.
type Fence interface {
	WithSOPLease(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error
}

// Extraction's bounds.
const (
	maxCalls     = 3
	pollFirst    = 250 * time.Millisecond // a small file is often ACTIVE within a second
	pollMax      = 2 * time.Second
	reuseMinLife = time.Hour
)

// settleFile decides the Gemini file's fate once the run's outcome (err)
// is known: kept for the next attempt after a transient failure — of any
// later stage too (the screenshots, the SOP's upload) —, a lost lease or a
// shutdown; deleted once the job is over for good, or a person stopped it.
func (p *Pipeline) settleFile(ctx context.Context, name string, err error) {
	var f *jobs.Failure
	permanent := errors.As(err, &f) && !errors.Is(err, errExhausted)
	if err != nil && !permanent && !errors.Is(context.Cause(ctx), queue.ErrEdited) {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if derr := p.model.Delete(dctx, name); derr != nil {
		p.cfg.Logger.WarnContext(ctx, "could not delete the Gemini file", "file", name, "error", derr)
	}
}

// answer is the model's SOP, checked, and the values it marked as
// personal or secret (never stored), with where each shows on its step's
// screenshot.
type answer struct {
	doc   *sop.Document
	marks []privacy.Mark
	boxes map[string][]box2d // node id → boxes to destroy on its screenshot
}

// box2d is a box in Gemini's convention: [ymin, xmin, ymax, xmax], 0–1000.
type box2d [4]int

// parseBox keeps a box that is inside the picture and not empty.
func parseBox(v []int) (box2d, bool) {
	if len(v) != 4 {
		return box2d{}, false
	}
	b := box2d(v)
	for _, c := range b {
		if c < 0 || c > 1000 {
			return b, false
		}
	}
	return b, b[0] < b[2] && b[1] < b[3]
}

// pixels is the box on a picture of bounds r.
func (b box2d) pixels(r image.Rectangle) image.Rectangle {
	w, h := r.Dx(), r.Dy()
	return image.Rect(r.Min.X+b[1]*w/1000, r.Min.Y+b[0]*h/1000, r.Min.X+(b[3]*w+999)/1000, r.Min.Y+(b[2]*h+999)/1000)
}

// extract turns the slim copy into the job's SOP document, checked. It
// returns the Gemini file's name whenever there is one (also with an error),
// for settleFile.
func (p *Pipeline) extract(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult) (answer, string, error) {
	file, err := p.geminiFile(ctx, job, r, slim)
	if err != nil || file.Name == "" {
		return answer{}, file.Name, err
	}
	a, err := p.describe(ctx, job, r, slim, file)
	return a, file.Name, err
}

// describe asks the model for the SOP until an answer passes the checks.
func (p *Pipeline) describe(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult, file gemini.File) (answer, error) {
	if err := r.Stage(ctx, "extracting"); err != nil {
		return answer{}, err
	}
	duration := time.Duration(slim.Duration * float64(time.Second))
	var (
		usage    gemini.Usage
		calls    int
		problems string
		cutOff   bool
		ans      answer
	)
	for calls < maxCalls && ans.doc == nil {
		req := gemini.Request{System: systemInstruction, Prompt: prompt, FileURI: file.URI, MIMEType: "video/mp4", Schema: schema}
		if problems != "" {
			req.Prompt += "\n\nYour previous answer was rejected for these reasons; answer again, fixing them:\n" + problems
		}
		var resp gemini.Response
		err := p.retry(ctx, viaGemini, func() error {
			gctx, cancel := context.WithTimeout(ctx, p.cfg.GenerateTimeout)
			defer cancel()
			var err error
			resp, err = p.model.Generate(gctx, req)
			return err
		})
		if err != nil {
			return answer{}, p.geminiFailure(ctx, err)
		}
		calls++
		usage = usage.Add(resp.Usage)
		metrics.GeminiTokens.WithLabelValues("prompt").Add(float64(resp.Usage.PromptTokens))
		metrics.GeminiTokens.WithLabelValues("video").Add(float64(resp.Usage.VideoTokens))
		metrics.GeminiTokens.WithLabelValues("output").Add(float64(resp.Usage.OutputTokens))
		switch {
		case resp.BlockReason != "":
			return answer{}, jobs.Fail(msgSafety, fmt.Errorf("prompt blocked: %s", resp.BlockReason))
		case resp.FinishReason == "SAFETY" || resp.FinishReason == "PROHIBITED_CONTENT" || resp.FinishReason == "SPII" || resp.FinishReason == "BLOCKLIST":
			return answer{}, jobs.Fail(msgSafety, fmt.Errorf("answer blocked: %s", resp.FinishReason))
		}
		if err := r.Stage(ctx, "validating"); err != nil {
			return answer{}, err
		}
		cutOff = resp.FinishReason == "MAX_TOKENS"
		ans, problems = toDocument(resp.Text, job.ID, duration)
		problems = p.cfg.Privacy.Scrub(problems) // they are logged, and kept in metadata.attempts
		if ans.doc == nil && cutOff {
			problems = "- the answer was cut off before its end: describe the procedure more briefly\n" + problems
		}
		if ans.doc == nil {
			p.cfg.Logger.InfoContext(ctx, "SOP rejected; asking again", "call", calls, "problems", problems)
			if calls < maxCalls {
				if err := r.Stage(ctx, "extracting"); err != nil {
					return answer{}, err
				}
			}
		}
	}
	// The file was recorded when it was uploaded (geminiFile); this attempt's
	// model, prompt, calls and tokens are recorded now.
	record := map[string]any{"model": p.model.Model(), "prompt_version": PromptVersion, "calls": calls, "usage": usage}
	if err := r.Merge(ctx, map[string]any{"gemini": record}); err != nil {
		return answer{}, err
	}
	if ans.doc == nil {
		if cutOff {
			return answer{}, jobs.Fail(msgTooLong, errors.New(problems))
		}
		return answer{}, jobs.Fail(fmt.Sprintf(msgInvalid, maxCalls), errors.New(problems))
	}
	return ans, nil
}

// writeSOP stores the screenshots, then the document that names them (under
// the SOP lock the API's edits take), and records it; the engine marks the
// job completed only after this returns.
func (p *Pipeline) writeSOP(ctx context.Context, job queue.Job, r queue.Reporter, doc *sop.Document, shots *shotSet) error {
	if err := r.Stage(ctx, "uploading_sop"); err != nil {
		return err
	}
	if err := p.storeShots(ctx, job, r, doc, shots); err != nil {
		return err
	}
	b, err := sop.Marshal(doc)
	if err != nil {
		return err
	}
	// Each try takes the lock and checks the lease anew: no lock is held
	// through the waits between tries.
	err = p.retry(ctx, viaStorage, func() error {
		return p.fence.WithSOPLease(ctx, job.ID, job.Token, func(ctx context.Context) error {
			if err := p.objects.Upload(ctx, job.ID.SOPPath(), bytes.NewReader(b), int64(len(b)), "application/json"); err != nil {
				return err
			}
			p.dropStaleFrames(ctx, job, doc)
			return nil
		})
	})
	if err != nil {
		return err
	}
	sum, _, _ := hashBytes(b)
	return r.Merge(ctx, map[string]any{"sop": map[string]any{"path": job.ID.SOPPath(), "nodes": len(doc.Public.Nodes),
		"edges": len(doc.Public.Edges), "sha256": sum}})
}

// geminiFile returns an ACTIVE Gemini file of the slim copy: the previous
// attempt's when it is still there, made from the same bytes, and has more
// than an hour left; otherwise a new upload. On an error after the upload the
// file is returned too, so that the caller can decide its fate.
func (p *Pipeline) geminiFile(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult) (gemini.File, error) {
	if err := r.Stage(ctx, "gemini_upload"); err != nil {
		return gemini.File{}, err
	}
	if prev, ok := job.Metadata["gemini"].(map[string]any); ok {
		name, _ := prev["file_name"].(string)
		sha, _ := prev["slim_sha256"].(string)
		exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(prev["file_expires_at"]))
		if name != "" && sha == slim.SHA256 && time.Until(exp) > reuseMinLife {
			if f, err := p.model.File(ctx, name); err == nil && f.State == "ACTIVE" && time.Until(f.ExpiresAt) > reuseMinLife {
				p.cfg.Logger.InfoContext(ctx, "reusing the Gemini file of a previous attempt", "file", name)
				return f, nil
			}
		}
	}
	var f gemini.File
	err := p.retry(ctx, viaGemini, func() error {
		var err error
		f, err = p.model.Upload(ctx, slim.File, "video/mp4", "runops-"+string(job.ID))
		return err
	})
	if err != nil {
		return gemini.File{}, p.geminiFailure(ctx, err)
	}
	if err := r.Merge(ctx, map[string]any{"gemini": map[string]any{
		"file_name": f.Name, "file_expires_at": f.ExpiresAt, "slim_sha256": slim.SHA256}}); err != nil {
		return f, err
	}
	if err := r.Stage(ctx, "gemini_processing"); err != nil {
		return f, err
	}
	var waited time.Duration
	wait := pollFirst
	for f.State != "ACTIVE" {
		if f.State == "FAILED" {
			return f, jobs.Fail(msgFileFailed, errors.New(f.Error))
		}
		if waited >= p.cfg.FileActiveTimeout {
			return f, jobs.Fail(msgFileSlow, fmt.Errorf("file %s still %s after %s", f.Name, f.State, waited))
		}
		if err := p.cfg.Sleep(ctx, wait); err != nil {
			return f, err
		}
		waited += wait
		wait = min(2*wait, pollMax)
		err := p.retry(ctx, viaGemini, func() error {
			got, err := p.model.File(ctx, f.Name)
			if err == nil {
				f = got
			}
			return err
		})
		if err != nil {
			return f, p.geminiFailure(ctx, err)
		}
	}
	return f, nil
}

// geminiFailure turns what is left of a Gemini error into the job's end.
func (p *Pipeline) geminiFailure(ctx context.Context, err error) error {
	var f *jobs.Failure
	switch {
	case errors.As(err, &f), errors.Is(err, context.Canceled), errors.Is(err, queue.ErrLeaseLost):
		return err
	case errors.Is(err, gemini.ErrBadKey):
		p.cfg.Logger.ErrorContext(ctx, "Gemini refused GEMINI_API_KEY", "error", err)
		return jobs.Fail(msgBadKey, err)
	}
	return jobs.Fail(msgAIDown, err)
}

// hashBytes is hashFile for bytes in memory.
func hashBytes(b []byte) (string, int64, error) { return hashReader(bytes.NewReader(b)) }

// toDocument converts and checks an answer about a recording of the given
// duration: the document, or nil and the problems to send back to the model.
func toDocument(text string, id jobs.ID, duration time.Duration) (answer, string) {
	var m modelSOP
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&m); err != nil {
		return answer{}, "- the answer is not the JSON the schema asks for: " + err.Error() + "\n"
	}
	var marks []privacy.Mark
	boxes := map[string][]box2d{}
	for _, n := range m.Nodes {
		for _, v := range n.Sensitive {
			marks = append(marks, privacy.Mark{Value: v.Value, Kind: privacy.Kind(v.Kind)})
			if b, ok := parseBox(v.Box); ok {
				boxes[n.ID] = append(boxes[n.ID], b)
			}
		}
	}
	d := &sop.Document{
		Meta:    &sop.Meta{Title: m.Title, Goal: m.Goal, Purpose: m.Purpose, Owner: m.Owners},
		Public:  &sop.Public{Variables: map[string]string{}},
		Private: &sop.Private{},
	}
	var problems []string
	for _, t := range m.Triggers {
		d.Public.Triggers = append(d.Public.Triggers, sop.Trigger{Type: t.Type, Config: t.Config, Description: t.Description})
	}
	for _, n := range m.Nodes {
		node := sop.Node{ID: n.ID, Type: n.Type, Label: n.Label, Intent: n.Intent, Context: n.Context,
			ParentID: n.ParentID, Iterator: n.Iterator, ExitCondition: n.ExitCondition, Timestamp: n.Timestamp, Evidence: n.Evidence}
		// A box outside the picture, empty or inverted is dropped, not drawn.
		if b, ok := parseBox(n.Box); ok && n.Evidence == sop.EvidenceShown {
			node.Highlight = &sop.Highlight{X: float64(b[1]) / 1000, Y: float64(b[0]) / 1000,
				W: float64(b[3]-b[1]) / 1000, H: float64(b[2]-b[0]) / 1000}
		}
		d.Public.Nodes = append(d.Public.Nodes, node)
	}
	for _, e := range m.Edges {
		d.Public.Edges = append(d.Public.Edges, sop.Edge{Source: e.Source, Target: e.Target, Condition: e.Condition})
	}
	for _, v := range m.Variables {
		if _, dup := d.Public.Variables[v.Name]; dup {
			problems = append(problems, fmt.Sprintf("- variables: %q is listed twice", v.Name))
		}
		d.Public.Variables[v.Name] = v.Description
	}
	for i, c := range m.Clarifications {
		d.Public.ClarificationRequests = append(d.Public.ClarificationRequests,
			sop.Clarification{ID: fmt.Sprintf("q%d", i+1), Question: c.Question, Importance: c.Importance})
	}
	for _, s := range m.Skills {
		d.Private.Skills = append(d.Private.Skills, sop.Skill{ID: s.ID, App: s.App, MethodType: s.MethodType, PerformanceHint: s.PerformanceHint})
	}
	for _, s := range m.Steps {
		d.Private.Steps = append(d.Private.Steps, sop.Step{NodeID: s.NodeID, PrimarySkill: s.PrimarySkill})
	}
	sop.Repair(d, string(id))
	found := sop.CheckRecorded(d, duration)
	if err := sop.Validate(d); err != nil {
		var inv *sop.Invalid
		if errors.As(err, &inv) {
			found = append(found, inv.Problems...)
		}
	}
	for _, p := range found {
		problems = append(problems, "- "+p.String())
	}
	if len(problems) > 0 {
		return answer{}, strings.Join(problems, "\n") + "\n"
	}
	return answer{d, marks, boxes}, ""
}
