// Package retention is the janitor that deletes what a job no longer needs:
// its upload (videos/raw/<id>.mp4) RUNOPS_RAW_RETENTION after the job ended,
// and its slim copy after RUNOPS_SLIM_RETENTION when that is set. Never a
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
}

// Objects deletes objects; a missing one is no error.
type Objects interface {
	Remove(ctx context.Context, paths ...string) error
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
	type round func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error)
	var rounds []round
	var kinds []Kind
	for _, k := range []struct {
		kind  Kind
		after time.Duration
	}{{Raw, j.Raw}, {Slim, j.Slim}} {
		if k.after > 0 {
			rounds = append(rounds, func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error) {
				return j.Store.Expire(ctx, k.kind, k.after, limit, remove)
			})
			kinds = append(kinds, k.kind)
		}
	}
	if j.Raw > 0 {
		rounds = append(rounds, func(ctx context.Context, limit int, remove func(context.Context, []jobs.ID) error) (int, error) {
			// Never before its upload URL expires: forgotten sooner, an
			// upload that came through it later would have no owner, and
			// its job would be open to all.
			return j.Store.ExpireUnqueued(ctx, max(j.Raw, uploadURLLifetime), limit, remove)
		})
		kinds = append(kinds, Raw)
	}
	total := 0
	for i, run := range rounds {
		kind := kinds[i]
		for {
			n, err := run(ctx, batch, func(ctx context.Context, ids []jobs.ID) error {
				paths := make([]string, len(ids))
				for i, id := range ids {
					paths[i] = kind.Path(id)
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

// Run deletes what is due every Every (jittered, as many workers run one
// each) until ctx is done.
func (j *Janitor) Run(ctx context.Context) {
	for {
		wait := backoff.Spread(j.Every, 0.2)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
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
