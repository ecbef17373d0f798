package controlapp

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// advisoryLock is a PostgreSQL session advisory lock held on a connection of its own: the
// instance holding it leads (forwards to SIEM sinks, makes scheduled reports). A lock whose
// connection broke is lost: the leader stops what it led before it tries to take it again.
type advisoryLock struct {
	key  int64
	pool *pgxpool.Pool
	conn *pgx.Conn
}

func (l *advisoryLock) holding() bool { return l.conn != nil }

// ping checks the held lock's connection.
func (l *advisoryLock) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return l.conn.Ping(pctx)
}

// take tries to take the lock: true when this instance now holds it. An error is a failure to
// connect; a lock another instance holds is false.
func (l *advisoryLock) take(ctx context.Context) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, l.pool.Config().ConnConfig.Copy())
	if err != nil {
		return false, err
	}
	var got bool
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&got); err != nil || !got {
		_ = conn.Close(context.WithoutCancel(ctx))
		return false, nil
	}
	l.conn = conn
	return true, nil
}

// close lets go of the lock (closing its connection ends the session that holds it).
func (l *advisoryLock) close() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = l.conn.Close(ctx)
	cancel()
	l.conn = nil
}
