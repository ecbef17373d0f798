package siem

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/rsyslog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A short run forwards the whole log in every round and measures both sides.
func TestRunMeasuresBothSides(t *testing.T) {
	if testing.Short() {
		t.Skip("runs rsyslog and a scratch log")
	}
	if _, err := rsyslog.New(t.TempDir()); errors.Is(err, rsyslog.ErrNotInstalled) {
		t.Skip(err)
	}
	var progress strings.Builder
	res, err := Run(context.Background(), Options{AdminURL: pgtest.Server(t).AdminURL, Records: 3000, Batch: 500, Rounds: 2, Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.Records != 3001 || !(res.SiemEPS > 0) || !(res.BaselineEPS > 0) || !(res.Ratio > 0) || strings.Count(progress.String(), "round ") != 2 {
		t.Fatalf("result %+v\n%s", res, progress.String())
	}
}
