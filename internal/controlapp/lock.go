package controlapp

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// advisoryLock is a PostgreSQL session advisory lock held on a connection of its own: whoever
// holds it is the one control plane instance that runs a component (SIEM forwarding, webhook
// delivery). Not safe for concurrent use: one goroutine polls it.
type advisoryLock struct {
	pool *pgxpool.Pool
	key  int64
	what string // in log lines: "siem", "webhooks"
	log  *slog.Logger
	conn *pgx.Conn
}

// hold reports whether this instance holds the lock, taking it when it is free. A connection
// that broke calls lost first (stop what the lock guarded: another instance may take over).
func (l *advisoryLock) hold(ctx context.Context, lost func()) bool {
	if l.conn != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.conn.Ping(pctx)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() == nil {
			l.log.Warn(l.what+": lost the lock's connection; stopping", "error", err)
		}
		lost()
		l.release()
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, l.pool.Config().ConnConfig.Copy())
	if err != nil {
		l.log.Warn(l.what+": cannot connect for the lock", "error", err)
		return false
	}
	var got bool
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock($1)`, l.key).Scan(&got); err != nil || !got {
		_ = conn.Close(context.WithoutCancel(ctx))
		return false
	}
	l.conn = conn
	l.log.Info(l.what + ": this instance holds the lock and runs it")
	return true
}

// release lets go of the lock (closing its connection).
func (l *advisoryLock) release() {
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = l.conn.Close(ctx)
		cancel()
		l.conn = nil
	}
}
