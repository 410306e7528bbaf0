package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
	"github.com/runops/runops/internal/wait"
)

// Outcomes written together end each job as it would have ended alone:
// each row's fence holds (a lost lease matches nothing), and text the
// database cannot store is left out of its own job's outcome only, which is
// written plainer (no patch and cause; then the generic sentence) at once.
func TestOutcomesWrittenTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.New(t)
	pool := pgtest.Open(t, dsn, 4)
	queuetest.Burst(t, pool, 9)
	// Listening from after the inserts: the claim and outcomes that follow
	// are the worker's own.
	listener, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, `LISTEN runops_jobs`); err != nil {
		t.Fatal(err)
	}
	s := postgres.NewQueueStore(pool)
	claimed, err := s.Claim(ctx, "w", 9, time.Minute)
	if err != nil || len(claimed) != 9 {
		t.Fatalf("%d claimed: %v", len(claimed), err)
	}
	type result struct {
		ok, refused     bool
		status, message string
	}
	type write struct {
		do   func(c queue.Claimed) (bool, error)
		want result
	}
	finish := func(token func(queue.Claimed) string, status jobs.Status, message, cause string, patch map[string]any) func(queue.Claimed) (bool, error) {
		return func(c queue.Claimed) (bool, error) {
			return s.Finish(ctx, queue.Outcome{ID: c.ID, Token: token(c), Status: status, Message: message, Cause: cause, Patch: patch})
		}
	}
	own := func(c queue.Claimed) string { return c.Token }
	timings := map[string]any{"timings": map[string]any{"x_ms": 1}}
	complete := write{finish(own, jobs.StatusCompleted, "", "", timings), result{true, false, "completed", ""}}
	rounds := [][]write{
		{ // the database takes them all: one statement
			complete,
			{finish(own, jobs.StatusCompleted, "", "", nil), result{true, false, "completed", ""}},
			{finish(own, jobs.StatusError, "Too long.", "cause", nil), result{true, false, "error", "Too long."}},
			{finish(func(queue.Claimed) string { return "not-the-token" }, jobs.StatusError, "Too long.", "x", nil), result{false, false, "processing", ""}},
			{finish(own, jobs.StatusError, "Gone.", "", map[string]any{}), result{true, false, "error", "Gone."}},
		},
		{ // text it refuses (a NUL) is left out of that job's outcome only
			{finish(own, jobs.StatusCompleted, "", "", map[string]any{"bad": "nul \u0000 in text"}), result{true, false, "completed", ""}},
			{finish(own, jobs.StatusError, "Too long.", "nul \u0000 in the cause", nil), result{true, false, "error", "Too long."}},
			{finish(own, jobs.StatusError, "nul \u0000 in the sentence", "", nil), result{true, false, "error", queue.GenericSentence}},
			complete,
		},
	}
	next := 0
	for r, writes := range rounds {
		batch := claimed[next : next+len(writes)]
		next += len(writes)
		queued, release := s.HoldOutcomes(t)
		got := make([]result, len(writes))
		var wg sync.WaitGroup
		for i, w := range writes {
			wg.Go(func() {
				ok, err := w.do(batch[i])
				got[i] = result{ok: ok, refused: err != nil}
			})
		}
		wait.For(t, "the writes to queue", 30*time.Second, func() bool { return queued() >= len(writes) })
		release()
		wg.Wait()
		moments := map[string]bool{}
		for i, w := range writes {
			var status, errText, outcome, ended string
			if err := pool.QueryRow(ctx, `SELECT status, coalesce(error, ''), coalesce(metadata->'attempts'->0->>'outcome', ''),
				coalesce(metadata->'attempts'->0->>'ended_at', '') FROM jobs WHERE job_id = $1`, string(batch[i].ID)).
				Scan(&status, &errText, &outcome, &ended); err != nil {
				t.Fatal(err)
			}
			got[i].status, got[i].message = status, errText
			if got[i] != w.want {
				t.Errorf("round %d, write %d: %+v, want %+v", r, i, got[i], w.want)
			}
			if status != "processing" {
				moments[ended] = true
				if outcome != status {
					t.Errorf("round %d, write %d: %s with error %q, attempt outcome %q", r, i, status, errText, outcome)
				}
			}
		}
		if r == 0 && len(moments) != 1 {
			t.Errorf("the outcomes of the first round ended at %d moments; one statement wrote them all", len(moments))
		}
	}
	// The worker's claim and outcomes notify nobody: the first notification
	// since the LISTEN is a marker sent after them all.
	if _, err := pool.Exec(ctx, `SELECT pg_notify('runops_jobs', 'marker')`); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != "marker" {
		t.Fatalf("the outcomes notified: %+v %v", n, err)
	}
}
