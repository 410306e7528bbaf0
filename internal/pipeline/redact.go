package pipeline

import (
	"context"

	"github.com/runops/runops/internal/privacy"
	"github.com/runops/runops/internal/queue"
)

// redact is the privacy pass (stage redacting): every text of the SOP with
// its sensitive values — found by the detectors, the operator's patterns,
// or marked by the model — replaced by variables, each described in
// public.variables, and metadata.privacy counting them per kind and per
// source, never a value. With RUNOPS_REDACT off it does nothing.
func (p *Pipeline) redact(ctx context.Context, r queue.Reporter, a answer) error {
	if p.cfg.Privacy == nil {
		return nil
	}
	if err := r.Stage(ctx, "redacting"); err != nil {
		return err
	}
	red := privacy.NewRedactor(p.cfg.Privacy, a.marks)
	red.Document(a.doc)
	return r.Merge(ctx, map[string]any{"privacy": red.Report()})
}
