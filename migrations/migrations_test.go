package migrations_test

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/migrations"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// Several instances starting at once apply each migration exactly once.
func TestConcurrentUpIsSafe(t *testing.T) {
	t.Parallel()
	u := pgtest.NewEmptyDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrations.Up(ctx, u)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	st, err := migrations.Version(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	latest, _ := migrations.Latest()
	if st.Version != latest || st.Dirty || latest == 0 {
		t.Fatalf("status %+v, want version %d clean", st, latest)
	}
}

// Down refuses to drop a non-empty log unless told to, and up again restores the schema.
func TestDownProtectsTheLog(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := pgtest.Pool(t, u)
	key, _ := eventstore.GenerateSigningKey()
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	pool.Close()
	// Down counts steps, one per migration: versions need not be contiguous (parallel branches
	// are given numbers ahead).
	ups, err := fs.Glob(migrations.FS, "sql/*.up.sql")
	if err != nil {
		t.Fatal(err)
	}
	latest := len(ups)
	if err := migrations.Down(ctx, u, latest, false); !errors.Is(err, migrations.ErrLogNotEmpty) {
		t.Fatalf("down on a non-empty log: err = %v, want ErrLogNotEmpty", err)
	}
	if err := migrations.Down(ctx, u, latest, true); err != nil {
		t.Fatalf("down --destroy-log: %v", err)
	}
	if st, _ := migrations.Version(ctx, u); st.Version != 0 {
		t.Fatalf("version after down = %d", st.Version)
	}
	if err := migrations.Up(ctx, u); err != nil {
		t.Fatalf("up after down: %v", err)
	}
	if err := migrations.Down(ctx, u, 0, false); err == nil {
		t.Fatal("down 0 steps accepted")
	}
}
