package retention_test

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
	"github.com/runops/runops/internal/retention"
	"github.com/runops/runops/internal/storage"
	"github.com/runops/runops/internal/supabasetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// stores are a test's database, its storage stand-in and a client of it.
func stores(t *testing.T) (*pgxpool.Pool, *supabasetest.Server, *storage.Client) {
	t.Helper()
	pool, _ := pgtest.Pool(t)
	fake := supabasetest.New(t, jobs.MaxUploadBytes)
	objects, err := storage.New(storage.Config{URL: fake.URL, ServiceKey: fake.ServiceRoleKey(), Bucket: jobs.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	return pool, fake, objects
}

// Uploads of jobs that ended more than the retention ago are deleted, once,
// by any number of janitors at once, and the deletion is recorded; uploads of
// recent, queued or running jobs stay; slim copies stay unless asked.
func TestJanitorDeletesWhatIsDueOnce(t *testing.T) {
	pool, fake, objects := stores(t)
	ctx := context.Background()
	exec := pgtest.Exec(t, pool)
	put := func(id string) {
		fake.Put("videos/raw/"+id+".mp4", []byte("upload"), "video/mp4")
		fake.Put("videos/slim/"+id+".mp4", []byte("slim"), "video/mp4")
	}
	// updated_at moves with every write: set it without the trigger.
	exec(`ALTER TABLE jobs DISABLE TRIGGER jobs_touch_updated_at`)
	var due []string
	for i := range 60 {
		id := uuid.NewString()
		status := []string{"completed", "error"}[i%2]
		exec(`INSERT INTO jobs (job_id, status, completed_at, updated_at) VALUES ($1, $2::text,
		  CASE WHEN $2::text = 'completed' THEN now() - interval '25 hours' END, now() - interval '25 hours')`, id, status)
		put(id)
		due = append(due, id)
	}
	keep := map[string]string{}
	for _, c := range []struct{ status, age string }{{"completed", "1 hour"}, {"queued", "30 hours"}, {"processing", "30 hours"}} {
		id := uuid.NewString()
		exec(`INSERT INTO jobs (job_id, status, completed_at, updated_at) VALUES ($1, $2, now() - $3::interval, now() - $3::interval)`, id, c.status, c.age)
		put(id)
		keep[id] = c.status
	}

	// Issued uploads: one never queued for 25 hours (due), one for an hour.
	stale, recent := uuid.NewString(), uuid.NewString()
	exec(`INSERT INTO runops_uploads (job_id, issued_at) VALUES ($1, now() - interval '25 hours'), ($2, now() - interval '1 hour')`, stale, recent)
	fake.Put("videos/raw/"+stale+".mp4", []byte("upload"), "video/mp4")
	fake.Put("videos/raw/"+recent+".mp4", []byte("upload"), "video/mp4")
	due = append(due, stale)
	// A job that was queued, then its row deleted by hand: its SOP and
	// screenshots may still be stored, so its owner is kept.
	deleted := uuid.NewString()
	exec(`INSERT INTO runops_uploads (job_id, owner, issued_at) VALUES ($1, 'alice', now() - interval '25 hours')`, deleted)
	exec(`INSERT INTO jobs (job_id) VALUES ($1)`, deleted)
	exec(`DELETE FROM jobs WHERE job_id = $1`, deleted)

	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 3 {
		j := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: 24 * time.Hour,
			Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
		wg.Go(func() {
			n, err := j.Once(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != len(due) {
		t.Fatalf("%d deletions recorded for %d due jobs", total, len(due))
	}
	for _, id := range due {
		if _, ok := fake.Object("videos/raw/" + id + ".mp4"); ok {
			t.Fatalf("%s: upload still there", id)
		}
		if id == stale {
			continue // never queued: no slim copy, no row to record in
		}
		if _, ok := fake.Object("videos/slim/" + id + ".mp4"); !ok {
			t.Fatalf("%s: slim copy deleted without RUNOPS_SLIM_RETENTION", id)
		}
		var at *time.Time
		if err := pool.QueryRow(ctx, `SELECT (metadata->'retention'->>'raw_deleted_at')::timestamptz FROM jobs WHERE job_id = $1`, id).Scan(&at); err != nil || at == nil {
			t.Fatalf("%s: deletion not recorded: %v", id, err)
		}
	}
	if _, ok := fake.Object("videos/raw/" + recent + ".mp4"); !ok {
		t.Fatal("a recent unqueued upload was deleted")
	}
	var owner string
	if err := pool.QueryRow(ctx, `SELECT owner FROM runops_uploads WHERE job_id = $1`, deleted).Scan(&owner); err != nil || owner != "alice" {
		t.Fatalf("the owner of a queued job whose row was deleted: %q %v", owner, err)
	}
	for id, status := range keep {
		if _, ok := fake.Object("videos/raw/" + id + ".mp4"); !ok {
			t.Fatalf("the upload of a %s job was deleted", status)
		}
	}
	// Nothing is due twice; slim copies go when asked.
	j := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: 24 * time.Hour, Slim: 24 * time.Hour,
		Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if n, err := j.Once(ctx); err != nil || n != len(due)-1 {
		t.Fatalf("second round: %d %v; want only the slim copies of %d jobs", n, err, len(due)-1)
	}
	if _, ok := fake.Object("videos/slim/" + due[0] + ".mp4"); ok {
		t.Fatal("slim copy kept with RUNOPS_SLIM_RETENTION set")
	}
	if n, err := j.Once(ctx); err != nil || n != 0 {
		t.Fatalf("third round: %d %v", n, err)
	}
}

// An upload never queued is neither deleted nor forgotten before its upload
// URL expires, however short RUNOPS_RAW_RETENTION is: forgotten sooner, an
// upload through the URL afterwards had no owner, and its job was open to
// every signed-in user (storage's policy) and to the API.
func TestAnUnqueuedUploadOutlivesItsUploadURL(t *testing.T) {
	pool, _, objects := stores(t)
	ctx := context.Background()
	live, expired := uuid.NewString(), uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO runops_uploads (job_id, owner, issued_at) VALUES
		($1, 'alice', now() - interval '1 hour'), ($2, 'alice', now() - interval '2 hours 1 minute')`, live, expired); err != nil {
		t.Fatal(err)
	}
	j := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: time.Minute,
		Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if n, err := j.Once(ctx); err != nil || n != 1 {
		t.Fatalf("%d uploads expired, %v; want the one whose URL has expired", n, err)
	}
	var owners []string
	if err := pool.QueryRow(ctx, `SELECT array_agg(job_id::text) FROM runops_uploads WHERE owner = 'alice'`).Scan(&owners); err != nil {
		t.Fatal(err)
	}
	if len(owners) != 1 || owners[0] != live {
		t.Fatalf("uploads remembered: %v; want only %s, whose URL still works", owners, live)
	}
}

// The janitor's record of a deletion leaves the job's updated_at as it
// was: it is the clock of a job that ended in error (no completed_at).
// Before, the raw deletion restarted it, so the slim copy, due in the same
// sweep, was kept a whole RUNOPS_SLIM_RETENTION more, and `runops jobs
// requeue --status error --since 1h` took a day-old failure for a recent one.
func TestTheJanitorsRecordKeepsTheJobsClock(t *testing.T) {
	pool, fake, objects := stores(t)
	ctx := context.Background()
	old, recent := uuid.NewString(), uuid.NewString()
	// An INSERT does not fire the BEFORE UPDATE trigger: updated_at is as written.
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, error, updated_at) VALUES
	  ($1, 'error', 'x', now() - interval '25 hours'), ($2, 'error', 'Gemini quota exhausted', now() - interval '10 minutes')`, old, recent); err != nil {
		t.Fatal(err)
	}
	fake.Put("videos/raw/"+old+".mp4", []byte("upload"), "video/mp4")
	fake.Put("videos/slim/"+old+".mp4", []byte("slim"), "video/mp4")
	j := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: 24 * time.Hour, Slim: 24 * time.Hour,
		Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if n, err := j.Once(ctx); err != nil || n != 2 {
		t.Fatalf("%d deletions, %v; want the raw and the slim copy of the old failure", n, err)
	}
	for _, p := range []string{"videos/raw/" + old + ".mp4", "videos/slim/" + old + ".mp4"} {
		if _, ok := fake.Object(p); ok {
			t.Errorf("%s is kept", p)
		}
	}
	var age time.Duration
	if err := pool.QueryRow(ctx, `SELECT extract(epoch FROM now() - updated_at)::float8 * interval '1 second' FROM jobs WHERE job_id = $1`, old).Scan(&age); err != nil || age < 24*time.Hour {
		t.Errorf("the old failure's updated_at reads %s ago after the janitor's record (%v)", age, err)
	}
	ids, err := postgres.NewJobStore(pool).RequeueAll(ctx, "error", time.Hour)
	if err != nil || len(ids) != 1 || string(ids[0]) != recent {
		t.Errorf("requeue --status error --since 1h took %v, %v; want the recent failure alone", ids, err)
	}
}

// A job a person deleted keeps nothing in storage: RUNOPS_RAW_RETENTION
// after the deletion, its upload, slim copy, SOP and screenshots are
// deleted and its upload forgotten (the storage policy opened them through
// it). One deleted just now is kept that long (the row may come back), and
// one put back is kept as any job. Before, a deleted job's objects stayed.
func TestADeletedJobsObjectsGo(t *testing.T) {
	pool, fake, objects := stores(t)
	ctx := context.Background()
	exec := pgtest.Exec(t, pool)
	gone, fresh, back := uuid.NewString(), uuid.NewString(), uuid.NewString()
	every := func(id string) []string {
		return []string{"videos/raw/" + id + ".mp4", "videos/slim/" + id + ".mp4", "videos/sops/" + id + ".json",
			"videos/frames/" + id + "/open.jpg", "videos/frames/" + id + "/check.jpg"}
	}
	for _, id := range []string{gone, fresh, back} {
		exec(`INSERT INTO runops_uploads (job_id, owner, issued_at, queued_at) VALUES ($1, 'alice', now() - interval '3 days', now() - interval '3 days')`, id)
		exec(`INSERT INTO jobs (job_id, status, completed_at) VALUES ($1, 'completed', now())`, id)
		for _, p := range every(id) {
			fake.Put(p, []byte("x"), "application/octet-stream")
		}
	}
	exec(`DELETE FROM jobs WHERE job_id = ANY($1::uuid[])`, []string{gone, fresh, back})
	exec(`INSERT INTO jobs (job_id, status, completed_at) VALUES ($1, 'completed', now())`, back) // put back by hand
	var recorded int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runops_deleted_jobs WHERE job_id = ANY($1::uuid[]) AND deleted_at > now() - interval '1 minute'`,
		[]string{gone, fresh, back}).Scan(&recorded); err != nil || recorded != 3 {
		t.Fatalf("%d deletions recorded of 3 (%v)", recorded, err)
	}
	// Deleted a day and an hour ago: the trigger's record, moved back.
	exec(`UPDATE runops_deleted_jobs SET deleted_at = deleted_at - interval '25 hours' WHERE job_id = ANY($1::uuid[])`, []string{gone, back})
	j := &retention.Janitor{Store: postgres.NewJobStore(pool), Objects: objects, Raw: 24 * time.Hour,
		Every: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if n, err := j.Once(ctx); err != nil || n != 1 {
		t.Fatalf("%d jobs' objects deleted, %v; want the deleted job's", n, err)
	}
	for id, kept := range map[string]bool{gone: false, fresh: true, back: true} {
		for _, p := range every(id) {
			if _, ok := fake.Object(p); ok != kept {
				t.Errorf("%s: stored %v, want %v", p, ok, kept)
			}
		}
	}
	var uploads, deletions int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM runops_uploads WHERE job_id = $1),
	  (SELECT count(*) FROM runops_deleted_jobs WHERE job_id = ANY($2::uuid[]))`, gone, []string{gone, back}).Scan(&uploads, &deletions); err != nil ||
		uploads != 0 || deletions != 0 {
		t.Errorf("after the janitor: the deleted job's upload recorded %d times, %d deletions of the deleted and the put-back job left (%v)", uploads, deletions, err)
	}
}

// A table emptied at once (TRUNCATE, no row deleted) records every job
// with an upload as deleted; a deletion recorded before keeps its time.
func TestATruncatedJobsTableIsRecorded(t *testing.T) {
	pool, _, _ := stores(t)
	ctx := context.Background()
	before, after := uuid.NewString(), uuid.NewString()
	for _, e := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO runops_uploads (job_id, queued_at) VALUES ($1, now()), ($2, now())`, []any{before, after}},
		{`INSERT INTO jobs (job_id) VALUES ($1), ($2)`, []any{before, after}},
		{`INSERT INTO runops_deleted_jobs (job_id, deleted_at) VALUES ($1, now() - interval '3 hours')`, []any{before}},
		{`TRUNCATE jobs`, nil},
	} {
		if _, err := pool.Exec(ctx, e.sql, e.args...); err != nil {
			t.Fatal(err)
		}
	}
	var n, kept int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE job_id = $1 AND deleted_at < now() - interval '2 hours')
	  FROM runops_deleted_jobs WHERE job_id = ANY($2::uuid[])`, before, []string{before, after}).Scan(&n, &kept); err != nil || n != 2 || kept != 1 {
		t.Fatalf("%d of 2 recorded, the earlier time kept %d (%v)", n, kept, err)
	}
}
