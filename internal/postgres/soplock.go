package postgres

import (
	"cmp"
	"context"
	"errors"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/queue"
)

// lockSOP serialises every read-modify-write of one job's SOP document across
// processes (API edits and the worker's write): a transaction-scoped advisory
// lock, released at commit or when the connection dies.
const lockSOP = `SELECT pg_advisory_xact_lock(hashtextextended('runops-sop:' || $1, 0))`

// sopLockWait bounds the wait for the SOP lock: a caller that cannot have it
// by then hears jobs.ErrBusy rather than holding a connection for as long as
// the holder takes.
const sopLockWait = `SET LOCAL lock_timeout = '5s'`

// SOPLocker runs functions under a job's SOP lock.
type SOPLocker struct {
	pool *pgxpool.Pool
	// slots bound the holders of a lock at once to half the pool: each
	// holds a connection for the lock's transaction and, to forget tags
	// (RecordSOP, RecordFrames, StoreTagged) where readers see it at once,
	// needs another at the same time. With every connection held by a lock, every holder would wait
	// for a second one until its deadline.
	slots chan struct{}
	// Log hears of a tag that could not be recorded (nil: slog.Default).
	Logger *slog.Logger
}

// NewSOPLocker returns a locker over pool.
func NewSOPLocker(pool *pgxpool.Pool) *SOPLocker {
	return &SOPLocker{pool: pool, slots: make(chan struct{}, max(1, pool.Config().MaxConns/2))}
}

// WithSOPLock runs fn while holding the lock of id's SOP.
func (l *SOPLocker) WithSOPLock(ctx context.Context, id jobs.ID, fn func(context.Context) error) error {
	return l.withLock(ctx, id, "", fn)
}

// WithSOPLease runs fn while holding the lock of id's SOP and while the claim
// with lease token holds the job, so that a worker that lost its lease can
// never write the SOP over a newer run's or a person's edit. It returns,
// without calling fn, queue.ErrCancelled when a person's edit took the job
// (status changed, row deleted) and queue.ErrLost otherwise (the lease
// expired or rescued), as queue.LossCause tells them.
func (l *SOPLocker) WithSOPLease(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error {
	return l.withLock(ctx, id, token, fn)
}

func (l *SOPLocker) withLock(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error {
	if err := l.waitTurn(ctx); err != nil {
		return wrap("lock sop", err)
	}
	defer func() { <-l.slots }()
	var fnErr error
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sopLockWait); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, lockSOP, string(id)); err != nil {
			return err
		}
		if token != "" {
			tag, err := tx.Exec(ctx, lockHeldJob, string(id), token)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				fnErr = readLossCauseInTx(ctx, tx, id)
				return nil
			}
		}
		fnErr = fn(context.WithValue(ctx, lockTxKey{}, tx))
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return wrap("lock sop", err)
}

// lockTxKey carries, in the context withLock gives fn, the transaction that
// holds the lock.
type lockTxKey struct{}

// recordTags writes tags that name what is stored (never a forget) in the
// lock's transaction, in a savepoint of their own: they commit only if the
// lock was held to the end — a writer whose lock connection died while it
// stored, and which another writer may have followed, records nothing —
// and a record that fails leaves the transaction usable. Without a lock's
// transaction in ctx, on the pool.
func (l *SOPLocker) recordTags(ctx context.Context, sql string, args ...any) error {
	tx, _ := ctx.Value(lockTxKey{}).(pgx.Tx)
	if tx == nil {
		_, err := l.pool.Exec(ctx, sql, args...)
		return err
	}
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, sql, args...)
		return err
	})
}

// waitTurn takes one of the slots (SOPLocker.slots).
func (l *SOPLocker) waitTurn(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// selectStatus reads a job's status (QueueStore.Status, readLossCauseInTx).
const selectStatus = `SELECT status FROM public.jobs WHERE job_id = $1`

// readLossCauseInTx reads the job's status in the lock's transaction and
// tells why the claim no longer holds the job (queue.LossCause);
// queue.ErrLost when the row cannot be read.
func readLossCauseInTx(ctx context.Context, tx pgx.Tx, id jobs.ID) error {
	var status string
	err := tx.QueryRow(ctx, selectStatus, string(id)).Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return queue.LossCause("", false)
	case err != nil:
		return queue.ErrLost
	}
	return queue.LossCause(jobs.Status(status), true)
}

// recordFrames sets the tags of step screenshots ($2: {"<nodeId>":
// "<ETag>"}, "" forgets a node's).
const recordFrames = `INSERT INTO public.runops_stored_tags AS t (job_id, frames)
VALUES ($1, (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') FROM jsonb_each($2::jsonb) e WHERE e.value <> '""'))
ON CONFLICT (job_id) DO UPDATE SET recorded_at = now(),
  frames = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') FROM jsonb_each(t.frames || $2::jsonb) e WHERE e.value <> '""')`

// recordSOP sets the tag of the SOP ($2, "" forgets it) and keeps the
// screenshots' tags of the steps it names ($3) only.
const recordSOP = `INSERT INTO public.runops_stored_tags AS t (job_id, sop) VALUES ($1, nullif($2, ''))
ON CONFLICT (job_id) DO UPDATE SET sop = excluded.sop, recorded_at = now(),
  frames = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}') FROM jsonb_each(t.frames) e WHERE e.key = ANY ($3))`

// RecordFrames sets the entity tags of id's step screenshots (node →
// ETag; "" forgets one), under the SOP lock: forgotten before a
// screenshot is stored — at once, on a connection of their own, so that no
// reader meets the old tag meanwhile — and recorded once it is and the SOP
// that shows it is, with the lock (recordTags; …_stored_tags.sql says why).
func (l *SOPLocker) RecordFrames(ctx context.Context, id jobs.ID, tags map[string]string) error {
	forget, record := map[string]string{}, map[string]string{}
	for node, tag := range tags {
		if tag == "" {
			forget[node] = ""
		} else {
			record[node] = tag
		}
	}
	if len(forget) > 0 {
		if _, err := l.pool.Exec(ctx, recordFrames, string(id), forget); err != nil {
			return wrap("forget screenshot tags", err)
		}
	}
	if len(record) > 0 {
		return wrap("record screenshot tags", l.recordTags(ctx, recordFrames, string(id), record))
	}
	return nil
}

// StoreTagged stores id's SOP, the bytes served, with store and keeps its
// recorded tag true, under the SOP lock: the tag is forgotten first and
// recorded as served's (jobs.ETag, which it returns) once store has
// succeeded, so a recorded tag is always that of the stored SOP
// (…_stored_tags.sql); of the screenshots' tags, those of the steps shown
// stay, and frames (node → tag, stored before the SOP) are recorded with
// it. Once the SOP is stored, a tag that cannot be recorded costs nothing
// but revalidations reading storage: it is logged, and the store is a
// success.
func (l *SOPLocker) StoreTagged(ctx context.Context, id jobs.ID, served []byte, shown []string, frames map[string]string, store func() error) (string, error) {
	if err := l.RecordSOP(ctx, id, "", shown); err != nil {
		return "", err
	}
	if err := store(); err != nil {
		return "", err
	}
	tag := jobs.ETag(served)
	err := l.RecordSOP(ctx, id, tag, shown)
	if err == nil && len(frames) > 0 {
		err = l.RecordFrames(ctx, id, frames)
	}
	if err != nil {
		cmp.Or(l.Logger, slog.Default()).WarnContext(ctx, "SOP stored; its tags not recorded, so revalidations read storage",
			"job_id", id, "error", err)
	}
	return tag, nil
}

// RecordSOP sets the entity tag of id's SOP as it is served ("" forgets
// it: before the SOP is stored; the tag once it is), under the SOP lock;
// of the screenshots' tags, only those of the steps shown, which the SOP
// names, stay.
func (l *SOPLocker) RecordSOP(ctx context.Context, id jobs.ID, tag string, shown []string) error {
	if shown == nil {
		shown = []string{}
	}
	if tag == "" { // at once, on a connection of its own (RecordFrames)
		_, err := l.pool.Exec(ctx, recordSOP, string(id), tag, shown)
		return wrap("forget SOP tag", err)
	}
	return wrap("record SOP tag", l.recordTags(ctx, recordSOP, string(id), tag, shown))
}
