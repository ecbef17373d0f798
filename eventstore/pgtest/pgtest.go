// Package pgtest gives each test its own freshly migrated PostgreSQL database and drops it when
// the test ends, so tests run in parallel against the real server and leave nothing behind.
//
// A migrated database is a copy (CREATE DATABASE … TEMPLATE) of a template database that holds
// the embedded migrations: copying takes a fraction of the time of running every migration. The
// template is named after a hash of the migration files (tptmpl_<hash>), built once per server
// and schema, and kept for later runs; processes that build it at the same time serialize on an
// advisory lock. Templates of other schemas are dropped once they are two hours old, as are test
// databases (tptest_*) left behind by killed runs.
//
// The server comes from TUNNELPLANE_TEST_DATABASE_URL when set; otherwise from internal/devdb (the local
// server at 127.0.0.1:5432, or a private cluster under <repo>/.tunnelplane/postgres).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/devdb"
)

// EnvURL names the variable that points tests at a server.
const EnvURL = "TUNNELPLANE_TEST_DATABASE_URL"

const dbPrefix = "tptest_"

var (
	serverOnce sync.Once
	server     *devdb.Server
	serverErr  error
)

// Server returns the PostgreSQL server the tests use, resolving it once per process.
func Server(t testing.TB) *devdb.Server {
	t.Helper()
	serverOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		server, serverErr = devdb.Resolve(ctx, devdb.Config{
			URL:      os.Getenv(EnvURL),
			Dir:      filepath.Join(RepoRoot(), ".tunnelplane", "postgres"),
			Database: "postgres",
			Private:  devdb.PrivateStart, CreateDatabase: true,
		})
		if serverErr == nil {
			sweep(ctx, server.AdminURL)
		}
	})
	if serverErr != nil {
		t.Fatalf("pgtest: no PostgreSQL for tests: %v", serverErr)
	}
	return server
}

// RepoRoot is the directory holding go.mod (tests run in package directories).
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// NewEmptyDatabase creates an empty database for the test and returns its URL (as the server's
// login role). It is dropped when the test ends.
func NewEmptyDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, false)
}

// NewDatabase creates a migrated database for the test and returns its URL. It is dropped when
// the test ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return newDatabase(t, true)
}

// newDatabase creates a database for the test, a copy of the migrated template when migrated is
// set, and drops it when the test ends.
func newDatabase(t testing.TB, migrated bool) string {
	t.Helper()
	srv := Server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var tmpl string
	if migrated {
		var err error
		if tmpl, err = templates.get(ctx, srv.AdminURL); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	name := newName()
	admin, err := pgx.Connect(ctx, srv.AdminURL)
	if err != nil {
		t.Fatalf("pgtest: connect admin: %v", err)
	}
	defer admin.Close(ctx)
	err = createDatabase(ctx, admin, name, tmpl)
	if tmpl != "" && isMissingDatabase(err) {
		// Another process swept the template (it had other migrations): build it again.
		templates.forget(srv.AdminURL)
		if tmpl, err = templates.get(ctx, srv.AdminURL); err == nil {
			err = createDatabase(ctx, admin, name, tmpl)
		}
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, srv.AdminURL)
		if err != nil {
			t.Errorf("pgtest: connect admin for cleanup: %v", err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(t, srv.AdminURL, name)
}

// Pool opens a pool to u running as the app role; it is closed when the test ends.
func Pool(t testing.TB, u string) *pgxpool.Pool {
	t.Helper()
	return pool(t, u, eventstore.AppRole)
}

// SuperPool opens a pool as the login role (a superuser here), for tests that play an attacker.
func SuperPool(t testing.TB, u string) *pgxpool.Pool {
	t.Helper()
	return pool(t, u, "-")
}

func pool(t testing.TB, u, role string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := eventstore.Connect(ctx, u, eventstore.ConnectOptions{Role: role, MaxConns: 8})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func withDatabase(t testing.TB, raw, name string) string {
	t.Helper()
	u, err := databaseURL(raw, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

func databaseURL(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", raw, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// newName names a test database: the prefix, the creation time (for sweep) and a random part.
func newName() string {
	return dbPrefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomSuffix()
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sweep drops test databases left by killed test runs, and templates of other schemas, once they
// are two hours old.
func sweep(ctx context.Context, adminURL string) {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'tptest\_%'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	cutoff := time.Now().Add(-2 * time.Hour).Unix()
	for _, n := range names {
		parts := strings.SplitN(strings.TrimPrefix(n, dbPrefix), "_", 2)
		ts, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil || ts >= cutoff {
			continue
		}
		dropDatabase(ctx, admin, n)
	}
	if current, err := templateName(); err == nil {
		sweepTemplates(ctx, admin, current, cutoff)
	}
}

// Exec runs sql on u as the login role; a failure fails the test.
func Exec(t testing.TB, u, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// Describe returns a short description of the server for logs.
func Describe(s *devdb.Server) string { return fmt.Sprintf("%s (%s)", s.AdminURL, s.Source) }
