package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/wait"
)

// metadata.priority is read as an integer from -100 to 100, and anything
// else there — text, a fraction, a number out of range, an array — as 0: a
// bad edit in the dashboard never breaks claiming.
func TestPriorityReadsAnything(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	for meta, want := range map[string]int{
		`{}`: 0, `null`: 0, `{"priority": null}`: 0, `{"priority": 5}`: 5, `{"priority": -100}`: -100, `{"priority": 100}`: 100,
		`{"priority": 1e2}`: 100, `{"priority": 5.0}`: 5, `{"priority": -20.00}`: -20, `{"priority": "5"}`: 0, `{"priority": "high"}`: 0, `{"priority": 2.5}`: 0, `{"priority": 101}`: 0,
		`{"priority": -101}`: 0, `{"priority": 99999999999999999999}`: 0, `{"priority": [1]}`: 0, `{"priority": {"n": 1}}`: 0,
	} {
		var got int
		if err := pool.QueryRow(context.Background(), `SELECT public.runops_priority($1::jsonb)`, meta).Scan(&got); err != nil || got != want {
			t.Errorf("%s: %d %v; want %d", meta, got, err, want)
		}
	}
}

// Claims take the lowest priority first, then the oldest; a priority a
// person sets on a queued row (by SQL, as the dashboard does) counts at the
// next claim; a bad one is 0.
func TestClaimsFollowPriority(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	store := postgres.NewQueueStore(pool)
	// Queued one after another: a (oldest) … f (newest).
	for i, meta := range []string{`{}`, `{"priority": 10}`, `{"priority": "urgent"}`, `{"priority": -5}`, `{}`, `{"priority": 10}`} {
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, metadata, created_at) VALUES ($1, $2::jsonb, now() - make_interval(secs => $3))`,
			fmt.Sprintf("00000000-0000-4000-8000-00000000000%c", 'a'+i), meta, 60-i); err != nil {
			t.Fatal(err)
		}
	}
	// The dashboard: e, the newest but one, is rushed.
	if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = metadata || '{"priority": -50}' WHERE job_id = '00000000-0000-4000-8000-00000000000e'`); err != nil {
		t.Fatal(err)
	}
	var batches []string
	for {
		claimed, err := store.Claim(ctx, "w", 2, time.Minute) // batched, as the engine claims
		if err != nil {
			t.Fatal(err)
		}
		if len(claimed) == 0 {
			break
		}
		var batch []string
		for _, c := range claimed {
			batch = append(batch, string(c.ID[len(c.ID)-1:]))
		}
		slices.Sort(batch) // a batch's jobs start together
		batches = append(batches, strings.Join(batch, ""))
	}
	if got := strings.Join(batches, " "); got != "de ac bf" {
		t.Fatalf("claimed %s; want de ac bf (e −50 and d −5, then a and c at 0, then b and f at 10)", got)
	}
}

// runops_queue is exactly the queued jobs, each with its priority, after
// whatever happens to them: queued, claimed, finished, rescued, handed back,
// re-queued, cancelled, deleted by a person, given another priority, another
// id or another age.
func TestTheQueueTableFollowsTheJobs(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	store := postgres.NewQueueStore(pool)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		var missing, extra, stale int
		if err := pool.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM jobs j WHERE j.status = 'queued' AND NOT EXISTS (SELECT 1 FROM runops_queue q WHERE q.id = j.id)),
  (SELECT count(*) FROM runops_queue q WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = q.id AND j.status = 'queued')),
  (SELECT count(*) FROM runops_queue q JOIN jobs j USING (id)
   WHERE (q.priority, q.created_at) IS DISTINCT FROM (public.runops_priority(j.metadata), j.created_at))`).Scan(&missing, &extra, &stale); err != nil {
			t.Fatal(err)
		}
		if missing+extra+stale != 0 {
			t.Fatalf("%s: %d queued jobs missing from runops_queue, %d rows too many, %d stale", when, missing, extra, stale)
		}
	}
	for i := range 6 {
		exec(`INSERT INTO jobs (job_id, metadata) VALUES (gen_random_uuid(), jsonb_build_object('priority', $1::int))`, i%3)
	}
	exec(`INSERT INTO jobs (job_id, status) VALUES (gen_random_uuid(), 'completed')`)
	check("inserted")
	claimed, err := store.Claim(ctx, "w", 4, time.Minute)
	if err != nil || len(claimed) != 4 {
		t.Fatalf("claim: %d %v", len(claimed), err)
	}
	check("claimed")
	if _, err := store.Finish(ctx, queue.Outcome{ID: claimed[0].ID, Token: claimed[0].Token, Status: jobs.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.HandBack(ctx, claimed[1].ID, claimed[1].Token); err != nil {
		t.Fatal(err)
	}
	check("finished and handed back")
	exec(`UPDATE jobs SET metadata = jsonb_set(metadata, '{lease,expires_at}', '"2000-01-01T00:00:00Z"') WHERE job_id = $1`, string(claimed[2].ID))
	if _, _, err := store.Rescue(ctx, 3, "x"); err != nil {
		t.Fatal(err)
	}
	check("rescued")
	exec(`UPDATE jobs SET status = 'queued' WHERE status = 'completed'`) // re-queued by a person
	exec(`UPDATE jobs SET status = 'error', error = 'Stopped.' WHERE job_id = $1`, string(claimed[3].ID))
	check("re-queued and cancelled")
	exec(`UPDATE jobs SET metadata = metadata || '{"priority": -7}' WHERE status = 'queued' AND id % 2 = 0`)
	exec(`UPDATE jobs SET created_at = created_at - interval '1 day' WHERE status = 'queued' AND id % 3 = 0`)
	exec(`UPDATE jobs SET job_id = gen_random_uuid() WHERE status = 'queued' AND id % 5 = 0`)
	check("edited")
	exec(`DELETE FROM jobs WHERE status = 'queued' AND id % 2 = 1`)
	check("deleted")

	// A claim of an earlier release (during a rolling update) goes through
	// the trigger; what no trigger sees is repaired (rows written with
	// triggers off: a restore, a bulk load); a TRUNCATE empties the table.
	repair := func(wantRemoved, wantAdded int) {
		t.Helper()
		removed, added, err := store.Repair(ctx)
		if err != nil || removed != wantRemoved || added != wantAdded {
			t.Fatalf("repair: removed %d, added %d, %v; want %d, %d", removed, added, err, wantRemoved, wantAdded)
		}
	}
	repair(0, 0)
	for range 3 {
		exec(`INSERT INTO jobs (job_id) VALUES (gen_random_uuid())`)
	}
	if old, err := store.ClaimWith(ctx, fifoClaim, "old", 2, time.Minute); err != nil || len(old) != 2 {
		t.Fatalf("an earlier release's claim: %d %v", len(old), err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica; INSERT INTO jobs (job_id) VALUES (gen_random_uuid()); RESET session_replication_role`); err != nil {
		t.Fatal(err)
	}
	conn.Release()
	repair(0, 1)
	check("repaired")
	exec(`TRUNCATE jobs`)
	check("truncated")
}

// A job another worker claimed and handed back while a claim waited for
// it (its first candidate slow to check) is claimed by the waiting claim,
// and its new row in runops_queue goes with it: the claim's own snapshot
// saw only the old one.
func TestAClaimTakesTheRowOfAJobHandedBackMeanwhile(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	store := postgres.NewQueueStore(pool)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	// The slow candidate takes a second to check; X is behind it.
	exec(`CREATE OR REPLACE FUNCTION public.runops_lease_past(meta jsonb) RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF meta ? 'slow' THEN PERFORM pg_sleep(1); END IF;
  RETURN coalesce((meta->'lease'->>'expires_at')::timestamptz < now(), true);
EXCEPTION WHEN others THEN RETURN true;
END $$`)
	exec(`INSERT INTO jobs (job_id, metadata) VALUES ('00000000-0000-4000-8000-00000000000a', '{"priority": -1, "slow": 1, "lease": {"expires_at": "2000-01-01T00:00:00Z"}}')`)
	exec(`INSERT INTO jobs (job_id) VALUES ('00000000-0000-4000-8000-00000000000b')`)
	slow := make(chan int, 1)
	go func() {
		c, err := store.Claim(ctx, "slow", 2, time.Minute)
		if err != nil {
			t.Error(err)
		}
		slow <- len(c)
	}()
	// Meanwhile another worker claims X alone (its own claim skips the
	// slow row, which the first claim holds) and hands it back.
	var other []queue.Claimed
	wait.For(t, "another claim to take X", 10*time.Second, func() bool {
		var err error
		other, err = store.Claim(ctx, "other", 1, time.Minute)
		return err == nil && len(other) == 1
	})
	if _, err := store.HandBack(ctx, other[0].ID, other[0].Token); err != nil {
		t.Fatal(err)
	}
	if n := <-slow; n != 2 {
		t.Fatalf("the slow claim took %d jobs; want the slow one and X", n)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runops_queue`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows left in runops_queue for claimed jobs (%v)", left, err)
	}
}

// The claim's query reads the queue through runops_queue's index, in its
// order: no sequential scan and no sort of the queued rows, however many
// there are — also in a session that made its plan while the queue was
// empty, before a burst that nothing has analysed yet (a plan kept for the
// session must not depend on the queue's size then). The plan is
// runops_claim's own statement's, as PostgreSQL runs it (auto_explain, its
// log sent to this connection), generic plan included.
func TestClaimsReadAnIndex(t *testing.T) {
	t.Parallel()
	pool, dsn := pgtest.Pool(t)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logged []string
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		logged = append(logged, n.Message)
		mu.Unlock()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	claim := func() {
		t.Helper()
		if _, err := conn.Exec(ctx, `SELECT * FROM public.runops_claim('w', 60, 8)`); err != nil {
			t.Fatal(err)
		}
	}
	for range 7 { // planned on an empty queue, past the first five custom plans
		claim()
	}
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata)
SELECT gen_random_uuid(), CASE WHEN i % 10 = 0 THEN 'queued' ELSE 'completed' END, jsonb_build_object('priority', i % 7 - 3)
FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	for _, set := range []string{`LOAD 'auto_explain'`, `SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`, `SET client_min_messages = log`} {
		if _, err := conn.Exec(ctx, set); err != nil {
			t.Fatalf("%s: %v", set, err)
		}
	}
	claim()
	mu.Lock()
	defer mu.Unlock()
	var plan string
	for _, m := range logged {
		if strings.Contains(m, "runops_queue") && strings.Contains(m, "Update on jobs") {
			plan = m
		}
	}
	if plan == "" || !strings.Contains(plan, "runops_queue_order_idx") || strings.Contains(plan, "Seq Scan") || strings.Contains(plan, "Sort") {
		t.Fatalf("the claim does not read the queue in its index's order:\n%s\n(all logged: %q)", plan, logged)
	}
}
