package siem

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	apibench "github.com/tunnelplane/tunnelplane/bench/api"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/rsyslog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// startControlPlane is Options.Start as `tunnelplane bench siem` sets it: the control plane as
// `control` assembles it, the API on a loopback port.
func startControlPlane(ctx context.Context, databaseURL, dataDir string) (*apibench.System, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cp, err := controlapp.New(controlapp.Config{DatabaseURL: databaseURL, DataDir: dataDir, Listener: ln, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		ln.Close()
		return nil, err
	}
	if err := cp.Start(ctx); err != nil {
		cp.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return &apibench.System{URL: cp.URL, Service: cp.Service, Runner: cp.Runner, Store: cp.Log.Store, Pool: cp.Log.Pool, Stop: cp.Close}, nil
}

// A short run forwards the whole log in every round and measures both sides, then measures the
// lag of what the API writes at a steady rate meanwhile.
func TestRunMeasuresBothSidesAndTheLagUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs rsyslog, a control plane and a scratch log")
	}
	if _, err := rsyslog.New(t.TempDir()); errors.Is(err, rsyslog.ErrNotInstalled) {
		t.Skip(err)
	}
	var progress strings.Builder
	res, err := Run(context.Background(), Options{AdminURL: pgtest.Server(t).AdminURL, Start: startControlPlane, Records: 3000, Batch: 500, Rounds: 2,
		CommandRate: 50, LoadDuration: time.Second, LoadClients: 4, Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if res.Records < 3001 || !(res.SiemEPS > 0) || !(res.BaselineEPS > 0) || !(res.Ratio > 0) || strings.Count(progress.String(), "round ") != 2 {
		t.Fatalf("result %+v\n%s", res, progress.String())
	}
	// 50 commands, each a record or two, all forwarded, each after some time but not after the run.
	if res.Commands != 50 || res.CommandRate != 50 || !(res.CommandsPerS > 0) || res.LagRecords < res.Commands ||
		!(res.LagP50MS > 0) || res.LagP99MS < res.LagP50MS || res.LagP99MS > 60_000 || !strings.Contains(progress.String(), "lag: ") {
		t.Fatalf("lag phase %+v\n%s", res, progress.String())
	}
}

// The lag is read from the message itself: the RFC 5424 TIMESTAMP, which is the record's
// RecordedAt.
func TestSyslogTimestamp(t *testing.T) {
	t.Parallel()
	at, err := syslogTimestamp([]byte("<110>1 2026-12-02T06:00:01.123456Z bench tunnelplane - org [x] \xEF\xBB\xBF{}"))
	if err != nil || !at.Equal(time.Date(2026, 12, 2, 6, 0, 1, 123456000, time.UTC)) {
		t.Fatalf("%v %v", at, err)
	}
	for _, m := range []string{"", "<110>1 ", "<110>1 yesterday x", "no header at all"} {
		if _, err := syslogTimestamp([]byte(m)); err == nil {
			t.Errorf("%q: no error", m)
		}
	}
}
