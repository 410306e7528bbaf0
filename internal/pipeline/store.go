package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
	"golang.org/x/sync/errgroup"
)

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
	var big *sop.TooLarge
	b, err := sop.Marshal(doc)
	switch {
	case errors.As(err, &big):
		// Stored, it could not be read back: the viewer would get a 409.
		return jobs.Fail(msgTooLong, err)
	case err != nil:
		return err
	}
	// Each try takes the lock and checks the lease anew: no lock is held
	// through the waits between tries.
	err = p.retry(ctx, storageService, func() error {
		return p.outputLock.WithSOPLockWhileHolding(ctx, job.ID, job.Token, func(ctx context.Context) error {
			// Forgotten while it is stored, recorded once it is, with the
			// tags of the screenshots it shows that this run stored: a tag
			// recorded is always that of what is stored and shown.
			shown := sop.Shown(doc)
			frames := map[string]string{}
			for _, node := range shown {
				if tag, ok := shots.tags[node]; ok {
					frames[node] = tag
				}
			}
			if _, err := p.outputLock.StoreTagged(ctx, job.ID, b, shown, frames, func() error {
				return p.objects.Upload(ctx, job.ID.SOPPath(), bytes.NewReader(b), int64(len(b)), "application/json")
			}); err != nil {
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

// storeShots uploads the pending screenshots (stage uploading_sop, before
// the SOP that names them) and records metadata.frames: steps whose
// upload did not end within FramesTimeout are noted, and the SOP is stored
// without them.
func (p *Pipeline) storeShots(ctx context.Context, job queue.Job, r queue.Reporter, doc *sop.Document, set *shotSet) error {
	sctx, cancel := context.WithTimeout(ctx, p.cfg.FramesTimeout)
	defer cancel()
	stored, err := p.uploadShots(sctx, job, r, set)
	if err != nil {
		if sctx.Err() == nil || ctx.Err() != nil {
			return err
		}
		p.cfg.Logger.WarnContext(ctx, "storing the screenshots took too long; the SOP is stored with those that were", "error", err)
	}
	missing := set.missing
	for _, ps := range set.pending {
		if ps.node.Screenshot == "" {
			missing = append(missing, missingFrame{ps.node.ID, whyTooLong(p.cfg.FramesTimeout)})
		}
	}
	slices.SortStableFunc(missing, func(a, b missingFrame) int { return nodeIndex(doc, a.Node) - nodeIndex(doc, b.Node) })
	return r.Merge(ctx, map[string]any{"frames": map[string]any{"count": set.kept + stored, "missing": missing}})
}

// uploadShots uploads the pending screenshots and names each in its
// step's screenshot; it returns how many it stored. Under the lease, as
// the SOP itself: a worker that lost the job never writes over a newer
// run's screenshots. Each batch is read once, before the lock: a retry
// holds the lock only to forget the tags and upload.
func (p *Pipeline) uploadShots(ctx context.Context, job queue.Job, r queue.Reporter, set *shotSet) (int, error) {
	pending := set.pending
	stored := 0
	for batch := range slices.Chunk(pending, uploadsPerHold) {
		shots, forget, err := readShots(batch, set)
		if err != nil {
			return stored, err
		}
		err = p.retry(ctx, storageService, func() error {
			return p.outputLock.WithSOPLockWhileHolding(ctx, job.ID, job.Token, func(ctx context.Context) error {
				if err := p.outputLock.RecordFrames(ctx, job.ID, forget); err != nil {
					return err
				}
				g, ctx := errgroup.WithContext(ctx)
				g.SetLimit(uploadsAtOnce)
				for i, ps := range batch {
					g.Go(func() error {
						return p.objects.Upload(ctx, job.ID.FramePath(ps.node.ID), bytes.NewReader(shots[i]), int64(len(shots[i])), "image/jpeg")
					})
				}
				return g.Wait()
			})
		})
		if err != nil {
			return stored, err
		}
		for _, ps := range batch {
			ps.node.Screenshot = job.ID.FramePath(ps.node.ID)
		}
		stored += len(batch)
		_ = r.Progress(ctx, float64(stored)/float64(len(pending)))
	}
	return stored, nil
}

// readShots reads a batch of screenshots about to be stored. Their new tags
// are kept in set, recorded with the SOP that shows them (writeSOP); forget
// forgets their recorded ones while they are stored.
func readShots(batch []pendingShot, set *shotSet) (shots [][]byte, forget map[string]string, err error) {
	if set.tags == nil {
		set.tags = map[string]string{}
	}
	shots, forget = make([][]byte, len(batch)), make(map[string]string, len(batch))
	for i, ps := range batch {
		if shots[i], err = os.ReadFile(ps.file); err != nil {
			return nil, nil, err
		}
		set.tags[ps.node.ID], forget[ps.node.ID] = jobs.ETag(shots[i]), ""
	}
	return shots, forget, nil
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
	switch stale, err := RemoveUnshown(ctx, p.objects, job.ID, doc); {
	case err != nil:
		p.cfg.Logger.WarnContext(ctx, "could not delete the screenshots of steps the SOP no longer has", "paths", stale, "error", err)
	case len(stale) > 0:
		p.cfg.Logger.InfoContext(ctx, "removed the screenshots of steps the SOP no longer has", "paths", stale)
	}
}

// RemoveUnshown deletes the screenshots in id's folder that doc does not
// show (sop.Unshown), and returns them.
func RemoveUnshown(ctx context.Context, objects interface {
	List(ctx context.Context, folder string) ([]string, error)
	Remove(ctx context.Context, paths ...string) error
}, id jobs.ID, doc *sop.Document) ([]string, error) {
	names, err := objects.List(ctx, id.FramesFolder())
	if err != nil {
		return nil, err
	}
	stale := sop.Unshown(doc, id.FramesFolder(), names)
	if len(stale) == 0 {
		return nil, nil
	}
	return stale, objects.Remove(ctx, stale...)
}
