// Package migrations owns the database schema: versioned SQL files embedded in the binary and
// applied with golang-migrate. Every change to a table is a new numbered file here; nothing else
// creates or alters tables.
//
// Up, Down and Version take golang-migrate's advisory lock on the target database, so several
// instances starting at once apply each migration exactly once.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed sql/*.sql
var files embed.FS

// FS is the embedded migration files (for tests and tools that list them).
var FS = files

// ErrDirty means an earlier migration failed half-way; an operator must repair and force the version.
var ErrDirty = errors.New("schema is dirty: a previous migration failed part-way")

// ErrLogNotEmpty guards against destroying a non-empty event log with a down migration.
var ErrLogNotEmpty = errors.New("the event log is not empty")

// Status is the schema version of a database.
type Status struct {
	Version uint // 0 when no migration has been applied
	Dirty   bool
	Latest  uint // newest version this binary carries
}

func open(ctx context.Context, databaseURL string) (*migrate.Migrate, *sql.DB, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("migrations: parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: connect: %w", err)
	}
	driver, err := pgxmigrate.WithInstance(db, &pgxmigrate.Config{})
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: driver: %w", err)
	}
	src, err := iofs.New(files, "sql")
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: source: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migrations: %w", err)
	}
	return m, db, nil
}

func closeAll(m *migrate.Migrate, db *sql.DB) {
	m.Close()
	db.Close()
}

// Latest is the newest migration version embedded in this binary.
func Latest() (uint, error) {
	src, err := iofs.New(files, "sql")
	if err != nil {
		return 0, fmt.Errorf("migrations: source: %w", err)
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, fmt.Errorf("migrations: first: %w", err)
	}
	for {
		next, err := src.Next(v)
		if err != nil {
			return v, nil //nolint:nilerr // os.ErrNotExist marks the last version
		}
		v = next
	}
}

// Up applies every pending migration.
func Up(ctx context.Context, databaseURL string) error {
	m, db, err := open(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer closeAll(m, db)
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		var dirty migrate.ErrDirty
		if errors.As(err, &dirty) {
			return fmt.Errorf("migrations: up: %w (version %d)", ErrDirty, dirty.Version)
		}
		return fmt.Errorf("migrations: up: %w", err)
	}
	return nil
}

// Down reverts steps migrations. Reverting the event log's migration on a non-empty log needs
// destroyLog, because it deletes every record.
func Down(ctx context.Context, databaseURL string, steps int, destroyLog bool) error {
	if steps < 1 {
		return fmt.Errorf("migrations: down: steps must be at least 1, got %d", steps)
	}
	m, db, err := open(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer closeAll(m, db)
	v, _, err := m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("migrations: down: %w", err)
	}
	// Steps count migrations, not version numbers (versions may skip numbers): the log goes when
	// steps reach every migration applied up to v.
	applied, err := appliedUpTo(v)
	if err != nil {
		return err
	}
	if applied <= steps && !destroyLog {
		var n int64
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1) e`).Scan(&n)
		if err == nil && n > 0 {
			return fmt.Errorf("migrations: down: %w: reverting to version %d would delete every record; pass --destroy-log to do it anyway",
				ErrLogNotEmpty, int(v)-steps)
		}
	}
	if err := m.Steps(-steps); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("migrations: down: %w", err)
	}
	return nil
}

// appliedUpTo counts the embedded migrations of versions up to v.
func appliedUpTo(v uint) (int, error) {
	src, err := iofs.New(files, "sql")
	if err != nil {
		return 0, fmt.Errorf("migrations: source: %w", err)
	}
	defer src.Close()
	n := 0
	for cur, err := src.First(); err == nil && cur <= v; cur, err = src.Next(cur) {
		n++
	}
	return n, nil
}

// Version reports the schema version of the database.
func Version(ctx context.Context, databaseURL string) (Status, error) {
	latest, err := Latest()
	if err != nil {
		return Status{}, err
	}
	m, db, err := open(ctx, databaseURL)
	if err != nil {
		return Status{}, err
	}
	defer closeAll(m, db)
	v, dirty, err := m.Version()
	if errors.Is(err, migrate.ErrNilVersion) {
		return Status{Latest: latest}, nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("migrations: version: %w", err)
	}
	return Status{Version: v, Dirty: dirty, Latest: latest}, nil
}
