package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/pgtest"
	"github.com/runops/runops/internal/postgres"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/wait"
	"github.com/runops/runops/supabase"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestMigrateTwiceAppliesNothingNew(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t) // already migrated once by the template
	ms, err := postgres.LoadMigrations(supabase.Migrations)
	if err != nil || len(ms) == 0 {
		t.Fatalf("load: %v %d", err, len(ms))
	}
	applied, err := postgres.Migrate(context.Background(), pool, ms)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second migrate applied %v, %v", applied, err)
	}
	var n int
	var name string
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*), (SELECT name FROM supabase_migrations.schema_migrations ORDER BY version LIMIT 1)
		 FROM supabase_migrations.schema_migrations`).Scan(&n, &name); err != nil {
		t.Fatal(err)
	}
	if n != len(ms) || name != ms[0].Name {
		t.Fatalf("schema_migrations has %d rows (name %q), want %d", n, name, len(ms))
	}
	// The SQL itself is idempotent too (the supabase CLI may run it on a
	// database that `runops migrate` already set up under another version),
	// here where there is no storage schema and no API role; SupabasePool
	// applies every file twice where they exist.
	for _, m := range ms {
		if _, err := pool.Exec(context.Background(), m.SQL); err != nil {
			t.Fatalf("re-running %s_%s: %v", m.Version, m.Name, err)
		}
	}
}

func TestConcurrentMigrateOnFreshDatabase(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	// Forget the template's bookkeeping, so both runs want to apply everything.
	if _, err := pool.Exec(ctx, `TRUNCATE supabase_migrations.schema_migrations`); err != nil {
		t.Fatal(err)
	}
	ms, _ := postgres.LoadMigrations(supabase.Migrations)
	var wg sync.WaitGroup
	results := make([][]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { results[i], errs[i] = postgres.Migrate(ctx, pool, ms) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if len(results[0])+len(results[1]) != len(ms) {
		t.Fatalf("applied %v and %v; want %d in all", results[0], results[1], len(ms))
	}
}

func TestJobsTableIsExactlyTheContract(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	rows, err := pool.Query(context.Background(), `
SELECT column_name, data_type, coalesce(character_maximum_length, 0), is_nullable, coalesce(column_default, '')
FROM information_schema.columns WHERE table_schema='public' AND table_name='jobs' ORDER BY ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	type col struct {
		Name, Type string
		Len        int
		Null, Def  string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[col])
	if err != nil {
		t.Fatal(err)
	}
	want := []col{
		{"id", "integer", 0, "NO", "nextval('jobs_id_seq'::regclass)"},
		{"job_id", "uuid", 0, "NO", ""},
		{"status", "character varying", 50, "NO", "'queued'::character varying"},
		{"created_at", "timestamp with time zone", 0, "NO", "now()"},
		{"updated_at", "timestamp with time zone", 0, "NO", "now()"},
		{"completed_at", "timestamp with time zone", 0, "YES", ""},
		{"error", "text", 0, "YES", ""},
		{"metadata", "jsonb", 0, "YES", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("columns %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("column %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	var rls bool
	if err := pool.QueryRow(context.Background(),
		`SELECT relrowsecurity FROM pg_class WHERE oid = 'public.jobs'::regclass`).Scan(&rls); err != nil || !rls {
		t.Fatalf("row level security on jobs: %v %v", rls, err)
	}
	var policies int
	_ = pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_policies WHERE tablename='jobs'`).Scan(&policies)
	if policies != 0 {
		t.Fatalf("jobs has %d policies; want none", policies)
	}
}

type notification struct {
	JobID  string `json:"job_id"`
	Op     string `json:"op"`
	Status string `json:"status"`
}

func TestNotifyTrigger(t *testing.T) {
	t.Parallel()
	pool, dsn := pgtest.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	listener, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, `LISTEN runops_jobs`); err != nil {
		t.Fatal(err)
	}
	id := "0b9c2f0e-4b7a-4c55-9a51-3c1f7e0e7a01"
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, id); err != nil {
			t.Fatal(err)
		}
	}
	// Every statement is followed by a marker notification; what arrives before
	// the marker is exactly what the statement sent.
	sentDoing := func(what string, do func()) []notification {
		t.Helper()
		do()
		if _, err := pool.Exec(ctx, `SELECT pg_notify('runops_jobs', '{"op":"MARK"}')`); err != nil {
			t.Fatal(err)
		}
		var got []notification
		for {
			n, err := listener.WaitForNotification(ctx)
			if err != nil {
				t.Fatalf("waiting for notification after %s: %v", what, err)
			}
			var p notification
			if err := json.Unmarshal([]byte(n.Payload), &p); err != nil {
				t.Fatalf("payload %q: %v", n.Payload, err)
			}
			if p.Op == "MARK" {
				return got
			}
			got = append(got, p)
		}
	}
	expectDoing := func(what string, do func(), want ...notification) {
		t.Helper()
		got := sentDoing(what, do)
		if len(got) != len(want) {
			t.Fatalf("%s sent %+v; want %+v", what, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s sent %+v; want %+v", what, got, want)
			}
		}
	}
	expect := func(sql string, want ...notification) {
		t.Helper()
		expectDoing(sql, func() { exec(sql) }, want...)
	}
	n := func(op, status string) notification { return notification{id, op, status} }

	expect(`INSERT INTO jobs (job_id) VALUES ($1)`, n("INSERT", "queued"))
	expect(`UPDATE jobs SET metadata = coalesce(metadata,'{}') || '{"stage":"probing"}' WHERE job_id=$1`)
	expect(`UPDATE jobs SET updated_at = now(), error = 'x', completed_at = now() WHERE job_id=$1`)
	expect(`UPDATE jobs SET status = 'processing' WHERE job_id=$1`, n("UPDATE", "processing"))
	expect(`UPDATE jobs SET status = 'processing', metadata = '{}' WHERE job_id=$1`)
	expect(`UPDATE jobs SET status = 'queued' WHERE job_id=$1`, n("UPDATE", "queued"))
	expect(`DELETE FROM jobs WHERE job_id=$1`, n("DELETE", "queued"))

	// The worker's own claims and outcomes are silent; its hand-backs and
	// rescues to the queue are not; the same transitions made by anybody else
	// notify. (The worker's mark is transaction-local: it never leaks into
	// the next statement on the same connection.)
	store := postgres.NewQueueStore(pool)
	var token string
	claim := func() {
		got, err := store.Claim(ctx, "w", 1, time.Minute)
		if err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		token = got[0].Token
	}
	fenced := func(what string, write func() (bool, error)) func() {
		return func() {
			if ok, err := write(); err != nil || !ok {
				t.Fatalf("%s: %v %v", what, ok, err)
			}
		}
	}
	expireLease := func() { pgtest.ExpireLeases(t, pool, id) }
	expect(`INSERT INTO jobs (job_id) VALUES ($1)`, n("INSERT", "queued"))
	expectDoing("the worker's claim", claim)
	expectDoing("the worker's completion", fenced("complete", func() (bool, error) {
		return store.Finish(ctx, queue.Outcome{ID: jobs.ID(id), Token: token, Status: jobs.StatusCompleted})
	}))
	expect(`UPDATE jobs SET status = 'queued' WHERE job_id=$1`, n("UPDATE", "queued"))
	expectDoing("the worker's claim", claim)
	expectDoing("the worker's failure", fenced("fail", func() (bool, error) {
		return store.Finish(ctx, queue.Outcome{ID: jobs.ID(id), Token: token, Status: jobs.StatusError, Message: "m", Cause: "c"})
	}))
	expect(`UPDATE jobs SET status = 'queued' WHERE job_id=$1`, n("UPDATE", "queued"))
	expectDoing("the worker's claim", claim)
	expectDoing("a hand-back", fenced("hand back", func() (bool, error) { return store.HandBack(ctx, jobs.ID(id), token) }), n("UPDATE", "queued"))
	expectDoing("the worker's claim", claim)
	expireLease()
	expectDoing("a rescue to the queue", func() {
		if rq, _, err := store.Rescue(ctx, 10, "interrupted"); err != nil || len(rq) != 1 {
			t.Fatalf("rescue: %v %v", rq, err)
		}
	}, n("UPDATE", "queued"))
	expectDoing("the worker's claim", claim)
	expireLease()
	expectDoing("a rescue that ends the job", func() {
		if _, failed, err := store.Rescue(ctx, 1, "interrupted"); err != nil || len(failed) != 1 {
			t.Fatalf("rescue: %v %v", failed, err)
		}
	})
	expect(`UPDATE jobs SET status = 'queued' WHERE job_id=$1`, n("UPDATE", "queued"))
	expectDoing("the worker's claim", claim)
	expect(`UPDATE jobs SET status = 'completed' WHERE job_id=$1`, n("UPDATE", "completed"))
	expect(`UPDATE jobs SET status = 'processing' WHERE job_id=$1`, n("UPDATE", "processing"))
	expect(`UPDATE jobs SET status = 'error' WHERE job_id=$1`, n("UPDATE", "error"))
}

func TestUpdatedAtTrigger(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	id := "0b9c2f0e-4b7a-4c55-9a51-3c1f7e0e7a02"
	// Backdate the row, then any update must move updated_at to now().
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, created_at, updated_at) VALUES ($1, now()-interval '1 day', now()-interval '1 day')`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata='{"a":1}' WHERE job_id=$1`, id); err != nil {
		t.Fatal(err)
	}
	var fresh bool
	if err := pool.QueryRow(ctx, `SELECT updated_at > now() - interval '1 hour' AND created_at < now() - interval '1 hour' FROM jobs WHERE job_id=$1`, id).Scan(&fresh); err != nil || !fresh {
		t.Fatalf("updated_at not touched: %v %v", fresh, err)
	}
}

// Callers that queue one job at once make one row, all of them answered
// with it; with its upload recorded (an owner) too, as queue-job always
// has it, which the owner's trigger reads under a lock: with a share lock,
// taken by each caller before its row, a fifth of such callers deadlocked.
func TestEnqueueIsIdempotentUnderConcurrency(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewJobStore(pool)
	ctx := context.Background()
	for round := range 20 {
		id := jobs.ID(uuid.NewString())
		uploaded := round > 0
		if uploaded {
			if err := store.RecordUpload(ctx, id, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		const callers = 8
		var wg sync.WaitGroup
		created := make(chan bool, callers)
		errs := make(chan error, callers)
		for range callers {
			wg.Go(func() {
				meta := map[string]any{"upload": map[string]any{"size_bytes": 10}}
				if uploaded {
					meta["owner"] = "alice"
				}
				j, c, err := store.Enqueue(ctx, id, meta)
				if err != nil {
					errs <- err
					return
				}
				if j.ID != id || j.Status != jobs.StatusQueued {
					errs <- errors.New("unexpected job " + string(j.ID) + " " + string(j.Status))
				}
				created <- c
			})
		}
		wg.Wait()
		close(created)
		close(errs)
		for err := range errs {
			t.Fatalf("round %d (upload recorded: %v): %v", round, uploaded, err)
		}
		n := 0
		for c := range created {
			if c {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d callers created the job; want 1", round, n)
		}
		var rows int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM jobs WHERE job_id=$1`, string(id)).Scan(&rows)
		if rows != 1 {
			t.Fatalf("round %d: %d rows", round, rows)
		}
		j, err := store.Get(ctx, id)
		if err != nil || j.Metadata["upload"] == nil || j.Stage() != "" {
			t.Fatalf("get: %+v %v", j, err)
		}
	}
	if _, err := store.Get(ctx, "0b9c2f0e-4b7a-4c55-9a51-3c1f7e0e7aff"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("missing job: %v", err)
	}
}

func TestUnavailableDatabase(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.Pool(t)
	proxy, viaProxy := pgtest.NewProxy(t, dsn)
	pool := pgtest.Open(t, viaProxy, 4)
	store := postgres.NewJobStore(pool)
	ctx := context.Background()
	if err := store.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.SetDown(true)
	if _, err := store.Get(ctx, "0b9c2f0e-4b7a-4c55-9a51-3c1f7e0e7a04"); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("database down: got %v; want ErrUnavailable", err)
	}
	proxy.SetDown(false)
	if _, err := store.Get(ctx, "0b9c2f0e-4b7a-4c55-9a51-3c1f7e0e7a04"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("database back: got %v; want ErrNotFound", err)
	}
}

// A transaction PostgreSQL rolls back for another's sake (a deadlock) is an
// outage of a moment, retried like one: before, a stage write that hit one
// failed its job for good.
func TestADeadlockIsPassing(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	ctx := context.Background()
	errs := make(chan error, 2)
	locked := make(chan struct{}, 2)
	both := make(chan struct{})
	for _, order := range [][2]int{{1, 2}, {2, 1}} {
		go func() {
			signal := sync.OnceFunc(func() { locked <- struct{}{} })
			defer signal() // also when it failed before: the test waits for both
			errs <- pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, order[0]); err != nil {
					return err
				}
				signal()
				<-both
				_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, order[1])
				return err
			})
		}()
	}
	<-locked
	<-locked
	close(both)
	var deadlocked error
	for range 2 {
		if err := <-errs; err != nil {
			deadlocked = err
		}
	}
	if deadlocked == nil {
		t.Fatal("no deadlock: the test proves nothing")
	}
	if err := postgres.Wrap("write", deadlocked); !errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("a deadlock: %v, not an outage", err)
	}
	id := uuid.NewString()
	_, err := pool.Exec(ctx, `INSERT INTO jobs (job_id) VALUES ($1), ($1)`, id)
	if err := postgres.Wrap("write", err); err == nil || errors.Is(err, jobs.ErrUnavailable) {
		t.Fatalf("a unique violation: %v, an outage", err)
	}
}

// On a Supabase database the migration also creates the bucket and the read
// policy; a minimal storage schema stands in for Supabase's.
func TestMigrationCreatesBucketWhereStorageExists(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.SupabasePool(t) // migrated again where storage exists
	ctx := context.Background()
	ms, _ := postgres.LoadMigrations(supabase.Migrations)
	for _, m := range ms { // and again: idempotent here too
		if _, err := pool.Exec(ctx, m.SQL); err != nil {
			t.Fatal(err)
		}
	}
	var public bool
	var limit int64
	var mimes []string
	if err := pool.QueryRow(ctx, `SELECT public, file_size_limit, allowed_mime_types FROM storage.buckets WHERE id='videos'`).
		Scan(&public, &limit, &mimes); err != nil {
		t.Fatal(err)
	}
	// The uploads, the SOP documents, the step screenshots and Markdown; the
	// CLI's config.toml declares the same bucket.
	want := `["video/*", "application/json", "image/jpeg", "text/markdown"]`
	if got, _ := json.Marshal(mimes); public || limit != jobs.MaxUploadBytes || strings.ReplaceAll(string(got), ",", ", ") != want {
		t.Fatalf("bucket: public=%v limit=%d mimes=%v", public, limit, mimes)
	}
	config, err := os.ReadFile("../../supabase/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(config), "\nallowed_mime_types = "+want+"\n") {
		t.Fatalf("supabase/config.toml declares other MIME types than the migrations: want %s", want)
	}
	var cmd string
	var roles []string
	if err := pool.QueryRow(ctx, `SELECT cmd, roles::text[] FROM pg_policies WHERE schemaname='storage' AND tablename='objects'`).
		Scan(&cmd, &roles); err != nil {
		t.Fatal(err)
	}
	if cmd != "SELECT" || len(roles) != 1 || roles[0] != "authenticated" {
		t.Fatalf("policy: %s %v", cmd, roles)
	}
}

func TestTransactionPoolerIsDetected(t *testing.T) {
	t.Parallel()
	if !postgres.IsTransactionPooler("postgresql://u:p@db.example.supabase.co:6543/postgres") ||
		!postgres.IsTransactionPooler("postgres://u:p@h:5432/db?pgbouncer=true") ||
		postgres.IsTransactionPooler("postgres://u:p@h:5432/db") {
		t.Fatal("pooler detection")
	}
	// pgbouncer=true is a client hint: it must not reach the server as a setting.
	_, dsn := pgtest.Pool(t)
	pool := pgtest.Open(t, dsn+"&pgbouncer=true", 1)
	if err := postgres.NewJobStore(pool).Ping(context.Background()); err != nil {
		t.Fatalf("with pgbouncer=true: %v", err)
	}
}

// A person may type anything into metadata; the queue must keep working.
func TestLeaseExpiryReadsAnything(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	for meta, want := range map[string]bool{
		`null`:                              true,
		`{}`:                                true,
		`{"lease": null}`:                   true,
		`{"lease": "x"}`:                    true,
		`{"lease": {}}`:                     true,
		`{"lease": {"expires_at": "soon"}}`: true,
		`{"lease": {"expires_at": "2026-02-30T00:00:00Z"}}`: true,
		`{"lease": {"expires_at": 12}}`:                     true,
		`{"lease": {"expires_at": "2000-01-01T00:00:00Z"}}`: true,
		`{"lease": {"expires_at": "2999-01-01T00:00:00Z"}}`: false,
	} {
		var got bool
		if err := pool.QueryRow(context.Background(), `SELECT public.runops_lease_expired($1::jsonb)`, meta).Scan(&got); err != nil || got != want {
			t.Errorf("%s: %v %v; want %v", meta, got, err, want)
		}
	}
	var attempt int
	for meta, want := range map[string]int{`{"attempt": "two"}`: 0, `{"attempt": 2.7}`: 2, `{"attempt": -3}`: 0, `{}`: 0, `{"attempt": 4}`: 4} {
		if err := pool.QueryRow(context.Background(), `SELECT public.runops_attempt($1::jsonb)`, meta).Scan(&attempt); err != nil || attempt != want {
			t.Errorf("attempt of %s: %d %v", meta, attempt, err)
		}
	}
}

func TestJSONBMergeIsDeep(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.Pool(t)
	var got string
	err := pool.QueryRow(context.Background(),
		`SELECT public.runops_jsonb_merge('{"a":1,"t":{"x":1,"y":2},"arr":[1]}', '{"t":{"y":3,"z":4},"arr":[2],"b":true}')::text`).Scan(&got)
	if err != nil || got != `{"a": 1, "b": true, "t": {"x": 1, "y": 3, "z": 4}, "arr": [2]}` {
		t.Fatalf("%s %v", got, err)
	}
}

// oneEditedJob queues a job whose metadata is the SQL expression meta, as a
// person's edit leaves it, and a minute later one with none; it returns the
// pool and the edited job's id.
func oneEditedJob(t *testing.T, meta string) (*pgxpool.Pool, jobs.ID) {
	t.Helper()
	pool, _ := pgtest.Pool(t)
	id := jobs.ID(uuid.NewString())
	if _, err := pool.Exec(context.Background(), `INSERT INTO jobs (job_id, created_at, metadata) VALUES
		($1, now() - interval '1 minute', `+meta+`), ($2, now(), '{}')`, string(id), uuid.NewString()); err != nil {
		t.Fatal(err)
	}
	return pool, id
}

// Metadata a person wrote with a number float64 cannot hold (jsonb keeps
// any): the job is still read, by itself and by a claim of several, its
// other values as before, the number kept with its digits, none to its
// accessor. Before, the whole decode failed: the job could not be read,
// and a claim that took it lost every job it took with it.
func TestMetadataWithHugeNumbersIsRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// 1e-400 is 0 to float64, as encoding/json reads it; ±1e400 no float64 at all.
	pool, huge := oneEditedJob(t, `'{"progress": 1e400, "deep": {"list": [-1e400, 2, 1e-400]}, "stage": "queued", "tiny": 0.5}'`)
	store := postgres.NewJobStore(pool)
	j, err := store.Get(ctx, huge)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	deep, _ := j.Metadata["deep"].(map[string]any)
	list, _ := deep["list"].([]any)
	if j.Progress() != nil || j.Stage() != "queued" || j.Metadata["tiny"] != 0.5 || len(list) != 3 ||
		list[1] != 2.0 || list[2] != 0.0 || !strings.HasPrefix(fmt.Sprint(list[0]), "-1000000000") {
		t.Fatalf("metadata read as %v (progress %v)", j.Metadata, j.Progress())
	}
	claimed, err := postgres.NewQueueStore(pool).Claim(ctx, "w", 2, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("a claim of both: %d jobs, %v", len(claimed), err)
	}
	if claimed[0].ID != huge || claimed[0].Metadata["lease"] == nil {
		t.Fatalf("claimed %s first, metadata %v", claimed[0].ID, claimed[0].Metadata)
	}
	if out, err := json.Marshal(claimed[0].Metadata["deep"]); err != nil || !strings.HasPrefix(string(out), `{"list":[-1000000000`) || len(out) != len(`{"list":[-1`)+400+len(`,2,0]}`) {
		t.Fatalf("the number written back as %.40s… (%d characters), %v", out, len(out), err)
	}
}

// Arrays and objects nested deeper than the service reads are cut at that
// depth, brackets and quotes inside strings are text, and JSON with none
// is read as it is.
func TestPruneDeep(t *testing.T) {
	for _, c := range []struct {
		raw   string
		limit int
		want  string
	}{
		{`{"a": "[[\"]]{", "b": [[1, {"c": [2]}]], "d": 3}`, 2, `{"a": "[[\"]]{", "b": [null], "d": 3}`},
		{`{"a": "[[\"]]{", "b": [[1, {"c": [2]}]], "d": 3}`, 3, `{"a": "[[\"]]{", "b": [[1, null]], "d": 3}`},
		{`{"a": "x\\", "b": [[1]], "c": {"d": {}}}`, 2, `{"a": "x\\", "b": [null], "c": {"d": null}}`},
		{`{"a": [[[]]], "b": [[1]]}`, 2, `{"a": [null], "b": [null]}`},
		{`{"a": [1, [2]], "b": "[[[{"}`, 3, `{"a": [1, [2]], "b": "[[[{"}`}, // past the bracket count, nothing cut
		{`{"a": [1, [2]]}`, 3, `{"a": [1, [2]]}`},
	} {
		raw := []byte(c.raw)
		got := postgres.PruneDeep(raw, c.limit)
		if string(got) != c.want {
			t.Errorf("%s at %d: %s; want %s", c.raw, c.limit, got, c.want)
		}
		if c.raw == c.want && &got[0] != &raw[0] {
			t.Errorf("%s at %d: copied, with nothing cut", c.raw, c.limit)
		}
	}
}

// Metadata nested deeper than encoding/json reads (a person can write
// 10,001 levels; jsonb keeps them) is read with that value cut short:
// the job can be read and claimed, with the jobs claimed beside it, and
// the row keeps the value. Before, the claim failed after it had taken
// both jobs, which stayed processing under leases no run held until the
// leases expired, again at every claim.
func TestMetadataNestedDeeperThanGoReads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, deep := oneEditedJob(t, `jsonb_build_object('stage', 'queued', 'note', (repeat('[', 10001) || repeat(']', 10001))::jsonb)`)
	j, err := postgres.NewJobStore(pool).Get(ctx, deep)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if _, ok := j.Metadata["note"].([]any); !ok || j.Stage() != "queued" {
		t.Fatalf("metadata read as %.200v", j.Metadata)
	}
	claimed, err := postgres.NewQueueStore(pool).Claim(ctx, "w", 2, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("a claim of both: %d jobs, %v", len(claimed), err)
	}
	var token string
	var depth int
	if err := pool.QueryRow(ctx, `SELECT metadata->'lease'->>'token', length(metadata->>'note') FROM jobs WHERE job_id = $1`, string(deep)).Scan(&token, &depth); err != nil {
		t.Fatal(err)
	}
	if claimed[0].ID != deep || claimed[0].Token != token || depth != 2*10001 {
		t.Fatalf("claimed %s with token %q (the row's %q); the row's value now %d characters", claimed[0].ID, claimed[0].Token, token, depth)
	}
}

// A count of attempts a person wrote that an integer cannot hold is read as
// none, as any other unreadable attempt: the job is claimed (its next
// attempt is the first) and so are the jobs behind it. Before, the claim's
// count overflowed, and every claim that reached the job failed: one edit
// stopped the fleet.
func TestAnAttemptBeyondAnIntegerDoesNotStopClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	var edited []jobs.ID
	for i, attempt := range []string{`2147483647`, `3000000000`, `1e400`, `1000000000`} {
		id := jobs.ID(uuid.NewString())
		edited = append(edited, id)
		if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, created_at, metadata) VALUES ($1, now() - make_interval(mins => 10 - $2), jsonb_build_object('attempt', $3::jsonb))`,
			string(id), i, attempt); err != nil {
			t.Fatal(err)
		}
	}
	plain := jobs.ID(uuid.NewString())
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id) VALUES ($1)`, string(plain)); err != nil {
		t.Fatal(err)
	}
	claimed, err := postgres.NewQueueStore(pool).Claim(ctx, "w", 5, time.Minute)
	if err != nil || len(claimed) != 5 {
		t.Fatalf("a claim of five: %d jobs, %v", len(claimed), err)
	}
	for _, c := range claimed {
		want := 1.0 // an attempt it cannot read counts as none
		if c.ID == edited[3] {
			want = 1e9 + 1 // the most it reads
		}
		if c.Metadata["attempt"] != want {
			t.Errorf("job %s claimed as attempt %v; want %v", c.ID, c.Metadata["attempt"], want)
		}
	}
}

// Metadata a person set to something that is not an object, on a job a
// worker held: the rescuer still rescues every expired lease, that job's
// too (its metadata starts over), and a list of jobs reads them all.
func TestMetadataThatIsNotAnObject(t *testing.T) {
	t.Parallel()
	for _, meta := range []string{`"oops"`, `42`, `true`, `null`, `[1, 2]`} {
		t.Run(meta, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, _ := pgtest.Pool(t)
			store := postgres.NewQueueStore(pool)
			other, edited := jobs.ID(uuid.NewString()), jobs.ID(uuid.NewString())
			if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id) VALUES ($1), ($2)`, string(other), string(edited)); err != nil {
				t.Fatal(err)
			}
			if c, err := store.Claim(ctx, "w", 2, time.Minute); err != nil || len(c) != 2 {
				t.Fatalf("claim: %d %v", len(c), err)
			}
			// The worker died: its leases expired. A person edits one job.
			pgtest.ExpireLeases(t, pool)
			if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = $2::jsonb WHERE job_id = $1`, string(edited), meta); err != nil {
				t.Fatal(err)
			}
			requeued, failed, err := store.Rescue(ctx, 3, "interrupted")
			if err != nil || len(requeued) != 2 || len(failed) != 0 {
				t.Fatalf("rescue: requeued %v, failed %v, %v", requeued, failed, err)
			}
			if _, err := pool.Exec(ctx, `UPDATE jobs SET metadata = $2::jsonb WHERE job_id = $1`, string(edited), meta); err != nil {
				t.Fatal(err)
			}
			list, err := postgres.NewJobStore(pool).List(ctx, "", 50)
			if err != nil || len(list) != 2 {
				t.Fatalf("list: %d jobs, %v", len(list), err)
			}
			for _, j := range list {
				if j.ID == edited && len(j.Metadata) != 0 {
					t.Errorf("metadata %s read as %v; want no keys", meta, j.Metadata)
				}
			}
		})
	}
}

// Times a person set that no answer can say (PostgreSQL's infinities, a
// year past 9999; an insert's updated_at is not touched): the job is read,
// alone, by job-status's shared statement and by a claim that takes it with
// another, its times the nearest the service can say, and the queue's
// gauges read the table. Before, the scan failed: the job's status,
// and every status read that shared its statement, answered 503, and a
// claim that took it stranded every job it took.
func TestTimesBeyondWhatAnAnswerCanSay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.Pool(t)
	done, queued, plain := jobs.ID(uuid.NewString()), jobs.ID(uuid.NewString()), jobs.ID(uuid.NewString())
	if _, err := pool.Exec(ctx, `INSERT INTO jobs (job_id, status, created_at, updated_at, completed_at) VALUES
		($1, 'completed', '-infinity', now(), 'infinity'), ($2, 'queued', '12000-01-01', '-infinity', NULL),
		($3, 'queued', now(), 'infinity', NULL)`,
		string(done), string(queued), string(plain)); err != nil {
		t.Fatal(err)
	}
	// The queue's gauges read the whole table. Both queued jobs' times are
	// infinite or far off: they have waited since they were queued, now.
	if stats, err := postgres.NewJobStore(pool).QueueStats(ctx); err != nil || stats.ByStatus["queued"] != 2 || stats.OldestQueued > time.Minute || stats.OldestQueued < 0 {
		t.Fatalf("queue stats: %+v, %v", stats, err)
	}
	earliest, latest := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	js := postgres.NewJobStore(pool)
	j, err := js.Get(ctx, done)
	if err != nil || !j.CreatedAt.Equal(earliest) || j.CompletedAt == nil || !j.CompletedAt.Equal(latest) {
		t.Fatalf("get: %v, %v, %v", j.CreatedAt, j.CompletedAt, err)
	}
	sum, err := js.Summary(ctx, done)
	if err != nil || !sum.CreatedAt.Equal(earliest) || sum.CompletedAt == nil || !sum.CompletedAt.Equal(latest) {
		t.Fatalf("job-status's read: %v, %v, %v", sum.CreatedAt, sum.CompletedAt, err)
	}
	claimed, err := postgres.NewQueueStore(pool).Claim(ctx, "w", 2, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("a claim of two: %d jobs, %v", len(claimed), err)
	}
	for _, c := range claimed {
		if c.ID == queued && (!c.CreatedAt.Equal(latest) || !c.QueuedAt.Equal(earliest)) {
			t.Errorf("the job made in the year 12000 and queued at -infinity claimed as made %v, queued %v", c.CreatedAt, c.QueuedAt)
		}
	}
}

// A migration that has shipped is never edited (a database that applied it
// would never see the change): supabase/migrations.sha256 records each file
// as it shipped, and a new migration adds its line.
func TestShippedMigrationsAreUnchanged(t *testing.T) {
	raw, err := os.ReadFile("../../supabase/migrations.sha256")
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("migrations.sha256: %q is not sha256sum's output", line)
		}
		recorded[name] = sum
	}
	files, err := fs.Glob(supabase.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		body, err := fs.ReadFile(supabase.Migrations, f)
		if err != nil {
			t.Fatal(err)
		}
		name := path.Base(f)
		want, ok := recorded[name]
		if got := fmt.Sprintf("%x", sha256.Sum256(body)); !ok {
			t.Errorf("%s is not in supabase/migrations.sha256: add `%s  %s` once it is final", name, got, name)
		} else if got != want {
			t.Errorf("%s was edited after it shipped: put the change in a new migration", name)
		}
	}
}

// A person deleting a job while queue-job queues it again (the upload is
// still there) do not deadlock: the deletion's record locks no upload row,
// which queue-job's trigger locks before the job's. Here the deletion is
// held, its row locked, until queue-job waits for that row; then both must
// end well. Before, the deletion's trigger updated runops_uploads and one
// of the two failed: deadlock detected.
func TestADeletionAndAQueueJobAtOnce(t *testing.T) {
	t.Parallel()
	pool, store, id, meta := queuedUpload(t)
	ctx := context.Background()
	gate, err := pool.Acquire(ctx) // holds the deletion mid-statement
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Release()
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}
	deleted, queued := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := pool.Exec(ctx, `WITH d AS (DELETE FROM jobs WHERE job_id = $1 RETURNING 1) SELECT pg_advisory_xact_lock(4242) FROM d`, string(id))
		deleted <- err
	}()
	pgtest.UntilWaiting(t, pool, "the deletion to hold the job's row", "advisory")
	go func() {
		_, _, err := store.Enqueue(ctx, id, meta)
		queued <- err
	}()
	pgtest.UntilWaiting(t, pool, "queue-job to wait for the job's row", "transactionid")
	if _, err := gate.Exec(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	if err := wait.Recv(t, deleted, "the deletion"); err != nil {
		t.Errorf("the deletion: %v", err)
	}
	if err := wait.Recv(t, queued, "queue-job"); err != nil {
		t.Errorf("queue-job: %v", err)
	}
}

// A job put back by hand and deleted again while the janitor forgets the
// deletions undone keeps its new deletion's record: the janitor waits for
// the deletion and passes it over. Before, it deleted the new record, and
// the job's objects were never expired.
func TestARedeletionWhileTheJanitorRunsIsKept(t *testing.T) {
	t.Parallel()
	pool, store, id, meta := queuedUpload(t)
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := pool.Exec(ctx, `DELETE FROM jobs WHERE job_id = $1`, string(id)); return err },
		func() error { _, _, err := store.Enqueue(ctx, id, meta); return err }, // put back
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `DELETE FROM jobs WHERE job_id = $1`, string(id)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := store.ExpireDeleted(ctx, time.Hour, 10, func(context.Context, []jobs.ID) error { return nil })
		done <- err
	}()
	pgtest.UntilWaiting(t, pool, "the janitor to wait for the deletion", "transactionid")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait.Recv(t, done, "the janitor"); err != nil {
		t.Fatal(err)
	}
	var records int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM runops_deleted_jobs WHERE job_id = $1`, string(id)).Scan(&records); err != nil || records != 1 {
		t.Fatalf("%d records of the job's deletion (%v): its objects would never be expired", records, err)
	}
}

// A deleted job queued again (queue-job: its upload was still there) while
// the janitor removes its objects waits for the janitor, and is queued with
// its owner: the upload's row the janitor forgets is made again, from the
// owner queue-job read. Before, the insert went through at once, and the
// janitor then forgot the upload of a job that has a row: its owner with it.
func TestAJobQueuedAgainWhileTheJanitorExpiresItKeepsItsOwner(t *testing.T) {
	t.Parallel()
	pool, store, id, meta := queuedUpload(t)
	ctx := context.Background()
	exec := pgtest.Exec(t, pool)
	exec(`DELETE FROM jobs WHERE job_id = $1`, string(id))
	exec(`UPDATE runops_deleted_jobs SET deleted_at = now() - interval '2 hours' WHERE job_id = $1`, string(id))

	queued := make(chan error, 1)
	var removed []jobs.ID
	_, err := store.ExpireDeleted(ctx, time.Hour, 10, func(_ context.Context, ids []jobs.ID) error {
		removed = ids
		go func() { // the owner queues the job again through the API
			_, _, err := store.Enqueue(ctx, id, map[string]any{"upload": meta["upload"], "owner": "alice"})
			queued <- err
		}()
		// Until it is queued, or waits for the janitor: the owner's check
		// below decides.
		wait.For(t, "queue-job to end or wait for the janitor", 30*time.Second, func() bool {
			return len(queued) > 0 || pgtest.Waiting(pool, "transactionid")
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.Recv(t, queued, "queue-job"); err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 {
		t.Fatalf("the janitor removed the objects of %v: the test proves nothing", removed)
	}
	var owner *string
	if err := pool.QueryRow(ctx, `SELECT (SELECT owner FROM runops_uploads WHERE job_id = j.job_id) FROM jobs j WHERE j.job_id = $1`,
		string(id)).Scan(&owner); err != nil {
		t.Fatalf("the job queued again has no row: %v", err)
	}
	if owner == nil || *owner != "alice" {
		t.Fatalf("the job queued again is owned by %v, not alice: its upload's row was forgotten under it", owner)
	}
}

// queuedUpload is a fresh database with a job queued through queue-job for
// alice's upload, and the metadata it was queued with.
func queuedUpload(t *testing.T) (*pgxpool.Pool, *postgres.JobStore, jobs.ID, map[string]any) {
	t.Helper()
	pool, _ := pgtest.Pool(t)
	store := postgres.NewJobStore(pool)
	id := jobs.ID(uuid.NewString())
	if err := store.RecordUpload(context.Background(), id, "alice"); err != nil {
		t.Fatal(err)
	}
	meta := map[string]any{"upload": map[string]any{"size_bytes": 10}}
	if _, _, err := store.Enqueue(context.Background(), id, meta); err != nil {
		t.Fatal(err)
	}
	return pool, store, id, meta
}
