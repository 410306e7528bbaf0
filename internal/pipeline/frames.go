package pipeline

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// frameTimeout bounds one screenshot's ffmpeg run (a seek decodes at most
// from the keyframe before the moment).
const frameTimeout = 2 * time.Minute

// missingFrame is an entry of metadata.frames.missing: a shown step without
// a screenshot, and why, for a person.
type missingFrame struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// frames takes a screenshot of every shown step from the raw upload (raw,
// or downloaded again when a previous attempt's slim copy was reused), at
// the step's timestamp, stores it at frames/<jobId>/<nodeId>.jpg and sets
// the node's screenshot. A step whose picture cannot be taken keeps its
// place without one, noted in metadata.frames; a storage outage that
// outlasts the retries ends the job as any storage outage does.
func (p *Pipeline) frames(ctx context.Context, job queue.Job, r queue.Reporter, doc *sop.Document, raw string) error {
	var shown []int
	for i, n := range doc.Public.Nodes {
		if n.Evidence == sop.EvidenceShown && n.Timestamp != "" {
			shown = append(shown, i)
		}
	}
	count, missing := 0, []missingFrame{}
	record := func() error {
		return r.Merge(ctx, map[string]any{"frames": map[string]any{"count": count, "missing": missing}})
	}
	if len(shown) == 0 {
		return record()
	}
	if raw == "" {
		raw = filepath.Join(job.TempDir, "raw")
		if err := p.download(ctx, job, r, raw); err != nil {
			var f *jobs.Failure
			if !errors.As(err, &f) {
				return err
			}
			reason := "the recording could not be read again"
			if errors.Is(err, jobs.ErrObjectMissing) {
				reason = "the recording is no longer in storage"
			}
			p.cfg.Logger.WarnContext(ctx, "no screenshots: the raw upload cannot be read", "error", err)
			for _, i := range shown {
				missing = append(missing, missingFrame{doc.Public.Nodes[i].ID, reason})
			}
			return record()
		}
	}
	if err := r.Stage(ctx, "frames"); err != nil {
		return err
	}
	for k, i := range shown {
		n := &doc.Public.Nodes[i]
		reason, err := p.frame(ctx, job, raw, n)
		if err != nil {
			return err
		}
		if reason != "" {
			missing = append(missing, missingFrame{n.ID, reason})
		} else {
			count++
		}
		_ = r.Progress(ctx, float64(k+1)/float64(len(shown)))
	}
	return record()
}

// frame takes and stores one step's screenshot. It returns why there is
// none ("" when there is one), or an error that ends the attempt.
func (p *Pipeline) frame(ctx context.Context, job queue.Job, raw string, n *sop.Node) (string, error) {
	if !jobs.SafeNodeID(n.ID) {
		return "the step's id cannot name a file (letters, digits, - and _ only)", nil
	}
	at, _ := sop.ParseTimestamp(n.Timestamp) // well formed: the document was validated
	file := filepath.Join(job.TempDir, "frame-"+n.ID+".jpg")
	defer os.Remove(file)
	fctx, cancel := context.WithTimeout(ctx, frameTimeout)
	err := ffmpeg.Frame(fctx, raw, at, file)
	cancel()
	switch {
	case ctx.Err() != nil:
		return "", ctx.Err()
	case errors.Is(err, ffmpeg.ErrNoFrame):
		return "the video has no picture at " + n.Timestamp, nil
	case err != nil:
		p.cfg.Logger.WarnContext(ctx, "screenshot failed", "node", n.ID, "at", n.Timestamp, "error", err)
		return "the picture at " + n.Timestamp + " could not be taken", nil
	}
	st, err := os.Stat(file)
	if err != nil {
		return "", err
	}
	path := job.ID.FramePath(n.ID)
	// Under the lease, as the SOP itself: a worker that lost the job never
	// writes over a newer run's screenshots.
	err = p.retry(ctx, msgStorageDown, func() error {
		return p.sops.WithSOPLease(ctx, job.ID, job.Token, func(ctx context.Context) error {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			return p.objects.Upload(ctx, path, f, st.Size(), "image/jpeg")
		})
	})
	if err != nil {
		return "", err
	}
	n.Screenshot = path
	return "", nil
}

// dropStaleFrames deletes the screenshots in the job's folder that the SOP
// just stored does not name: those of an earlier run, or attempt, whose
// steps this one does not have. A job's first claim has no earlier one, and
// asks storage nothing. It runs under the lease, with the SOP's write (no
// newer run can have begun), and only tidies: a failure is logged, and the
// job goes on.
func (p *Pipeline) dropStaleFrames(ctx context.Context, job queue.Job, doc *sop.Document) {
	if claims, _ := job.Metadata["attempts"].([]any); len(claims) <= 1 {
		return
	}
	names, err := p.objects.List(ctx, job.ID.FramesFolder())
	if err != nil {
		p.cfg.Logger.WarnContext(ctx, "could not list the job's screenshots", "error", err)
		return
	}
	keep := map[string]bool{}
	for _, n := range doc.Public.Nodes {
		keep[n.Screenshot] = n.Screenshot != ""
	}
	var stale []string
	for _, name := range names {
		if path := job.ID.FramesFolder() + "/" + name; !keep[path] {
			stale = append(stale, path)
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := p.objects.Remove(ctx, stale...); err != nil {
		p.cfg.Logger.WarnContext(ctx, "could not delete the screenshots of steps the SOP no longer has", "paths", stale, "error", err)
		return
	}
	p.cfg.Logger.InfoContext(ctx, "removed the screenshots of steps the SOP no longer has", "paths", stale)
}
