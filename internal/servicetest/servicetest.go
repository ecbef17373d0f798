// Package servicetest starts, for tests, a log with the command service on it: a fresh migrated
// database, a log key in a temporary data dir, the store, the projections runner with every read
// model, and commands.Service with its token key. It is for tests only and owns nothing else.
package servicetest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Env is a started log and service, stopped when the test ends.
type Env struct {
	URL     string
	Pool    *pgxpool.Pool
	Dir     string // the data dir: keys/log, keys/token
	Store   *eventstore.Store
	Runner  *projections.Runner
	Service *commands.Service
}

// Start starts the log, the runner and the service; now is the service's clock (nil: time.Now).
func Start(t testing.TB, now func() time.Time) *Env {
	t.Helper()
	ctx := context.Background()
	e := &Env{URL: pgtest.NewDatabase(t), Dir: t.TempDir()}
	e.Pool = pgtest.Pool(t, e.URL)
	logKeys := eventstore.KeyDir(e.Dir + "/keys/log")
	key, err := logKeys.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Init(ctx, e.Pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	reg, err := eventstore.NewRegistry(logtest.DomainTypes()...)
	if err != nil {
		t.Fatal(err)
	}
	if e.Store, err = eventstore.New(eventstore.Config{Pool: e.Pool, Key: key, KeySource: logKeys.Load, Registry: reg, PollInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := e.Store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Store.Stop)
	if e.Runner, err = projections.New(projections.Config{Store: e.Store, Projections: projections.All()}); err != nil {
		t.Fatal(err)
	}
	if err := e.Runner.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Runner.Stop)
	runner := e.Runner
	if e.Service, err = commands.New(commands.Config{Store: e.Store, Pool: e.Pool, LogKeys: logKeys, TokenKeys: eventstore.KeyDir(e.Dir + "/keys/token"), Now: now,
		RBACPosition: func() int64 { p, _ := runner.Position(projections.RoleAssignments); return p },
		WaitRBAC: func(ctx context.Context, pos uint64) error {
			return runner.WaitFor(ctx, pos, projections.RoleAssignments)
		}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	e.Service.Start(ctx)
	t.Cleanup(e.Service.Stop)
	return e
}
