package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// queueOf queues n jobs of owner named (metadata.name) owner+"1",
// owner+"2"…, the first age seconds old, each a second younger than the one
// before, with the given priority; owner "" queues unowned jobs, named
// "anonymous1"….
func queueOf(t *testing.T, pool *pgxpool.Pool, owner string, n, age, priority int) {
	t.Helper()
	meta := `jsonb_build_object('name', $1::text || i, 'priority', $4::int, 'owner', $1::text)`
	if owner == "" {
		owner, meta = "anonymous", `jsonb_build_object('name', $1::text || i, 'priority', $4::int)`
	}
	execOn(t, pool)(`INSERT INTO jobs (job_id, created_at, metadata)
		SELECT gen_random_uuid(), now() - make_interval(secs => $3 - i), `+meta+` FROM generate_series(1, $2) i`,
		owner, n, age, priority)
}

// claimNames claims up to n jobs and returns their names, sorted (a
// batch's jobs start together).
func claimNames(t *testing.T, store *postgres.QueueStore, n int) []string {
	t.Helper()
	claimed, err := store.Claim(context.Background(), "w", n, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range claimed {
		name, _ := c.Metadata["name"].(string)
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func finish(t *testing.T, pool *pgxpool.Pool, names ...string) {
	t.Helper()
	for _, name := range names {
		if tag, err := pool.Exec(context.Background(), `UPDATE jobs SET status = 'completed' WHERE metadata->>'name' = $1 AND status = 'processing'`, name); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("finish %s: %v %v", name, tag, err)
		}
	}
}

// docs/lifecycle.md, "The order of claims": among jobs of equal priority,
// the owner with the fewest jobs processing, then the owner whose latest
// claim is oldest (never claimed first), then the oldest job. One worker
// running one job at a time: a batch of 40 of one owner delays another
// owner's single job, queued after it, by one claim.
func TestClaimsAreFairBetweenOwners(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewQueueStore(pool)
	queueOf(t, pool, "alice", 40, 200, 0) // alice1 … alice40, the oldest
	queueOf(t, pool, "bob", 1, 100, 0)    // a minute later
	queueOf(t, pool, "carol", 2, 90, 0)
	var order []string
	for range 7 {
		got := claimNames(t, store, 1)
		if len(got) != 1 {
			t.Fatalf("claimed %v", got)
		}
		order = append(order, got[0])
		finish(t, pool, got[0])
	}
	// alice1: nobody claimed yet, the oldest job. Then bob and carol, never
	// claimed; then whoever was claimed longest ago.
	if want := "alice1 bob1 carol1 alice2 carol2 alice3 alice4"; strings.Join(order, " ") != want {
		t.Fatalf("claimed %s; want %s", strings.Join(order, " "), want)
	}
	checkClaimTables(t, pool, "after the claims")
}

// A batch takes what as many one-job claims would take: with several slots
// free, an owner with fewer jobs processing goes first, and so does a
// lower priority, whoever's it is.
func TestABatchClaimsAsOneAtATime(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewQueueStore(pool)
	queueOf(t, pool, "alice", 40, 200, 0)
	queueOf(t, pool, "bob", 1, 100, 0)
	queueOf(t, pool, "", 2, 95, 0) // the anonymous uploads: one owner
	if got, want := strings.Join(claimNames(t, store, 4), " "), "alice1 alice2 anonymous1 bob1"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}
	// Two processing for alice, one for bob (none queued) and one for the
	// anonymous owner: the anonymous job left goes before alice's next two.
	if got, want := strings.Join(claimNames(t, store, 2), " "), "alice3 anonymous2"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}

	// Priorities first: dave's -2 job, then erin's two at 0 before dave's
	// at 2, though dave's come first by age and by claims.
	pool2, _ := pgtest.Pool(t)
	store2 := postgres.NewQueueStore(pool2)
	queueOf(t, pool2, "dave", 1, 300, -2)
	queueOf(t, pool2, "dave", 3, 250, 2)
	queueOf(t, pool2, "erin", 2, 100, 0)
	execOn(t, pool2)(`UPDATE jobs SET metadata = metadata || '{"name": "dave-rushed"}' WHERE metadata->>'priority' = '-2'`)
	if got, want := strings.Join(claimNames(t, store2, 3), " "), "dave-rushed erin1 erin2"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}
	checkClaimTables(t, pool2, "after the claims")
}

// With RUNOPS_OWNER_CONCURRENCY a job whose owner is at the cap is not
// claimed; it is claimed once a job of its owner ends.
func TestTheOwnerCap(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewQueueStore(pool).CapOwners(2)
	queueOf(t, pool, "alice", 5, 200, 0)
	queueOf(t, pool, "bob", 1, 100, 0)
	if got, want := strings.Join(claimNames(t, store, 8), " "), "alice1 alice2 bob1"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}
	if got := claimNames(t, store, 8); len(got) != 0 {
		t.Fatalf("claimed %v past the cap", got)
	}
	// A job that entered processing by a person's hand counts too.
	queueOf(t, pool, "carol", 3, 50, 0)
	execOn(t, pool)(`UPDATE jobs SET status = 'processing' WHERE metadata->>'name' = 'carol1'`)
	if got, want := strings.Join(claimNames(t, store, 8), " "), "carol2"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}
	finish(t, pool, "alice1")
	if got, want := strings.Join(claimNames(t, store, 8), " "), "alice3"; got != want {
		t.Fatalf("claimed %s; want %s", got, want)
	}
	checkClaimTables(t, pool, "after the claims")
	if got := claimNames(t, postgres.NewQueueStore(pool), 8); len(got) != 3 {
		t.Fatalf("without the cap claimed %v; want the 3 left", got)
	}
}

// Many workers claiming at once through PgBouncer (transaction mode) never
// have more than the cap of one owner's jobs processing: SKIP LOCKED alone
// would let each take one of the same owner's jobs. A watcher reads the
// counts all along; every job is claimed exactly once.
func TestTheOwnerCapHoldsAcrossWorkers(t *testing.T) {
	t.Parallel()
	dsn := pgtest.New(t)
	pooler := pgtest.NewBouncer(t, dsn, 6)
	ctx := context.Background()
	direct, err := postgres.OpenPool(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	queueOf(t, direct, "alice", 60, 200, 0)
	queueOf(t, direct, "bob", 20, 100, 0)
	const cap, workers, total = 3, 8, 80

	worst := pgtest.WatchMax(t, direct,
		`SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jobs WHERE status = 'processing' GROUP BY metadata->>'owner') c`)
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		pool, err := postgres.OpenPool(ctx, pooler.URL, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		store := postgres.NewQueueStore(pool).CapOwners(cap)
		wg.Go(func() {
			for {
				mu.Lock()
				left := total - len(seen)
				mu.Unlock()
				if left == 0 {
					return
				}
				claimed, err := store.Claim(ctx, "w", 2, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				for _, c := range claimed {
					name, _ := c.Metadata["name"].(string)
					mu.Lock()
					seen[name]++
					mu.Unlock()
					if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'completed' WHERE job_id = $1`, string(c.ID)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if w := worst(); w > cap {
		t.Fatalf("an owner had %d jobs processing at once; the cap is %d", w, cap)
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s claimed %d times", name, n)
		}
	}
	if len(seen) != total {
		t.Fatalf("claimed %d jobs of %d", len(seen), total)
	}
	checkClaimTables(t, direct, "after the claims")
}

// A person moving a queued job to another owner while claims reach for it
// leaves the owners' counts true: a claim that waited for the job's row
// sees the owner it has now, and leaves it to that owner's turn.
func TestOwnerEditsDuringClaimsKeepTheCounts(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	queueOf(t, pool, "alice", 1500, 2000, 0)
	store := postgres.NewQueueStore(pool)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 150 {
				if _, err := store.Claim(ctx, "w", 1, time.Minute); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 300 {
			if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = jsonb_set(metadata, '{owner}', '"bob"')
				WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND metadata->>'owner' = 'alice'
				            ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)`); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	checkClaimTables(t, pool, "after the claims and edits")
}

// A claim marks only its own UPDATE as the claim's (the triggers leave
// that one to it): statements after it in the same transaction are kept in
// the tables, whether it claimed something or nothing.
func TestAClaimLeavesTheRestOfItsTransactionToTheTriggers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	queueOf(t, pool, "alice", 2, 100, 0)
	for _, n := range []int{1, 0} { // a claim that takes one, then one that finds nothing
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, `SELECT job_id FROM public.runops_claim('w', 60, 1)`)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for rows.Next() {
			got++
		}
		if rows.Close(); got != n {
			t.Fatalf("claimed %d; want %d", got, n)
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET status = 'completed' WHERE status = 'queued'`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE jobs SET status = 'queued' WHERE metadata->>'name' = 'alice2'`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		checkClaimTables(t, pool, fmt.Sprintf("after a claim of %d and edits in its transaction", n))
		if n == 1 {
			finish(t, pool, "alice1")
			if _, err := pool.Exec(ctx, `UPDATE jobs SET status = 'completed' WHERE status = 'queued'`); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// An owner whose first job cannot be claimed — another claim holds its row,
// its lease never expires, its metadata is not a JSON object (a person's
// edits) — never keeps a claim of one job from the next owner's; a
// metadata.owner of any length is an owner like another (never a failed
// edit).
func TestOneJobClaimsLookPastWhatTheyCannotTake(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	store := postgres.NewQueueStore(pool)
	exec := execOn(t, pool)
	queueOf(t, pool, "alice", 1, 300, 0)
	exec(`INSERT INTO jobs (job_id, created_at, metadata) VALUES
		(gen_random_uuid(), now() - interval '250 seconds', '{"owner": "carol", "lease": {"expires_at": "now"}}'),
		(gen_random_uuid(), now() - interval '240 seconds', '"oops"'),
		(gen_random_uuid(), now() - interval '230 seconds', '[1]'),
		(gen_random_uuid(), now() - interval '220 seconds', jsonb_build_object('owner', repeat('x', 5000), 'name', 'long'))`)
	queueOf(t, pool, "bob", 1, 100, 0)
	checkClaimTables(t, pool, "after the inserts")

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM jobs WHERE metadata->>'name' = 'alice1' FOR UPDATE`); err != nil {
		t.Fatal(err) // as another worker's claim in flight holds it
	}
	if got, want := strings.Join(claimNames(t, store, 1), " "), "long"; got != want {
		t.Fatalf("claimed %q; want %q", got, want)
	}
	if got, want := strings.Join(claimNames(t, store, 1), " "), "bob1"; got != want {
		t.Fatalf("claimed %q; want %q", got, want)
	}
	if got := claimNames(t, store, 1); len(got) != 0 {
		t.Fatalf("claimed %v", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(claimNames(t, store, 8), " "), "alice1"; got != want {
		t.Fatalf("claimed %q; want %q", got, want)
	}
}
