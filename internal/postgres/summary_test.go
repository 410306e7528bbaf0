package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// Reads of many jobs at once share statements (rounds): each still gets
// its own job's answer — a row, an upload's owner without a row, nothing —
// with its own step's screenshot tag, and a write committed before a read
// begins is what that read answers, however many reads run beside it.
func TestSummariesReadTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, err := postgres.OpenPool(ctx, pgtest.New(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := postgres.NewJobStore(pool)
	const rows, uploads, unknown = 30, 5, 5
	ids := make([]jobs.ID, rows+uploads+unknown)
	for i := range ids {
		ids[i] = jobs.ID(uuid.NewString())
		switch {
		case i < rows:
			if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'processing',
				jsonb_build_object('owner', 'owner-' || $2::int, 'stage', 'stage-' || $2::int, 'progress', $2::int / 100.0))`, ids[i], i); err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(ctx, `INSERT INTO runops_stored_tags (job_id, sop, frames) VALUES ($1, 'sop-' || $2::int,
				jsonb_build_object('node-' || $2::int, 'frame-' || $2::int))`, ids[i], i); err != nil {
				t.Fatal(err)
			}
		case i < rows+uploads:
			if _, err := pool.Exec(ctx, `INSERT INTO runops_uploads (job_id, owner) VALUES ($1, 'uploader-' || $2::int)`, ids[i], i); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(i int) error {
		node := fmt.Sprintf("node-%d", i)
		status, err := store.Summary(ctx, ids[i])
		if err != nil {
			return err
		}
		sop, err := store.SOPSummary(ctx, ids[i], node)
		if err != nil {
			return err
		}
		for _, got := range []jobs.Summary{status, sop} {
			switch {
			case i < rows:
				if !got.Found || got.Status != jobs.StatusProcessing || got.Owner != fmt.Sprintf("owner-%d", i) ||
					got.Stage != fmt.Sprintf("stage-%d", i) || got.Progress == nil || *got.Progress != float64(i)/100 {
					return fmt.Errorf("job %d: %+v", i, got)
				}
			case i < rows+uploads:
				if got.Found || got.Owner != fmt.Sprintf("uploader-%d", i) {
					return fmt.Errorf("upload %d: %+v", i, got)
				}
			default:
				if got.Found || got.Owner != "" {
					return fmt.Errorf("unknown %d: %+v", i, got)
				}
			}
		}
		if i < rows && (status.SOPTag != "" || sop.SOPTag != fmt.Sprintf("sop-%d", i) || sop.FrameTag != fmt.Sprintf("frame-%d", i)) {
			return fmt.Errorf("job %d's tags: %q; %q, %q", i, status.SOPTag, sop.SOPTag, sop.FrameTag)
		}
		return nil
	}
	// Metadata a person wrote: a string with every kind of escape, values
	// of other types (none, as Job's accessors read them).
	odd, oddOwner := jobs.ID(uuid.NewString()), "a \"quoted\" \\ back\\slash\n\té 😀 \x01"
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'queued',
		jsonb_build_object('owner', $2::text, 'stage', 7, 'progress', 'half'))`, odd, oddOwner); err != nil {
		t.Fatal(err)
	}
	if got, err := store.Summary(ctx, odd); err != nil || got.Owner != oddOwner || got.Stage != "" || got.Progress != nil {
		t.Fatalf("owner %q, stage %q, progress %v (%v); want %q, none, none", got.Owner, got.Stage, got.Progress, err, oddOwner)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ids)*4)
	for reader := range 4 {
		for i := range ids {
			wg.Go(func() {
				if err := check((i + reader*7) % len(ids)); err != nil {
					errs <- err
				}
			})
		}
	}
	// Meanwhile another job moves on, and every read begun after a write
	// answers that write.
	moving := jobs.ID(uuid.NewString())
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'processing', '{}')`, moving); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		for step := range 50 {
			if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = jsonb_set(metadata, '{progress}', to_jsonb($2::int)) WHERE job_id = $1`,
				moving, step); err != nil {
				errs <- err
				return
			}
			got, err := store.Summary(ctx, moving)
			if err != nil || got.Progress == nil || *got.Progress != float64(step) {
				errs <- fmt.Errorf("after progress %d was written, a read answered %+v (%v)", step, got, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
