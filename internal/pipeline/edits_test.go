package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// editAt is a handler that runs the pipeline and, the first time a run
// enters stage, makes edit on its job as a person would (by SQL, the
// notification off when quiet: a listening worker that lost it) — and then
// lets the stage go on, for the engine to stop it.
type editAt struct {
	queue.Handler
	stage  string
	edit   func(ctx context.Context, id jobs.ID)
	once   sync.Once
	edited atomic.Bool
}

func (h *editAt) Run(ctx context.Context, j queue.Job, r queue.Reporter) error {
	return h.Handler.Run(ctx, j, &editingReporter{Reporter: r, h: h, id: j.ID})
}

type editingReporter struct {
	queue.Reporter
	h  *editAt
	id jobs.ID
}

func (r *editingReporter) Stage(ctx context.Context, name string) error {
	err := r.Reporter.Stage(ctx, name)
	if name == r.h.stage {
		r.h.once.Do(func() {
			r.h.edit(ctx, r.id)
			r.h.edited.Store(true)
		})
	}
	return err
}

// A person's re-queue stops the run whatever stage it is in, polling or
// listening: the attempt ends cancelled (not lost), nothing of it is
// written after, and the job runs again to the end. A stop (status error,
// by hand) leaves the person's words and no SOP.
func TestEditsStopEveryStage(t *testing.T) {
	t.Parallel()
	stages := []string{"downloading", "transcoding", "gemini_upload", "gemini_processing", "frames", "redacting", "uploading_sop"}
	for _, listen := range []bool{true, false} {
		for _, stage := range stages {
			for _, stop := range []bool{false, true} {
				if stop && stage != "transcoding" && stage != "frames" {
					continue // a stop is a re-queue's first half: two stages that run ffmpeg are enough
				}
				what := "requeue"
				if stop {
					what = "stop"
				}
				t.Run(fmt.Sprintf("%s/%s/listen=%v", what, stage, listen), func(t *testing.T) {
					t.Parallel()
					var r *rig
					edit := func(ctx context.Context, id jobs.ID) {
						sql := `UPDATE jobs SET status = 'queued' WHERE job_id = $1`
						if stop {
							sql = `UPDATE jobs SET status = 'error', error = 'Stopped by a person.' WHERE job_id = $1`
						}
						if _, err := r.pool.Exec(context.WithoutCancel(ctx), sql, string(id)); err != nil {
							t.Error(err)
						}
					}
					h := &editAt{stage: stage, edit: edit}
					r = newRigOf(t, rigOptions{logger: quiet, listen: listen, wrap: func(p queue.Handler) queue.Handler {
						h.Handler = p
						return h
					}}, withPrivacy) // the redacting stage runs only with it
					defer func() {
						if !h.edited.Load() {
							t.Errorf("no run entered %s", stage)
						}
					}()
					id := r.submit(r.video(), nil)
					if stop {
						r.waitFor("the attempt closed", func() bool {
							attempts, _ := r.job(id).Metadata["attempts"].([]any)
							return len(attempts) == 1 && attempts[0].(map[string]any)["outcome"] == "cancelled"
						})
						j := r.job(id)
						if j.Status != jobs.StatusError || deref(j.Error) != "Stopped by a person." {
							t.Fatalf("the run overwrote the person's stop: %s %q", j.Status, deref(j.Error))
						}
						if _, ok := r.fake.Object("videos/" + id.SOPPath()); ok {
							t.Fatal("an SOP was written after the stop")
						}
						return
					}
					j := r.finished(id)
					attempts, _ := j.Metadata["attempts"].([]any)
					if j.Status != jobs.StatusCompleted || len(attempts) != 2 {
						t.Fatalf("%s, attempts %v", outcome(j), attempts)
					}
					if o := attempts[0].(map[string]any)["outcome"]; o != "cancelled" {
						t.Fatalf("the edited attempt ended %v, not cancelled", o)
					}
				})
			}
		}
	}
}

// stopAfterFrames is a reporter that, once the run's record of its
// screenshots is written (storeShots' merge, the last write before the
// SOP's), stops the job as a person would, quietly (a polling worker).
type stopAfterFrames struct {
	queue.Reporter
	stop func()
}

func (r *stopAfterFrames) Merge(ctx context.Context, patch map[string]any) error {
	err := r.Reporter.Merge(ctx, patch)
	if _, ok := patch["frames"]; ok && err == nil {
		r.stop()
	}
	return err
}

// A person's stop that the SOP's own write meets first (WithSOPLockWhileHolding, not
// the Reporter) is a cancellation too, as issue 31 has it "whichever of the
// run's statements meets it first": the Gemini file is deleted, as after a
// stop the Reporter or the heartbeat meets (TestPersonCancelsDuringTheGeminiCall).
func TestAStopTheSOPsWriteMeetsIsACancellation(t *testing.T) {
	t.Parallel()
	var r *rig
	var once sync.Once
	r = newRigOf(t, rigOptions{logger: quiet, listen: false, wrap: func(p queue.Handler) queue.Handler {
		return queue.HandlerFunc(func(ctx context.Context, j queue.Job, rep queue.Reporter) error {
			return p.Run(ctx, j, &stopAfterFrames{Reporter: rep, stop: func() {
				once.Do(func() {
					if _, err := r.pool.Exec(context.WithoutCancel(ctx), `UPDATE jobs SET status = 'error', error = 'Stopped by a person.' WHERE job_id = $1`, string(j.ID)); err != nil {
						t.Error(err)
					}
				})
			}})
		})
	}})
	id := r.submit(r.video(), nil)
	r.waitFor("the attempt closed", func() bool {
		attempts, _ := r.job(id).Metadata["attempts"].([]any)
		return len(attempts) == 1 && attempts[0].(map[string]any)["outcome"] == "cancelled"
	})
	if _, ok := r.fake.Object("videos/" + id.SOPPath()); ok {
		t.Fatal("an SOP was written after the stop")
	}
	if len(r.ai.Deleted()) == 0 {
		t.Fatalf("the Gemini file was kept after the person stopped the job: %v", r.ai.Files())
	}
}
