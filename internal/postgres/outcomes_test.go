package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/queue/queuetest"
)

// Outcomes written together end each job as it would have ended alone:
// each row's fence holds (a lost lease matches nothing), and a value the
// database refuses is refused to its own job only.
func TestOutcomesWrittenTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.New(t)
	pool, err := postgres.OpenPool(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	queuetest.Burst(t, pool, 7)
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
	claimed, err := s.Claim(ctx, "w", 7, time.Minute)
	if err != nil || len(claimed) != 7 {
		t.Fatalf("%d claimed: %v", len(claimed), err)
	}
	type result struct {
		ok, refused bool
		status      string
	}
	type write struct {
		do   func(c queue.Claimed) (bool, error)
		want result
	}
	complete := write{func(c queue.Claimed) (bool, error) {
		return s.Complete(ctx, c.ID, c.Token, map[string]any{"timings": map[string]any{"x_ms": 1}})
	}, result{true, false, "completed"}}
	rounds := [][]write{
		{ // the database takes them all: one statement
			complete,
			{func(c queue.Claimed) (bool, error) { return s.Complete(ctx, c.ID, c.Token, nil) }, result{true, false, "completed"}},
			{func(c queue.Claimed) (bool, error) { return s.Fail(ctx, c.ID, c.Token, "Too long.", "cause", nil) }, result{true, false, "error"}},
			{func(c queue.Claimed) (bool, error) { return s.Fail(ctx, c.ID, "not-the-token", "Too long.", "x", nil) }, result{false, false, "processing"}},
			{func(c queue.Claimed) (bool, error) { return s.Fail(ctx, c.ID, c.Token, "Gone.", "", map[string]any{}) }, result{true, false, "error"}},
		},
		{ // one it refuses (text with a NUL), and one it takes
			{func(c queue.Claimed) (bool, error) {
				return s.Complete(ctx, c.ID, c.Token, map[string]any{"bad": "nul \u0000 in text"})
			}, result{false, true, "processing"}},
			complete,
		},
	}
	next := 0
	for r, writes := range rounds {
		jobs := claimed[next : next+len(writes)]
		next += len(writes)
		queued, release := s.HoldOutcomes()
		got := make([]result, len(writes))
		var wg sync.WaitGroup
		for i, w := range writes {
			wg.Go(func() {
				ok, err := w.do(jobs[i])
				got[i] = result{ok: ok, refused: err != nil}
			})
		}
		for queued() < len(writes) {
			time.Sleep(time.Millisecond) // polling: the writes are queued by their goroutines
		}
		release()
		wg.Wait()
		moments := map[string]bool{}
		for i, w := range writes {
			var status, errText, outcome, ended string
			if err := pool.QueryRow(ctx, `SELECT status, coalesce(error, ''), coalesce(metadata->'attempts'->0->>'outcome', ''),
				coalesce(metadata->'attempts'->0->>'ended_at', '') FROM jobs WHERE job_id = $1`, string(jobs[i].ID)).
				Scan(&status, &errText, &outcome, &ended); err != nil {
				t.Fatal(err)
			}
			got[i].status = status
			if got[i] != w.want {
				t.Errorf("round %d, write %d: %+v, want %+v", r, i, got[i], w.want)
			}
			if status != "processing" {
				moments[ended] = true
				if outcome != status || (status == "error") != (errText != "") {
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
