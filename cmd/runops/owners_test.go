package main

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/runops/runops/internal/pgtest"
)

// Three real worker processes (4 slots each) claim through a
// transaction-mode PgBouncer with RUNOPS_OWNER_CONCURRENCY=3: alice's
// backlog of 10 long jobs never has more than 3 processing, bob's job,
// queued after all of them, runs at once on a free slot; when a person
// stops one of alice's jobs, her next one starts (woken, with the sweep
// far away), and still no more than 3 run.
func TestAnOwnerCapAcrossWorkerProcesses(t *testing.T) {
	bin := recordingBinary(t)
	d, dsn := newDB(t)
	pooler := pgtest.NewBouncer(t, dsn, 6)
	for range 3 {
		startWorker(t, bin, pooler.URL, "RUNOPS_LISTEN_DATABASE_URL="+dsn, "RUNOPS_OWNER_CONCURRENCY=3",
			"RUNOPS_WORKER_CONCURRENCY=4", "RUNOPS_SWEEP=10m", "RUNOPS_LEASE_TTL=30s", "RUNOPS_HEARTBEAT=1s")
	}
	worst := pgtest.WatchMax(t, d.pool, `SELECT count(*) FROM jobs WHERE status = 'processing' AND metadata->>'owner' = 'alice'`)

	d.exec(`INSERT INTO jobs (job_id, created_at, metadata)
		SELECT gen_random_uuid(), now() - make_interval(secs => 100 - i), '{"owner": "alice", "test_hold": true}' FROM generate_series(1, 10) i`)
	bob := uuid.NewString()
	d.exec(`INSERT INTO jobs (job_id, metadata) VALUES ($1, '{"owner": "bob"}')`, bob)
	d.waitFor("bob's job to complete and 3 of alice's to run", func() bool {
		return d.scalar(`SELECT status FROM jobs WHERE job_id = $1`, bob).(string) == "completed" &&
			d.scalar(`SELECT count(*) FROM jobs WHERE status = 'processing' AND metadata->>'owner' = 'alice'`).(int64) == 3
	})
	d.exec(`UPDATE jobs SET status = 'error', error = 'Stopped by a person.'
		WHERE id = (SELECT min(id) FROM jobs WHERE status = 'processing' AND metadata->>'owner' = 'alice')`)
	d.waitFor("alice's next job to start", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE metadata->>'owner' = 'alice' AND metadata ? 'attempts'`).(int64) == 4 &&
			d.scalar(`SELECT count(*) FROM jobs WHERE status = 'processing' AND metadata->>'owner' = 'alice'`).(int64) == 3
	})
	if w := worst(); w > 3 {
		t.Fatalf("alice had %d jobs processing at once; the cap is 3", w)
	}
	if n := d.scalar(`SELECT count(*) FROM jobs WHERE status = 'queued' AND metadata->>'owner' = 'alice'`).(int64); n != 6 {
		t.Fatalf("%d of alice's jobs queued; want 6", n)
	}
}

// One real worker process running one job at a time: alice's backlog of 40
// delays bob's job, queued after all of them, by one claim; dave's job,
// queued last and rushed by SQL as the dashboard does, goes first.
func TestABacklogDelaysAnotherOwnerByOneClaim(t *testing.T) {
	bin := recordingBinary(t)
	d, dsn := newDB(t)
	startWorker(t, bin, dsn, "RUNOPS_WORKER_CONCURRENCY=1")
	tx, err := d.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO jobs (job_id, created_at, metadata)
		 SELECT gen_random_uuid(), now() - make_interval(secs => 200 - i), jsonb_build_object('owner', 'alice', 'name', 'alice' || i) FROM generate_series(1, 40) i`,
		`INSERT INTO jobs (job_id, created_at, metadata) VALUES (gen_random_uuid(), now() - interval '100 seconds', '{"owner": "bob", "name": "bob"}')`,
		`INSERT INTO jobs (job_id, metadata) VALUES (gen_random_uuid(), '{"owner": "dave", "name": "dave"}')`,
		`UPDATE jobs SET metadata = metadata || '{"priority": -5}' WHERE metadata->>'name' = 'dave'`,
	} {
		if _, err := tx.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.waitFor("every job to complete", func() bool {
		return d.scalar(`SELECT count(*) FROM jobs WHERE status = 'completed'`).(int64) == 42
	})
	if got := d.scalar(`SELECT string_agg(name, ' ' ORDER BY started) FROM (
	SELECT metadata->>'name' AS name, (metadata->'attempts'->0->>'started_at')::timestamptz AS started
	FROM jobs ORDER BY started LIMIT 4) first`).(string); got != "dave alice1 bob alice2" {
		t.Fatalf("claimed %s first; want dave alice1 bob alice2", got)
	}
}
