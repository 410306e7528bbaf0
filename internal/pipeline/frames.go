package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/runops/runops/internal/ffmpeg"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/sop"
)

// Bounds of the frames stage (docs/lifecycle.md, screenshots).
const (
	// MaxScreenshots is how many shown steps of one SOP get a screenshot,
	// in the order of its nodes; the others are noted in metadata.frames.
	MaxScreenshots = 100
	// Screenshots are stored uploadsAtOnce at a time, in batches of
	// uploadsPerHold under one hold of the SOP lock and the lease: the lock
	// is never held while a failed batch waits to be tried again.
	uploadsAtOnce  = 4
	uploadsPerHold = 8
)

// missingFrame is an entry of metadata.frames.missing: a shown step without
// a screenshot, and why, for a person.
type missingFrame struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// shot is a shown step that gets a screenshot: the picture of its second.
type shot struct {
	node   *sop.Node
	second int
}

// shotSet is what the frames stage leaves for the stages after it: a
// picture on local disk per step that gets one (to redact, then store),
// the steps that keep a screenshot already stored, and those without one.
type shotSet struct {
	pending []pendingShot
	kept    int
	missing []missingFrame
	tags    map[string]string // node → ETag of the screenshot stored for it
}

// pendingShot is a step's screenshot, on local disk until it is stored:
// the picture of its second, or one an earlier run stored (kept: its
// highlight is drawn on it already).
type pendingShot struct {
	node   *sop.Node
	file   string
	second int
	kept   bool
}

// frames picks the picture of every shown step's second (at most
// MaxScreenshots steps) from shots, the directory the transcode filled;
// after a reused slim copy it is "", and one pass over the raw upload takes
// the seconds needed again. When the raw upload is gone for good, a step
// unchanged since the previous SOP keeps its screenshot. Each step gets a
// file of its own in the work directory: nothing leaves the worker's disk
// before the privacy pass (redact); store uploads them. A step without a
// picture keeps its place, noted; a storage outage is an outage (retried,
// then the job's error), never a missing picture.
func (p *Pipeline) frames(ctx context.Context, job queue.Job, r queue.Reporter, doc *sop.Document, shots string) (*shotSet, error) {
	if shots != "" {
		defer os.RemoveAll(shots)
	}
	if err := r.Stage(ctx, "frames"); err != nil {
		return nil, err
	}
	want, missing := pickShots(doc)
	set := &shotSet{missing: missing}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.FramesTimeout)
	defer cancel()
	why, err := p.takeShots(sctx, job, r, shots, want, set)
	if noSpace(err) {
		// A copy, or a kept screenshot's download: the disk's fault, not
		// the job's.
		return nil, p.outOfSpace(ctx, job, r, err)
	}
	if err != nil {
		if sctx.Err() == nil || ctx.Err() != nil {
			return nil, err
		}
		p.cfg.Logger.WarnContext(ctx, "taking the screenshots again took too long; the SOP is stored without them", "error", err)
		why = func(shot) string { return whyTooLong(p.cfg.FramesTimeout) }
	}
	for _, s := range want {
		if s.node.Screenshot == "" && !slices.ContainsFunc(set.pending, func(ps pendingShot) bool { return ps.node == s.node }) {
			set.missing = append(set.missing, missingFrame{s.node.ID, why(s)})
		}
	}
	if p.cfg.Privacy == nil {
		// No privacy pass to edit the pictures: the highlights are drawn now
		// (with one, in the same edit).
		for _, ps := range set.pending {
			if err := editPicture(ps.file, nil, nil, ps.node.Highlight); err != nil {
				return nil, err
			}
		}
	}
	return set, nil
}

// takeShots gives each step of want its picture in set, from shots or,
// when that is "", from a pass over the raw upload or the previous SOP; it
// returns why the steps left without one have none.
func (p *Pipeline) takeShots(ctx context.Context, job queue.Job, r queue.Reporter, shots string, want []shot, set *shotSet) (func(shot) string, error) {
	why := func(s shot) string { return whyNoFrame + s.node.Timestamp }
	if len(want) == 0 {
		return why, nil
	}
	if shots == "" {
		dir, err := p.retake(ctx, job, r, want)
		if dir != "" {
			defer os.RemoveAll(dir)
		}
		switch {
		case errors.Is(err, jobs.ErrObjectMissing):
			return func(shot) string { return reasonRecordingGone }, p.keepPrevious(ctx, job, want, set)
		case errors.Is(err, errNotTaken):
			why = func(s shot) string { return whyNotTaken + s.node.Timestamp }
		case err != nil:
			return why, err
		}
		shots = dir
	}
	for _, s := range want {
		// A file per step: two steps of one second are redacted (and
		// pointed at) each on its own copy.
		file := filepath.Join(job.TempDir, "shot-"+s.node.ID+".jpg")
		if err := copyFile(filepath.Join(shots, ffmpeg.FrameFile(s.second)), file); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return why, err
		}
		set.pending = append(set.pending, pendingShot{node: s.node, file: file, second: s.second})
	}
	return why, nil
}

// copyFile copies the file at from to to.
func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pickShots lists the shown steps that get a screenshot and notes the
// others: an id that cannot name a file, or past MaxScreenshots.
func pickShots(doc *sop.Document) ([]shot, []missingFrame) {
	var want []shot
	missing := []missingFrame{}
	for i := range doc.Public.Nodes {
		n := &doc.Public.Nodes[i]
		at, ok := sop.ParseTimestamp(n.Timestamp) // well formed: the document was validated
		switch {
		case n.Evidence != sop.EvidenceShown || !ok:
		case !jobs.SafeNodeID(n.ID):
			missing = append(missing, missingFrame{n.ID, whyBadID})
		case len(want) == MaxScreenshots:
			missing = append(missing, missingFrame{n.ID, whyTooMany})
		default:
			want = append(want, shot{n, int(at / time.Second)})
		}
	}
	return want, missing
}

func nodeIndex(doc *sop.Document, id string) int {
	return slices.IndexFunc(doc.Public.Nodes, func(n sop.Node) bool { return n.ID == id })
}

// errNotTaken: the pass over the raw upload failed (logged); its steps are
// noted, and the job goes on.
var errNotTaken = errors.New("the screenshots could not be taken again")

// retake downloads the raw upload again and takes the pictures of the
// seconds want needs in one pass over it (the same frames the transcode
// picked: with the same skip of non-reference frames), into a directory it
// returns. The raw upload gone for good is jobs.ErrObjectMissing; an outage
// that outlasts the retries ends the job.
func (p *Pipeline) retake(ctx context.Context, job queue.Job, r queue.Reporter, want []shot) (string, error) {
	raw := filepath.Join(job.TempDir, "raw")
	defer os.Remove(raw)
	if err := p.fetchRaw(ctx, job, r, raw); err != nil {
		return "", err
	}
	dir := filepath.Join(job.TempDir, "shots")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var seconds []int
	for _, s := range want {
		seconds = append(seconds, s.second)
	}
	slices.Sort(seconds)
	seconds = slices.Compact(seconds)
	// Probed again: which picture the slim copy took, and its structure
	// (this run's probe is not in the claim's metadata).
	probe, err := ffmpeg.ProbeFile(ctx, raw)
	if err == nil {
		err = ffmpeg.Frames(ctx, raw, dir, seconds, probe.VideoStream, probe.BFrames > 0)
	}
	switch {
	case ctx.Err() != nil:
		return "", ctx.Err()
	case noSpace(err):
		return "", p.outOfSpace(ctx, job, r, err)
	case err != nil:
		p.cfg.Logger.WarnContext(ctx, "could not take the screenshots again from the raw upload", "error", err)
		return dir, errNotTaken
	}
	return dir, nil
}

// keepPrevious gives each step of want that the previous SOP had, with the
// same timestamp and a screenshot still in storage, that screenshot again.
// With the privacy pass on, the screenshot is downloaded to go through it
// again, with this run's values and rules, and be stored anew (pending,
// kept); one that cannot be downloaded is dropped with its step's reason.
// With it off, the step points at the stored screenshot as it is.
func (p *Pipeline) keepPrevious(ctx context.Context, job queue.Job, want []shot, set *shotSet) error {
	var prev struct {
		Public struct {
			Nodes []sop.Node `json:"nodes"`
		} `json:"public"`
	}
	err := p.retry(ctx, storageService, func() error {
		body, _, err := p.objects.Download(ctx, job.ID.SOPPath())
		if err != nil {
			return err
		}
		defer body.Close()
		b, err := io.ReadAll(io.LimitReader(body, sop.MaxDocumentBytes))
		if err != nil {
			return fmt.Errorf("%w: %w", jobs.ErrUnavailable, err)
		}
		if json.Unmarshal(b, &prev) != nil {
			p.cfg.Logger.WarnContext(ctx, "the previous SOP cannot be read: no screenshot of it is kept")
		}
		return nil
	})
	if errors.Is(err, jobs.ErrObjectMissing) || len(prev.Public.Nodes) == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	var names []string
	err = p.retry(ctx, storageService, func() (err error) {
		names, err = p.objects.List(ctx, job.ID.FramesFolder())
		return err
	})
	if err != nil {
		return err
	}
	kept := 0
	for _, s := range want {
		path := job.ID.FramePath(s.node.ID)
		i := slices.IndexFunc(prev.Public.Nodes, func(n sop.Node) bool { return n.ID == s.node.ID })
		if i < 0 || prev.Public.Nodes[i].Timestamp != s.node.Timestamp || prev.Public.Nodes[i].Screenshot != path ||
			!slices.Contains(names, s.node.ID+".jpg") {
			continue
		}
		if p.cfg.Privacy == nil {
			s.node.Screenshot = path
			set.kept++
			kept++
			continue
		}
		file := filepath.Join(job.TempDir, "shot-"+s.node.ID+".jpg")
		err := p.retry(ctx, storageService, func() error { return p.downloadFile(ctx, path, file) })
		if errors.Is(err, jobs.ErrObjectMissing) || errors.Is(err, errTooLarge) {
			continue // deleted since the listing, or not one we wrote: the step has none
		}
		if err != nil {
			return err
		}
		set.pending = append(set.pending, pendingShot{node: s.node, file: file, second: s.second, kept: true})
		kept++
	}
	p.cfg.Logger.InfoContext(ctx, "the raw upload is gone: unchanged steps keep their screenshots", "kept", kept, "shown", len(want))
	return nil
}

// downloadFile writes the object at path to the local file.
func (p *Pipeline) downloadFile(ctx context.Context, path, file string) error {
	body, size, err := p.objects.Download(ctx, path)
	if err != nil {
		return err
	}
	defer body.Close()
	if size > maxScreenshotBytes {
		return errTooLarge
	}
	if _, _, err := saveHashed(body, file, maxScreenshotBytes); err != nil {
		os.Remove(file) // what came of it holds no room it was not booked
		return err
	}
	return nil
}

// maxScreenshotBytes bounds a screenshot downloaded again: a 1080p JPEG
// at the quality we write is a few hundred kilobytes; a larger object is
// not one of ours, and its step has none.
const maxScreenshotBytes = 16 << 20
