package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A short run measures both sides of every configuration, reads and verifies what it wrote.
func TestRunMeasuresEveryConfiguration(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the store benchmark briefly")
	}
	t.Parallel()
	var progress strings.Builder
	res, err := Run(context.Background(), Options{
		AdminURL: pgtest.Server(t).AdminURL, Duration: 100 * time.Millisecond, Rounds: 1,
		BatchSizes: []int{1, 8}, Writers: []int{2}, Progress: &progress,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if len(res.Configs) != 2 || res.Configs[0].Batch != 1 || res.Configs[1].Batch != 8 {
		t.Fatalf("configs %+v", res.Configs)
	}
	for _, c := range res.Configs {
		if !(c.RawEPS > 0) || !(c.AppendEPS > 0) || !(c.Ratio > 0) {
			t.Errorf("config %+v", c)
		}
	}
	if !(res.ReadEPS > 0) || !(res.VerifyEPS > 0) || res.LogEvents == 0 || res.MinRatio > res.Ratio || res.Rounds != 1 {
		t.Errorf("result %+v", res)
	}
	if n := strings.Count(progress.String(), "round 1:"); n != 2 {
		t.Errorf("%d progress lines for 2 configurations:\n%s", n, progress.String())
	}
}

// The scratch database exists until it is dropped, and only then.
func TestScratchDatabaseIsDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := pgtest.Server(t).AdminURL
	dbURL, drop, err := ScratchDatabase(ctx, admin, "tptest_scratch")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		drop()
		t.Fatalf("connect to the scratch database: %v", err)
	}
	var name string
	err = conn.QueryRow(ctx, "SELECT current_database()").Scan(&name)
	conn.Close(ctx)
	drop()
	if err != nil || !strings.HasPrefix(name, "tptest_scratch_") {
		t.Fatalf("current database %q: %v", name, err)
	}
	if c, err := pgx.Connect(ctx, dbURL); err == nil {
		c.Close(ctx)
		t.Fatalf("%s still accepts connections after drop", name)
	}
}
