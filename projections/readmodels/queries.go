package readmodels

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// ErrBadFilter: a filter that cannot be run (no organization where one is required, an id that
// is not a UUID, an unknown state, no limit). Callers validate their input first; this is a
// mistake of the caller, not of its user.
var ErrBadFilter = errors.New("readmodels: bad filter")

// Queries reads the views. It is safe for concurrent use.
type Queries struct {
	pool *pgxpool.Pool
	// db runs the reads: the pool, or the transaction of a snapshot (ReadSnapshot).
	db interface {
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

// New reads the views through pool (the control plane's pool; the application role may SELECT
// the views).
func New(pool *pgxpool.Pool) *Queries { return &Queries{pool: pool, db: pool} }

// ReadSnapshot runs fn with Queries that read in one read-only repeatable-read transaction, so
// every figure fn reads comes from one state of the read models; position is the last log
// position the projection named had applied in that state (-1: none yet).
func (q *Queries) ReadSnapshot(ctx context.Context, projection string, fn func(ctx context.Context, snap *Queries, position int64) error) error {
	const op = "read snapshot"
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return dbErr(op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	position := int64(-1)
	err = tx.QueryRow(ctx, `SELECT position FROM projection_state WHERE name = $1`, projection).Scan(&position)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return dbErr(op, err)
	}
	return fn(ctx, &Queries{pool: q.pool, db: tx}, position)
}

// Ping reports whether the database answers. Its error is the driver's, as it is (readiness
// shows it to operators).
func (q *Queries) Ping(ctx context.Context) error { return q.pool.Ping(ctx) }

// where builds a SQL WHERE clause; each ? in a condition becomes the next $n.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	for _, a := range args {
		w.args = append(w.args, a)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(w.args)), 1)
	}
	w.conds = append(w.conds, cond)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limit appends LIMIT n.
func (w *where) limit(n int) string {
	w.args = append(w.args, n)
	return " LIMIT $" + strconv.Itoa(len(w.args))
}

// dbErr marks every failure of a read as the database's (retry later), except the caller's own
// cancellation.
func dbErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, eventstore.ErrUnavailable, err)
}

func selectRows[T any](ctx context.Context, q *Queries, op, sql string, args ...any) ([]T, error) {
	rows, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

// selectOne is the first row, or domain.ErrNotFound named after what.
func selectOne[T any](ctx context.Context, q *Queries, op, what, sql string, args ...any) (T, error) {
	rows, err := selectRows[T](ctx, q, op, sql, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	if len(rows) == 0 {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, domain.ErrNotFound)
	}
	return rows[0], nil
}

// checkLimit refuses a list without a bound.
func checkLimit(op string, n int) error {
	if n < 1 {
		return fmt.Errorf("%s: %w: limit %d, want at least 1", op, ErrBadFilter, n)
	}
	return nil
}

// checkID refuses an id filter that is not a UUID (the views' ids are; the cast would fail).
func checkID(op, name, id string) error {
	if !domain.ValidID(id) {
		return fmt.Errorf("%s: %w: %s %q is not an id", op, ErrBadFilter, name, id)
	}
	return nil
}

// checkState refuses a state the list does not know ("" means any).
func checkState(op, state string, known ...string) error {
	if state == "" {
		return nil
	}
	for _, k := range known {
		if state == k {
			return nil
		}
	}
	return fmt.Errorf("%s: %w: state %q, want one of %s", op, ErrBadFilter, state, strings.Join(known, ", "))
}
