package sessions

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A short run closes every session of before the restart, lists every agent back (Run checks
// both against the read model) and times each report.
func TestRunFollowsEverySession(t *testing.T) {
	res, err := Run(context.Background(), Options{AdminURL: pgtest.Server(t).AdminURL, Agents: 300, Over: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Round{res.Baseline, res.Round} {
		if !r.ClosedBefore || r.Publications < 2 || r.LagP50MS <= 0 || r.LagMaxMS < r.LagP99MS || r.PeakPerS < r.ArrivalPerS/2 {
			t.Fatalf("round: %+v", r)
		}
	}
	// The linger makes fewer, larger publications.
	if res.Agents != 300 || res.LingerMS == 0 || res.Baseline.LingerMS != 0 || res.Publications >= res.Baseline.Publications {
		t.Fatalf("result: %+v", res)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {AdminURL: "x", Agents: -1}, {AdminURL: "x", Over: -time.Second}, {AdminURL: "x", KeptUpLag: -1}} {
		if o.Validate() == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

func TestPeak(t *testing.T) {
	ms := time.Millisecond
	if got := peak([]time.Duration{0, 10 * ms, 20 * ms, 500 * ms, 950 * ms}, 100*ms); got != 30 {
		t.Fatalf("peak %v, want 30/s", got)
	}
}
