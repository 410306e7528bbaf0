package postgres_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// storeSOP stores doc as id's SOP under the lock, with locker, the upload
// being store.
func storeSOP(ctx context.Context, locker *postgres.SOPLocker, id jobs.ID, doc []byte, store func() error) error {
	return locker.WithSOPLock(ctx, id, func(ctx context.Context) error {
		_, err := locker.StoreTagged(ctx, id, doc, nil, nil, store)
		return err
	})
}

// recordedTag is id's recorded SOP tag ("" when none is).
func recordedTag(t *testing.T, pool *pgxpool.Pool, id jobs.ID) string {
	t.Helper()
	var tag *string
	if err := pool.QueryRow(context.Background(), `SELECT sop FROM runops_stored_tags WHERE job_id = $1`, string(id)).Scan(&tag); err != nil {
		t.Fatal(err)
	}
	if tag == nil {
		return ""
	}
	return *tag
}

// As many SOP writers as a transaction pooler has server connections, each
// inside its lock at once (two API processes editing, or two workers
// storing their results), store their SOPs, one over a tag recorded
// before: a holder needs no connection but its lock's. Before, each forgot
// its tag on a second connection while it held the first; with every server
// connection held by a lock none was left, and every writer — and every
// other client of that pooler — waited until its deadline.
func TestAsManySOPWritersAsThePoolerHasConnections(t *testing.T) {
	t.Parallel()
	dsn := pgtest.New(t)
	const conns = 2
	pooler := pgtest.NewBouncer(t, dsn, conns)
	direct := pgtest.Open(t, dsn, 2)
	quiet := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	noUpload := func() error { return nil }

	ids := []jobs.ID{jobs.ID(uuid.NewString()), jobs.ID(uuid.NewString())}
	before := postgres.NewSOPLocker(direct)
	before.Logger = quiet
	if err := storeSOP(ctx, before, ids[0], []byte(`{"v":0}`), noUpload); err != nil {
		t.Fatal(err)
	}

	var inside sync.WaitGroup // every writer holds its lock, and a server connection
	inside.Add(conns)
	errs := make(chan error, conns)
	for _, id := range ids {
		locker := postgres.NewSOPLocker(pgtest.Open(t, pooler.URL, 4)) // a process of its own
		locker.Logger = quiet
		var once sync.Once
		go func() {
			// A generous deadline, not a measure: the writers that waited
			// for each other waited until it.
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			errs <- locker.WithSOPLock(ctx, id, func(ctx context.Context) error {
				once.Do(func() { inside.Done(); inside.Wait() })
				_, err := locker.StoreTagged(ctx, id, []byte(`{"v":1}`), nil, nil, noUpload)
				return err
			})
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, id := range ids {
		if got, want := recordedTag(t, direct, id), jobs.ETag([]byte(`{"v":1}`)); got != want {
			t.Errorf("%s: recorded tag %q, want the stored SOP's %q", id, got, want)
		}
	}
}

// A writer whose lock connection dies once its upload has landed leaves no
// tag of the SOP it replaced: the old tag was forgotten, where readers see
// it, before the upload began (with the lock let go, and the lock taken
// again), so a revalidation reads storage instead of answering 304 for a
// document no longer stored.
func TestAWriterThatDiesAfterItsUploadLeavesNoOldTag(t *testing.T) {
	t.Parallel()
	pool, dsn := pgtest.Pool(t)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	id := jobs.ID(uuid.NewString())
	old := postgres.NewSOPLocker(pool)
	old.Logger = quiet
	if err := storeSOP(ctx, old, id, []byte(`{"v":0}`), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if recordedTag(t, pool, id) == "" {
		t.Fatal("the first SOP's tag was not recorded: the test proves nothing")
	}

	writer := postgres.NewSOPLocker(pgtest.Open(t, dsn, 2))
	writer.Logger = quiet
	err := storeSOP(ctx, writer, id, []byte(`{"v":1}`), func() error {
		// The upload has landed; the lock's connection dies.
		var ended bool
		if err := pool.QueryRow(ctx, `SELECT coalesce(bool_and(pg_terminate_backend(pid, 5000)), false)
FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ended); err != nil || !ended {
			t.Fatalf("ending the lock holder's backend: %v %v", ended, err)
		}
		return nil
	})
	if err == nil {
		t.Fatal("the write whose lock connection died succeeded: the test proves nothing")
	}
	if got := recordedTag(t, pool, id); got == jobs.ETag([]byte(`{"v":0}`)) {
		t.Errorf("the replaced SOP's tag %s is still recorded: a revalidation of it is answered 304", got)
	}
}
