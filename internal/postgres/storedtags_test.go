package postgres_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
)

// A recorded tag is always that of what is stored, whatever the writers'
// errors: the SOP lock is its transaction's connection's, and when that
// connection dies while a writer stores (a pooler restart, a network cut),
// another writer may take the lock, store and record before the first one
// goes on. The first one's record commits with its lock, so it records
// nothing; recorded on a connection of its own, it named bytes no longer
// stored, and a revalidation with it was answered 304 (GET /api/sop reads
// the recorded tag first) while storage held another document.
func TestATagRecordedAfterTheLockWasLostIsNotStale(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct, dsn := pgtest.Pool(t)
	poolA, err := postgres.OpenPool(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(poolA.Close)
	id := jobs.ID(uuid.NewString())
	quiet := slog.New(slog.DiscardHandler)
	a, b := postgres.NewSOPLocker(poolA), postgres.NewSOPLocker(direct)
	a.Log, b.Log = quiet, quiet
	docA, docB := []byte(`{"writer":"A"}`), []byte(`{"writer":"B"}`)
	var stored []byte // the bucket's SOP object

	errA := a.WithSOPLock(ctx, id, func(ctx context.Context) error {
		return a.StoreTagged(ctx, id, docA, nil, func() error {
			stored = docA // A's upload has landed
			// A's lock connection dies: its backend is gone, and the lock with it.
			var ended bool
			if err := direct.QueryRow(ctx, `SELECT coalesce(bool_and(pg_terminate_backend(pid, 5000)), false)
FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&ended); err != nil || !ended {
				t.Fatalf("ending the lock holder's backend: %v %v", ended, err)
			}
			// B (another API process, the worker) now has the lock, and writes.
			if err := b.WithSOPLock(ctx, id, func(ctx context.Context) error {
				return b.StoreTagged(ctx, id, docB, nil, func() error { stored = docB; return nil })
			}); err != nil {
				t.Fatalf("B's write: %v", err)
			}
			return nil // A's upload request returns
		})
	})
	t.Logf("A's write answered %v", errA)

	var tag *string
	if err := direct.QueryRow(ctx, `SELECT sop FROM runops_stored_tags WHERE job_id = $1`, string(id)).Scan(&tag); err != nil {
		t.Fatal(err)
	}
	if tag != nil && *tag != jobs.ETag(stored) {
		t.Fatalf("recorded SOP tag %s is %s's (ETag %s); storage holds %s (ETag %s): a revalidation with the recorded tag is answered 304 with a document no longer stored",
			*tag, docA, jobs.ETag(docA), stored, jobs.ETag(stored))
	}
}
