package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

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
//
// A holder uses one connection, the lock's: a tag it must forget before
// it stores (RecordSOP, RecordFrames, StoreTagged) is forgotten with the
// lock let go, where readers see it at once, and the lock taken again
// (forgetFirst). Holding the lock while it waited for a second connection,
// as many holders as a transaction pooler has server connections would
// each wait for ever, and every process behind that pooler with them.
type SOPLocker struct {
	pool *pgxpool.Pool
	// slots bound the holders of a lock at once to half the pool, which
	// each holds a connection of for as long as its storage calls take:
	// the run's heartbeats and the API's reads keep the other half.
	slots chan struct{}
	// Log hears of a tag that could not be recorded (nil: slog.Default).
	Logger *slog.Logger
}

// NewSOPLocker returns a locker over pool.
func NewSOPLocker(pool *pgxpool.Pool) *SOPLocker {
	return &SOPLocker{pool: pool, slots: make(chan struct{}, max(1, pool.Config().MaxConns/2))}
}

// ForgetSOP forgets the tag of id's SOP at once, holding no lock: an edit
// that will store the SOP asks it before it takes the lock, so that its
// store need not let the lock go to forget the tag (forgetFirst), and the
// edit's reads run once — unless it deletes a step whose screenshot's tag
// is recorded, which the store forgets so. A tag forgotten costs readers a
// read of storage until the next store (an edit refused too), never a
// wrong answer.
func (l *SOPLocker) ForgetSOP(ctx context.Context, id jobs.ID) error {
	_, err := l.pool.Exec(ctx, forgetSOP, string(id))
	return wrap("forget SOP tag", err)
}

// forgetSOP forgets a job's SOP tag alone (the screenshots' stay).
const forgetSOP = `UPDATE public.runops_stored_tags SET sop = NULL, recorded_at = now() WHERE job_id = $1 AND sop IS NOT NULL`

// WithSOPLock runs fn while holding the lock of id's SOP.
func (l *SOPLocker) WithSOPLock(ctx context.Context, id jobs.ID, fn func(context.Context) error) error {
	return l.withLock(ctx, id, "", fn)
}

// WithSOPLockWhileHolding runs fn while holding the lock of id's SOP and while the claim
// with lease token holds the job, so that a worker that lost the job can
// never write the SOP over a newer run's or a person's edit. It returns,
// without calling fn, queue.ErrCancelled when a person's edit took the job
// (status changed, row deleted) and queue.ErrLost otherwise (the lease
// expired or rescued), as queue.LossCause tells them.
func (l *SOPLocker) WithSOPLockWhileHolding(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error {
	return l.withLock(ctx, id, token, fn)
}

// forgetTries bounds how often a holder lets the lock go to forget a tag
// that another writer recorded again meanwhile.
const forgetTries = 5

// withLock runs fn under the lock (lockOnce), again after forgetting what
// fn asked to be forgotten first.
func (l *SOPLocker) withLock(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error {
	for try := 1; ; try++ {
		err := l.lockOnce(ctx, id, token, fn)
		var first *forgetFirst
		if !errors.As(err, &first) {
			return err
		}
		if try == forgetTries {
			return wrap("lock sop", fmt.Errorf("%w: %w: its tags were recorded again after each of %d forgets", jobs.ErrBusy, jobs.ErrUnavailable, try-1))
		}
		if _, err := l.pool.Exec(ctx, first.sql, first.args...); err != nil {
			return wrap(first.op, err)
		}
	}
}

// forgetFirst is what a holder returns, before it writes anything, when a
// tag it is about to replace is still recorded: withLock lets the lock go,
// runs sql, and runs the holder again. Once forgotten with the lock let go,
// a tag stays so while the lock is held again (only a holder records one),
// so that a holder whose transaction dies after its storage write leaves
// no tag of what it replaced.
type forgetFirst struct {
	op, sql string
	args    []any
}

func (f *forgetFirst) Error() string { return f.op + ": to be done with the SOP lock let go" }

func (l *SOPLocker) lockOnce(ctx context.Context, id jobs.ID, token string, fn func(context.Context) error) error {
	if err := l.waitTurn(ctx); err != nil {
		return wrap("lock sop", err)
	}
	defer func() { <-l.slots }()
	var fnErr error
	ran := false
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
		ran = true
		fnErr = fn(context.WithValue(ctx, lockTxKey{}, tx))
		return nil
	})
	if err != nil && ran {
		l.forgetAfterFailure(ctx, id, err)
	}
	if fnErr != nil {
		return fnErr
	}
	return wrap("lock sop", err)
}

// forgetAfterFailure forgets id's tags once a holder's transaction failed
// after it ran (its connection died, its commit failed): what it stored
// may land after a writer that took the lock meanwhile recorded its own
// tag, and that tag would then name what is no longer stored. Under the
// lock, taken again: a writer still holding it records its tag first, and
// one after it stores after what this holder stored has landed. Forgotten,
// readers read storage.
func (l *SOPLocker) forgetAfterFailure(ctx context.Context, id jobs.ID, cause error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := pgx.BeginFunc(fctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(fctx, lockSOP, string(id)); err != nil {
			return err
		}
		_, err := tx.Exec(fctx, recordSOP, string(id), "", []string{}) // every tag: no SOP, no step shown
		return err
	})
	if err != nil {
		cmp.Or(l.Logger, slog.Default()).WarnContext(ctx, "the SOP lock's connection ended and the job's tags could not be forgotten: revalidations may answer 304 for an earlier SOP until the next write",
			"job_id", id, "lock_error", cause, "error", err)
	}
}

// lockTxKey carries, in the context withLock gives fn, the transaction that
// holds the lock.
type lockTxKey struct{}

// lockTx is the lock's transaction ctx carries, or nil outside the lock: a
// holder's statements run in it, never on a second connection.
func lockTx(ctx context.Context) pgx.Tx {
	tx, _ := ctx.Value(lockTxKey{}).(pgx.Tx)
	return tx
}

// recordTags writes tags that name what is stored (never a forget) in the
// lock's transaction, in a savepoint of their own: they commit only if the
// lock was held to the end — a writer whose lock connection died while it
// stored, and which another writer may have followed, records nothing —
// and a record that fails leaves the transaction usable. Without a lock's
// transaction in ctx, on the pool.
func (l *SOPLocker) recordTags(ctx context.Context, sql string, args ...any) error {
	tx := lockTx(ctx)
	if tx == nil {
		_, err := l.pool.Exec(ctx, sql, args...)
		return err
	}
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		_, err := sp.Exec(ctx, sql, args...)
		return err
	})
}

// forget makes what sql writes (a tag forgotten) true before the holder
// stores: under the lock, when forgotten — a query of the lock's
// transaction, with args — says it is already; else it asks withLock to
// forget it with the lock let go (forgetFirst). Without a lock's
// transaction in ctx, on the pool.
func (l *SOPLocker) forget(ctx context.Context, op, forgotten string, args []any, sql string, sqlArgs ...any) error {
	tx := lockTx(ctx)
	if tx == nil {
		_, err := l.pool.Exec(ctx, sql, sqlArgs...)
		return wrap(op, err)
	}
	var done bool
	if err := tx.QueryRow(ctx, forgotten, args...).Scan(&done); err != nil {
		return wrap(op, err)
	}
	if !done {
		return &forgetFirst{op: op, sql: sql, args: sqlArgs}
	}
	return nil
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

// Whether the tags recordSOP and recordFrames would forget are forgotten:
// the SOP's, and those of the screenshots of steps not shown ($2); the
// screenshots' named ($2). No row: nothing is recorded.
const (
	sopForgotten = `SELECT coalesce((SELECT t.sop IS NULL AND NOT EXISTS (SELECT 1 FROM jsonb_object_keys(t.frames) k WHERE k <> ALL ($2))
  FROM public.runops_stored_tags t WHERE t.job_id = $1), true)`
	framesForgotten = `SELECT coalesce((SELECT NOT t.frames ?| $2 FROM public.runops_stored_tags t WHERE t.job_id = $1), true)`
)

// RecordFrames sets the entity tags of id's step screenshots (node →
// ETag; "" forgets one), under the SOP lock: forgotten before a
// screenshot is stored, where readers see it at once (forget: with the
// lock let go, forgetFirst, when one is still recorded), and recorded once
// it is and the SOP that shows it is, with the lock (recordTags;
// …_stored_tags.sql says why). The holder returns its error as it is:
// WithSOPLock runs the holder again after forgetFirst.
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
		names := make([]string, 0, len(forget))
		for node := range forget {
			names = append(names, node)
		}
		if err := l.forget(ctx, "forget screenshot tags", framesForgotten, []any{string(id), names}, recordFrames, string(id), forget); err != nil {
			return err
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
	if tag == "" {
		return l.forget(ctx, "forget SOP tag", sopForgotten, []any{string(id), shown}, recordSOP, string(id), tag, shown)
	}
	return wrap("record SOP tag", l.recordTags(ctx, recordSOP, string(id), tag, shown))
}
