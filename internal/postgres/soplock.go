package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/runops/runops/internal/jobs"
)

// lockSOP serialises every read-modify-write of one job's SOP document across
// processes (API edits and the worker's write): a transaction-scoped advisory
// lock, released at commit or when the connection dies.
const lockSOP = `SELECT pg_advisory_xact_lock(hashtextextended('runops-sop:' || $1, 0))`

// SOPLocker runs functions under a job's SOP lock.
type SOPLocker struct{ pool *pgxpool.Pool }

// NewSOPLocker returns a locker over pool.
func NewSOPLocker(pool *pgxpool.Pool) *SOPLocker { return &SOPLocker{pool: pool} }

// WithSOPLock runs fn while holding the lock of id's SOP.
func (l *SOPLocker) WithSOPLock(ctx context.Context, id jobs.ID, fn func(context.Context) error) error {
	var fnErr error
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSOP, string(id)); err != nil {
			return err
		}
		fnErr = fn(ctx)
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return wrap("lock sop", err)
}
