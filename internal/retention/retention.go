// Package retention is the janitor that deletes what a job no longer needs:
// its upload (videos/raw/<id>.mp4) RUNOPS_RAW_RETENTION after the job ended,
// and its slim copy after RUNOPS_SLIM_RETENTION when that is set; all a job
// had (upload, slim copy, SOP, screenshots) RUNOPS_RAW_RETENTION after a
// person deleted its row. Never a
// queued or processing job's. The tables say what is due (no scan of the
// bucket), and each due job is taken by one janitor at a time, so with many
// workers every object is deleted once; the deletion is recorded in
// metadata.retention and the job's row stays (job-status keeps answering).
package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/runops/runops/internal/backoff"
	"github.com/runops/runops/internal/jobs"
)

// Kind is what is deleted: the upload or the slim copy.
type Kind string

// The two kinds, named as their metadata.retention keys are.
const (
	Raw  Kind = "raw"
	Slim Kind = "slim"
)

// Path is where a job's object of this kind lives.
func (k Kind) Path(id jobs.ID) string {
	if k == Slim {
		return id.SlimPath()
	}
	return id.RawPath()
}

// Store is what the janitor needs of the jobs table.
type Store interface {
	// Expire takes up to limit ended jobs whose kind is due (ended more than
	// after ago, not deleted yet), calls remove with their ids while no other
	// janitor can take them, and records the deletion for those remove
	// returns nil for. It returns how many it recorded.
	Expire(ctx context.Context, kind Kind, after time.Duration, limit int, remove func(context.Context, []jobs.ID) error) (int, error)
	// ExpireUnqueued does the same for uploads issued more than after ago
	// that were never queued, and forgets them once removed.
	ExpireUnqueued(ctx context.Context, after time.Duration, limit int, remove func(context.Context, []jobs.ID) error) (int, error)
	// ExpireDeleted does the same for the uploads of jobs a person deleted
	// more than after ago (and did not put back), and forgets them once
	// their job's every object is removed.
	ExpireDeleted(ctx context.Context, after time.Duration, limit int, remove func(context.Context, []jobs.ID) error) (int, error)
}

// Objects deletes objects, a missing one no error, and lists a folder's.
type Objects interface {
	Remove(ctx context.Context, paths ...string) error
	List(ctx context.Context, folder string) ([]string, error)
}

// Janitor deletes due objects every Every.
type Janitor struct {
	Store   Store
	Objects Objects
	Raw     time.Duration // RUNOPS_RAW_RETENTION (> 0)
	Slim    time.Duration // RUNOPS_SLIM_RETENTION; 0 = keep
	Every   time.Duration // RUNOPS_SWEEP
	Logger  *slog.Logger
}

// uploadURLLifetime is how long a signed upload URL works: Supabase
// Storage's, 2 hours (UPLOAD_SIGNED_URL_EXPIRATION_TIME; the server's
// setting wins over anything asked per URL). An upload never queued is not
// deleted, nor its owner forgotten, before its URL has expired, however
// short RUNOPS_RAW_RETENTION is.
const uploadURLLifetime = 2 * time.Hour

// batch bounds one round's deletions per kind.
const batch = 100

// Once deletes what is due now, in rounds of batch, and returns how many
// jobs' (and never-queued uploads') objects it deleted.
func (j *Janitor) Once(ctx context.Context) (int, error) {
	type round struct {
		expire func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error)
		paths  func(ctx context.Context, id jobs.ID) ([]string, error) // a job's objects this round deletes
	}
	var rounds []round
	for _, k := range []struct {
		kind  Kind
		after time.Duration
	}{{Raw, j.Raw}, {Slim, j.Slim}} {
		if k.after > 0 {
			rounds = append(rounds, round{
				expire: func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error) {
					return j.Store.Expire(ctx, k.kind, k.after, limit, remove)
				},
				paths: func(_ context.Context, id jobs.ID) ([]string, error) { return []string{k.kind.Path(id)}, nil },
			})
		}
	}
	if j.Raw > 0 {
		rounds = append(rounds, round{
			expire: func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error) {
				// Never before its upload URL expires: forgotten sooner, an
				// upload that came through it later would have no owner, and
				// its job would be open to all.
				return j.Store.ExpireUnqueued(ctx, max(j.Raw, uploadURLLifetime), limit, remove)
			},
			paths: func(_ context.Context, id jobs.ID) ([]string, error) { return []string{id.RawPath()}, nil },
		}, round{
			// A job a person deleted: everything it had, once the raw
			// retention has passed since (the row may come back before).
			expire: func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error) {
				return j.Store.ExpireDeleted(ctx, j.Raw, limit, remove)
			},
			paths: j.everyObject,
		})
	}
	total := 0
	for _, r := range rounds {
		for {
			n, err := r.expire(ctx, batch, func(ctx context.Context, ids []jobs.ID) error {
				var paths []string
				for _, id := range ids {
					p, err := r.paths(ctx, id)
					if err != nil {
						return err
					}
					paths = append(paths, p...)
				}
				return j.Objects.Remove(ctx, paths...)
			})
			total += n
			if err != nil {
				return total, err
			}
			if n < batch {
				break
			}
		}
	}
	return total, nil
}

// everyObject is every object a job may have: its upload, slim copy and
// SOP, and the screenshots its folder lists.
func (j *Janitor) everyObject(ctx context.Context, id jobs.ID) ([]string, error) {
	shots, err := j.Objects.List(ctx, id.FramesFolder())
	if err != nil {
		return nil, err
	}
	paths := []string{id.RawPath(), id.SlimPath(), id.SOPPath()}
	for _, name := range shots {
		paths = append(paths, id.FramesFolder()+"/"+name)
	}
	return paths, nil
}

// Run deletes what is due every Every (jittered, as many workers run one
// each) until ctx is done.
func (j *Janitor) Run(ctx context.Context) {
	for {
		if backoff.Sleep(ctx, backoff.Spread(j.Every, 0.2)) != nil {
			return
		}
		n, err := j.Once(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			j.Logger.Warn("retention: deleting expired objects failed; trying again later", "deleted", n, "error", err)
		case n > 0:
			j.Logger.Info("retention: expired objects deleted", "jobs", n)
		}
	}
}
