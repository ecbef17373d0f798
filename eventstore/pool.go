package eventstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ConnectOptions tunes Connect.
type ConnectOptions struct {
	// Role is assumed with SET ROLE on every connection, so that even a superuser URL runs with
	// the app role's rights (INSERT and SELECT on the log). Default AppRole; "-" keeps the
	// login role (migrations and tests that tamper with the log need that).
	Role string
	// MaxConns caps the pool. Default: pgxpool's default.
	MaxConns int32
	// ApplicationName shows in pg_stat_activity. Default "tunnelplane".
	ApplicationName string
}

// Connect opens a pool to databaseURL whose connections run as the app role.
func Connect(ctx context.Context, databaseURL string, opts ConnectOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("connect: parse database url: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = "tunnelplane"
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	role := opts.Role
	if role == "" {
		role = AppRole
	}
	if role != "-" {
		cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
			if _, err := c.Exec(ctx, "SET ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
				return fmt.Errorf("set role %s (run `tunnelplane migrate up` to create it, and grant it to the login role): %w", role, err)
			}
			return nil
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", classify(err))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect: %w", classify(err))
	}
	return pool, nil
}
