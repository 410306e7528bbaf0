package pipeline

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/metrics"
	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
)

// PromptVersion names the embedded prompt; it is recorded with every SOP.
const PromptVersion = "sop-v4"

//go:embed prompt_sop_v4.md
var prompt string

const systemInstruction = "You write Standard Operating Procedures from narrated screen recordings. " +
	"You answer with JSON that matches the response schema, and nothing else."

// Extraction's bounds.
const (
	maxCalls     = 3
	reuseMinLife = time.Hour
)

// filePolls paces the reads of an uploaded file's state until it is ACTIVE:
// from 250 ms (a small file is often ACTIVE within a second), doubling,
// up to 2 s; FileActiveTimeout, not the tries, gives up.
var filePolls = backoff.Policy{First: 250 * time.Millisecond, Max: 2 * time.Second}

// extract turns the slim copy into the job's SOP document, checked. It
// returns the Gemini file's name whenever there is one (also with an error),
// for keepOrDeleteModelFile.
func (p *Pipeline) extract(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult) (answer, string, error) {
	file, err := p.geminiFile(ctx, job, r, slim)
	if err != nil || file.Name == "" {
		return answer{}, file.Name, err
	}
	a, err := p.askForSOP(ctx, job, r, slim, file)
	return a, file.Name, err
}

// geminiFile returns an ACTIVE Gemini file of the slim copy: the previous
// attempt's when it is still there (ACTIVE, or PROCESSING still), made from
// the same bytes, and has more than an hour left; otherwise a new upload.
// On an error after the upload the file is returned too, so that the
// caller can decide its fate. Every call has a deadline (FileCallTimeout;
// an upload's grows with its size): a stalled connection is retried, and
// the wait for ACTIVE counts the time the calls take too.
func (p *Pipeline) geminiFile(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult) (ModelFile, error) {
	if err := r.Stage(ctx, "gemini_upload"); err != nil {
		return ModelFile{}, err
	}
	f, reused := p.previousFile(ctx, job, slim)
	if !reused {
		err := p.retry(ctx, geminiService, func() error {
			return bounded(ctx, p.uploadDeadline(slim), func(ctx context.Context) error {
				var err error
				f, err = p.model.Upload(ctx, slim.File, "video/mp4", "runops-"+string(job.ID))
				return err
			})
		})
		if err != nil {
			return ModelFile{}, p.geminiFailure(ctx, err)
		}
		if err := r.Merge(ctx, map[string]any{"gemini": map[string]any{
			"file_name": f.Name, "file_expires_at": f.ExpiresAt, "slim_sha256": slim.SHA256}}); err != nil {
			return f, err
		}
	}
	if err := r.Stage(ctx, "gemini_processing"); err != nil {
		return f, err
	}
	start := time.Now()
	polls := backoff.Backoff{Policy: filePolls}
	for f.State != "ACTIVE" {
		if f.State == "FAILED" {
			return f, jobs.Fail(msgFileFailed, errors.New(f.Error))
		}
		if took := max(polls.Waited(), time.Since(start)); took >= p.cfg.FileActiveTimeout {
			return f, jobs.Fail(msgFileSlow, fmt.Errorf("file %s still %s after %s", f.Name, f.State, took))
		}
		wait, _ := polls.Next()
		if err := p.cfg.Sleep(ctx, wait); err != nil {
			return f, err
		}
		err := p.retry(ctx, geminiService, func() error {
			got, err := p.fileState(ctx, f.Name)
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

// previousFile is the previous attempt's Gemini file when this attempt can
// use it (reused: the same bytes, ACTIVE or PROCESSING still, more than an
// hour left). One it cannot use is deleted: it would count against the
// quota for the 48 hours Gemini keeps it.
func (p *Pipeline) previousFile(ctx context.Context, job queue.Job, slim SlimResult) (f ModelFile, reused bool) {
	prev, _ := job.Metadata["gemini"].(map[string]any)
	name, _ := prev["file_name"].(string)
	if name == "" {
		return ModelFile{}, false
	}
	sha, _ := prev["slim_sha256"].(string)
	exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(prev["file_expires_at"]))
	if sha == slim.SHA256 && time.Until(exp) > reuseMinLife {
		f, err := p.fileState(ctx, name)
		switch {
		case err == nil && (f.State == "ACTIVE" || f.State == "PROCESSING") && time.Until(f.ExpiresAt) > reuseMinLife:
			p.cfg.Logger.InfoContext(ctx, "reusing the Gemini file of a previous attempt", "file", name, "state", f.State)
			return f, true
		case errors.Is(err, jobs.ErrUnavailable), ctx.Err() != nil:
			return ModelFile{}, false // its state is not known: left to expire, not deleted
		}
	}
	p.deleteModelFile(ctx, name)
	return ModelFile{}, false
}

// fileState is one call for a file's state, bounded by FileCallTimeout.
func (p *Pipeline) fileState(ctx context.Context, name string) (ModelFile, error) {
	var f ModelFile
	err := bounded(ctx, p.cfg.FileCallTimeout, func(ctx context.Context) error {
		var err error
		f, err = p.model.File(ctx, name)
		return err
	})
	return f, err
}

// minUploadRate is the slowest upload that is not a stall, in bytes a
// second: an upload's deadline is FileCallTimeout twice and its size at
// this rate (a 60 MB slim copy: 9 minutes).
const minUploadRate = 128 << 10

func (p *Pipeline) uploadDeadline(slim SlimResult) time.Duration {
	return 2*p.cfg.FileCallTimeout + time.Duration(float64(slim.Size)/minUploadRate*float64(time.Second))
}

// bounded runs call with a deadline of d: a call that never answers ends as
// the model's timeout, which is retried, not a job that hangs.
func bounded(ctx context.Context, d time.Duration, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return call(ctx)
}

// askForSOP asks the model for the SOP until an answer passes the checks.
func (p *Pipeline) askForSOP(ctx context.Context, job queue.Job, r queue.Reporter, slim SlimResult, file ModelFile) (answer, error) {
	if err := r.Stage(ctx, "extracting"); err != nil {
		return answer{}, err
	}
	duration := time.Duration(slim.Duration * float64(time.Second))
	var (
		usage    Usage
		calls    int
		problems string
		cutOff   bool
		ans      answer
	)
	// This attempt's model, prompt, calls and tokens, however it ends: the
	// calls made were billed (the file was recorded when it was uploaded).
	record := func(ctx context.Context) error {
		return r.Merge(ctx, map[string]any{"gemini": map[string]any{"model": p.model.Model(), "prompt_version": PromptVersion, "calls": calls, "usage": usage}})
	}
	recorded := false
	defer func() {
		if !recorded && calls > 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = record(rctx)
		}
	}()
	for calls < maxCalls && ans.doc == nil {
		req := ModelRequest{System: systemInstruction, Prompt: prompt, FileURI: file.URI, MIMEType: "video/mp4", Schema: schema}
		if problems != "" {
			req.Prompt += "\n\nYour previous answer was rejected for these reasons; answer again, fixing them:\n" + problems
		}
		var resp ModelResponse
		err := p.retry(ctx, geminiService, func() error {
			return bounded(ctx, p.cfg.GenerateTimeout, func(ctx context.Context) error {
				var err error
				resp, err = p.model.Generate(ctx, req)
				return err
			})
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
		if p.cfg.Privacy != nil {
			// They are logged, and kept in metadata.attempts: no value, nor
			// one the rejected answer marked.
			problems = privacy.NewRedactor(p.cfg.Privacy, ans.marks).Scrub(problems)
		}
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
	recorded = true
	if err := record(ctx); err != nil {
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

// geminiFailure turns what is left of a Gemini error into the job's end.
func (p *Pipeline) geminiFailure(ctx context.Context, err error) error {
	var f *jobs.Failure
	switch {
	case errors.As(err, &f), errors.Is(err, context.Canceled), errors.Is(err, queue.ErrLost):
		return err
	case errors.Is(err, jobs.ErrRefusedKey):
		p.cfg.Logger.ErrorContext(ctx, geminiService.refusedKeyOp, "error", err)
		return jobs.Fail(geminiService.refusedKey, err)
	}
	var refused interface{ RefusedRequest() bool }
	if errors.As(err, &refused) && refused.RefusedRequest() {
		return jobs.Fail(msgAIRefused, err) // asking again gets the same
	}
	return jobs.Fail(msgAIDown, err)
}

// keepOrDeleteModelFile decides the Gemini file's fate once the run's outcome (err)
// is known: kept for the next attempt after a transient failure — of any
// later stage too (the screenshots, the SOP's upload) —, a lost job or a
// shutdown; deleted once the job is over for good, a person stopped it
// (cancelled), or a local run was interrupted.
func (p *Pipeline) keepOrDeleteModelFile(ctx context.Context, name string, err error) {
	var f *jobs.Failure
	permanent := errors.As(err, &f) && !errors.Is(err, errExhausted)
	cause := context.Cause(ctx) // a person's edit (queue.ErrCancelled), a local run's Ctrl-C (ErrInterrupted)
	stopped := errors.Is(cause, queue.ErrCancelled) || errors.Is(cause, ErrInterrupted) ||
		errors.Is(err, queue.ErrCancelled) // the SOP's write (OutputLock) may meet the edit first
	if err != nil && !permanent && !stopped {
		return
	}
	p.deleteModelFile(ctx, name)
}

// deleteModelFile deletes a Gemini file, trying again through a passing
// failure for up to deleteBudget, whether or not ctx is done (a person's
// stop ends the run, not the file's deletion). What is left is logged: the
// file goes on its own after 48 hours.
func (p *Pipeline) deleteModelFile(ctx context.Context, name string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteBudget)
	defer cancel()
	err := p.retry(dctx, geminiService, func() error {
		return bounded(dctx, p.cfg.FileCallTimeout, func(c context.Context) error { return p.model.Delete(c, name) })
	})
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "could not delete the Gemini file", "file", name, "error", err)
	}
}

// deleteBudget bounds a file's deletion, its tries and waits together.
const deleteBudget = 30 * time.Second

// hashBytes is hashFile for bytes in memory.
func hashBytes(b []byte) (string, int64, error) { return hashReader(bytes.NewReader(b)) }
