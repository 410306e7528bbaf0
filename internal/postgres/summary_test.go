package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/wait"
)

// Reads of many jobs at once share statements (rounds): each still gets
// its own job's answer — a row, an upload's owner without a row, nothing —
// with its own step's screenshot tag, and a write committed before a read
// begins is what that read answers, however many reads run beside it.
func TestSummariesReadTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
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
			if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = jsonb_set(metadata, '{progress}', to_jsonb($2::int / 100.0)) WHERE job_id = $1`,
				moving, step); err != nil {
				errs <- err
				return
			}
			got, err := store.Summary(ctx, moving)
			if err != nil || got.Progress == nil || *got.Progress != float64(step)/100 {
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

// lockedJobs opens a store over a fresh database with one queued job, and
// takes an ACCESS EXCLUSIVE lock on public.jobs, so that every statement
// reading it waits until release is called.
func lockedJobs(t *testing.T) (store *postgres.JobStore, id jobs.ID, release func()) {
	t.Helper()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	store = postgres.NewJobStore(pool)
	id = jobs.ID(uuid.NewString())
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, metadata) VALUES ($1, 'queued', '{"owner": "alice"}')`, id); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE public.jobs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var once bool
	release = func() {
		if !once {
			once = true
			_ = tx.Rollback(ctx)
		}
	}
	t.Cleanup(release)
	return store, id, release
}

// until yields until cond holds.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, what, 30*time.Second, cond)
}

type summaryAnswer struct {
	sum jobs.Summary
	err error
}

// summaryOf starts store.Summary(ctx, id) and returns where its answer
// arrives.
func summaryOf(ctx context.Context, store *postgres.JobStore, id jobs.ID) <-chan summaryAnswer {
	got := make(chan summaryAnswer, 1)
	go func() {
		sum, err := store.Summary(ctx, id)
		got <- summaryAnswer{sum, err}
	}()
	return got
}

// A round's statement runs under no one request's deadline: the read that
// opened the round leaving at its deadline fails none of the others (it
// did, as an outage — a 503 through job-status — while the database
// answered; with equal RequestTimeouts, a statement stuck behind a lock
// made the next round's first reader expire too, and that round failed at
// once).
func TestRoundsNoReadFailsWithTheDeadlineOfAnotherRequest(t *testing.T) {
	t.Parallel()
	store, id, release := lockedJobs(t)
	bg := context.Background()
	// Two statements run (behind the lock).
	running := []<-chan summaryAnswer{summaryOf(bg, store, id), summaryOf(bg, store, id)}
	until(t, "two statements to run", func() bool { running, _ := store.StatusReads(); return running == 2 })

	// A request that will end early opens the next round; another, with no
	// deadline at all, joins it; then the first one ends (its client gone,
	// its deadline passed: the same to the round) while both wait, and it
	// leaves.
	near, cancel := context.WithCancel(bg)
	defer cancel()
	left := summaryOf(near, store, id)
	until(t, "the first read to wait", func() bool { _, waiting := store.StatusReads(); return waiting == 1 })
	mine := summaryOf(bg, store, id)
	until(t, "both reads to wait", func() bool { _, waiting := store.StatusReads(); return waiting == 2 })
	cancel()
	if a := wait.Recv(t, left, "the read that ended"); !errors.Is(a.err, context.Canceled) {
		t.Fatalf("a read that ended got %v", a.err)
	}
	release()
	for _, got := range running {
		if a := wait.Recv(t, got, "a read of a running statement"); a.err != nil || !a.sum.Found {
			t.Fatalf("a read of a running statement got %+v", a)
		}
	}
	if a := wait.Recv(t, mine, "the read with no deadline"); a.err != nil || !a.sum.Found || a.sum.Owner != "alice" {
		t.Fatalf("a read with no deadline, of a database that answers, got %+v (%v is %v: 503 through job-status); want its row",
			a.sum, a.err, errors.Is(a.err, jobs.ErrUnavailable))
	}
}

// The read that begins a statement stops waiting when its request ends
// (the client went away), as every read does, and its statement, which no
// read waits for then, is cancelled: it does not hold its handler and a
// connection behind a lock until its deadline.
func TestRoundsTheReadThatBeginsAStatementStopsWaitingWhenItsRequestEnds(t *testing.T) {
	t.Parallel()
	store, id, release := lockedJobs(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := summaryOf(ctx, store, id)
	until(t, "the statement to run", func() bool { running, _ := store.StatusReads(); return running == 1 })
	cancel()
	// A guard against waiting for ever, not a timing assertion: the lock
	// is held until the read returns, or until the guard gives up.
	select {
	case a := <-got:
		if !errors.Is(a.err, context.Canceled) {
			t.Fatalf("a read whose request ended got %+v, %v; want context.Canceled", a.sum, a.err)
		}
	case <-time.After(20 * time.Second):
		release()
		a := <-got
		t.Fatalf("a read whose request had ended still waited for its statement; it returned %+v, %v only when the lock was released",
			a.sum, a.err)
	}
}

// Summary refuses a malformed id, and SOPSummary a step node PostgreSQL
// cannot take as text, before any statement (which they would fail for
// every read of their round), as the caller's mistake, not as an outage
// (ErrUnavailable: a 503 with Retry-After, which a client retries for
// ever).
func TestSummaryOfMalformedKeysIsNoOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewJobStore(pool)
	for _, read := range []func() error{
		func() error { _, err := store.Summary(ctx, "not-a-uuid"); return err },
		func() error { _, err := store.SOPSummary(ctx, "not-a-uuid", "n1"); return err },
		// A step node PostgreSQL cannot take as text: refused alone, not
		// in a statement whose every read it would fail.
		func() error { _, err := store.SOPSummary(ctx, jobs.ID(uuid.NewString()), "n\x00"); return err },
		func() error { _, err := store.SOPSummary(ctx, jobs.ID(uuid.NewString()), "n\xff"); return err },
	} {
		var pgErr *pgconn.PgError
		if err := read(); err == nil || errors.Is(err, jobs.ErrUnavailable) || errors.As(err, &pgErr) {
			t.Errorf("%v; ErrUnavailable: %v; want an error that is not an outage, before any statement", err, errors.Is(err, jobs.ErrUnavailable))
		}
	}
}

// A recorded tag is always that of what is stored, whatever the writers'
// errors: the SOP lock is its transaction's connection's, and when that
// connection dies while a writer stores (a pooler restart, a network cut),
// another writer may take the lock, store and record before the first one
// goes on. The first one's record commits with its lock, so it records
// nothing; recorded on a connection of its own, it named bytes no longer
// stored, and a revalidation with it was answered 304 (GET /api/sop reads
// the recorded tag first) while storage held another document.
func TestATagRecordedAfterTheLocksConnectionEndedIsNotStale(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct, id, a, b, docA, docB := lockRace(t)
	var stored []byte // the bucket's SOP object

	errA := a.WithSOPLock(ctx, id, func(ctx context.Context) error {
		_, err := a.StoreTagged(ctx, id, docA, nil, nil, func() error {
			stored = docA // A's upload has landed
			// A's lock connection dies: its backend is gone, and the lock with it.
			pgtest.EndAdvisoryHolders(t, direct)
			// B (another API process, the worker) now has the lock, and writes.
			if err := b.WithSOPLock(ctx, id, func(ctx context.Context) error {
				_, err := b.StoreTagged(ctx, id, docB, nil, nil, func() error { stored = docB; return nil })
				return err
			}); err != nil {
				t.Fatalf("B's write: %v", err)
			}
			return nil // A's upload request returns
		})
		// A's record of its tag, in its lock's dead transaction, is none:
		// B's stays.
		if got := recordedTag(t, direct, id); got != jobs.ETag(docB) {
			t.Errorf("after A's record, the recorded tag is %q, not B's %q", got, jobs.ETag(docB))
		}
		return err
	})
	t.Logf("A's write answered %v", errA)

	// None, or the stored SOP's: A, whose transaction failed, forgets the
	// tags, since it cannot know whether its upload landed before B's.
	if tag := recordedTag(t, direct, id); tag != "" && tag != jobs.ETag(stored) {
		t.Fatalf("recorded SOP tag %s is %s's (ETag %s); storage holds %s (ETag %s): a revalidation with the recorded tag is answered 304 with a document no longer stored",
			tag, docA, jobs.ETag(docA), stored, jobs.ETag(stored))
	}
}

// A job's progress, whatever a person wrote there, is read as Job.Progress
// reads it from the whole decoded metadata (JobStore.Get): job-status must
// answer the same number, or none.
func TestSummaryReadsProgressAsJobDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewJobStore(pool)
	none := math.NaN() // no progress
	// Outside 0–1, the nearest end: the contract's progress is 0 to 1.
	for v, want := range map[string]float64{`0`: 0, `-0`: 0, `0.5`: 0.5, `-0.25`: 0, `1`: 1, `100`: 1, `1e2`: 1,
		`1.5E-3`: 0.0015, `1e400`: none, `-1e400`: none, `1e-400`: 0, `12345678901234567890.123456789`: 1,
		`0.1000000000000000055511151231257827`: 0.1, `"0.5"`: none, `true`: none, `null`: none, `[1]`: none, `{"a": 1}`: none} {
		id := jobs.ID(uuid.NewString())
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, metadata) VALUES ($1, jsonb_build_object('progress', $2::jsonb))`, id, v); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		got, err := store.Summary(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if (got.Progress == nil) != math.IsNaN(want) || got.Progress != nil && *got.Progress != want {
			t.Errorf("progress %s: job-status reads %v, want %v", v, deref(got.Progress), want)
		}
		j, err := store.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if jp := j.Progress(); (got.Progress == nil) != (jp == nil) || got.Progress != nil && *got.Progress != *jp {
			t.Errorf("progress %s: job-status reads %v, the job %v", v, deref(got.Progress), deref(jp))
		}
	}
}

// An owner changed by hand in runops_uploads while queue-job inserts the
// row is copied to it: the insert's trigger waits for the edit (it reads
// the upload's owner under a lock) and copies the new owner. Before,
// it read the owner as committed before the edit (alice), and the edit's
// own copy could not see the row not yet committed: the API showed the job
// to alice, storage to bob, for good.
func TestAnOwnerEditDuringAnEnqueueIsCopied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewJobStore(pool)
	id := jobs.ID(uuid.NewString())
	if err := store.RecordUpload(ctx, id, "alice"); err != nil {
		t.Fatal(err)
	}
	person, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer person.Rollback(ctx)
	if _, err := person.Exec(ctx, `UPDATE runops_uploads SET owner = 'bob' WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	var enqueuePID int
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&enqueuePID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// queue-job's insert, as JobStore.Enqueue sends it (the API read alice as the owner).
		_, err := conn.Exec(ctx, `INSERT INTO public.jobs (job_id, status, metadata) VALUES ($1, 'queued', '{"owner": "alice"}')
ON CONFLICT (job_id) DO NOTHING`, string(id))
		done <- err
	}()
	// Until the insert waits for the person's row lock (a condition, polled).
	wait.For(t, "the insert waiting for the edit", time.Minute, func() bool {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1), false)`, enqueuePID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("the insert did not wait for the edit: %v", err)
		default:
		}
		return waiting
	})
	if err := person.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait.Recv(t, done, "the insert"); err != nil {
		t.Fatal(err)
	}
	var copy, upload string
	if err := pool.QueryRow(ctx, `SELECT coalesce(j.metadata->>'owner', '(none)'), coalesce(u.owner, '(none)')
		FROM jobs j JOIN runops_uploads u USING (job_id) WHERE j.job_id = $1`, string(id)).Scan(&copy, &upload); err != nil {
		t.Fatal(err)
	}
	sum, err := store.Summary(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if copy != "bob" || upload != "bob" || sum.Owner != "bob" {
		t.Errorf("metadata.owner %s, runops_uploads.owner %s, the API's owner %q: want bob for all", copy, upload, sum.Owner)
	}
}

func deref(p *float64) any {
	if p == nil {
		return "none"
	}
	return *p
}

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

	var arrived atomic.Int32
	inside := make(chan struct{}) // closed once every writer holds its lock, and a server connection
	errs := make(chan error, conns)
	for _, id := range ids {
		locker := postgres.NewSOPLocker(pgtest.Open(t, pooler.URL, 4)) // a process of its own
		locker.Logger = quiet
		var once sync.Once
		go func() {
			// A generous deadline, not a measure: the writers that waited
			// for each other waited until it.
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			errs <- locker.WithSOPLock(ctx, id, func(ctx context.Context) error {
				once.Do(func() {
					if arrived.Add(1) == conns {
						close(inside)
					}
					select {
					case <-inside:
					case <-ctx.Done():
					}
				})
				_, err := locker.StoreTagged(ctx, id, []byte(`{"v":1}`), nil, nil, noUpload)
				return err
			})
		}()
	}
	for range conns {
		if err := wait.Recv(t, errs, "a writer"); err != nil {
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
		if got := recordedTag(t, pool, id); got != "" {
			t.Errorf("while the new SOP is uploaded, readers see the tag %q of the one it replaces", got)
		}
		// The upload has landed; the lock's connection dies.
		pgtest.EndAdvisoryHolders(t, pool)
		return nil
	})
	if err == nil {
		t.Fatal("the write whose lock connection died succeeded: the test proves nothing")
	}
	if got := recordedTag(t, pool, id); got == jobs.ETag([]byte(`{"v":0}`)) {
		t.Errorf("the replaced SOP's tag %s is still recorded: a revalidation of it is answered 304", got)
	}
}

// A's lock connection dies while A's upload is in flight; B takes the lock,
// stores and records its tag; then A's upload, begun first, lands last.
// No tag names what is not stored: A, its transaction failed, forgets the
// job's tags. Before, B's tag stayed while storage held A's SOP, and a
// reader holding B's copy was answered 304 (a reviewer's finding).
func TestAnUploadLandingAfterTheLocksConnectionEndedLeavesNoStaleTag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct, id, a, b, docA, docB := lockRace(t)
	var stored []byte // the bucket's SOP object
	errA := storeSOP(ctx, a, id, docA, func() error {
		pgtest.EndAdvisoryHolders(t, direct)
		if err := storeSOP(ctx, b, id, docB, func() error { stored = docB; return nil }); err != nil {
			t.Fatalf("B's write: %v", err)
		}
		if recordedTag(t, direct, id) != jobs.ETag(docB) {
			t.Fatal("B's tag is not recorded: the test proves nothing")
		}
		stored = docA // A's slower upload, begun first, lands last
		return nil
	})
	if errA == nil {
		t.Fatal("A's write, its lock connection dead, succeeded: the test proves nothing")
	}
	if tag := recordedTag(t, direct, id); tag != "" && tag != jobs.ETag(stored) {
		t.Fatalf("recorded SOP tag %s; storage holds %s (ETag %s): a revalidation with it is answered 304 for a document no longer stored",
			tag, stored, jobs.ETag(stored))
	}
}

// The same loss, B still uploading when A's upload lands and A's
// transaction fails: A forgets the tags under the lock, after B has
// recorded its own. Before, A forgot them at once, B recorded its tag
// after, and that tag named B's SOP while storage held A's (a reviewer's
// finding).
func TestAForgetAfterALostLockWaitsForTheWriterHoldingIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	direct, id, a, b, docA, docB := lockRace(t)
	var stored []byte // the bucket's SOP object
	killed, bUploading, aEnded := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		aEnded <- storeSOP(ctx, a, id, docA, func() error {
			pgtest.EndAdvisoryHolders(t, direct)
			close(killed)
			<-bUploading
			stored = docA // A's upload, begun first, lands while B's is under way
			return nil
		})
	}()
	wait.Recv(t, killed, "A's lock connection to die")
	var errA error
	errB := storeSOP(ctx, b, id, docB, func() error {
		stored = docB
		close(bUploading)
		// B's upload returns once A has ended, or waits for the lock.
		wait.For(t, "A's write to end or wait for the lock", 30*time.Second, func() bool {
			select {
			case errA = <-aEnded:
				aEnded <- errA
				return true
			default:
			}
			return pgtest.Waiting(direct, "advisory")
		})
		return nil
	})
	if errB != nil {
		t.Fatalf("B's write: %v", errB)
	}
	if errA = wait.Recv(t, aEnded, "A's write"); errA == nil {
		t.Fatal("A's write, its lock connection dead, succeeded: the test proves nothing")
	}
	if tag := recordedTag(t, direct, id); tag != "" && tag != jobs.ETag(stored) {
		t.Fatalf("recorded SOP tag %s; storage holds %s (ETag %s): a revalidation with it is answered 304 for a document no longer stored",
			tag, stored, jobs.ETag(stored))
	}
}

// lockRace is a job's two SOP writers and their SOPs: A on a pool of its
// own, whose lock connection a test ends (pgtest.EndAdvisoryHolders), and B on direct,
// a pool on a new database.
func lockRace(t *testing.T) (direct *pgxpool.Pool, id jobs.ID, a, b *postgres.SOPLocker, docA, docB []byte) {
	t.Helper()
	direct, dsn := pgtest.Pool(t)
	quiet := slog.New(slog.DiscardHandler)
	a, b = postgres.NewSOPLocker(pgtest.Open(t, dsn, 4)), postgres.NewSOPLocker(direct)
	a.Logger, b.Logger = quiet, quiet
	return direct, jobs.ID(uuid.NewString()), a, b, []byte(`{"writer":"A"}`), []byte(`{"writer":"B"}`)
}
