package analytics

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// A short run folds every window it appended (Run checks the rollups' window count against
// them), times the queries, and prints forecast_ms_per_series only when a hook measured it.
func TestRunMeasuresRollupsAndQueries(t *testing.T) {
	ctx := context.Background()
	res, err := Run(ctx, Options{AdminURL: pgtest.Server(t).AdminURL, Windows: 600, WindowTunnels: 5, Days: 1, Tunnels: 10, Queries: 2,
		Forecast: func(_ context.Context, _ *pgxpool.Pool, _ string, tunnels []string) (float64, error) {
			return float64(len(tunnels)), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RollupEPS <= 0 || res.QueryP99MS <= 0 || res.QueryRows != 24*10+24 || len(res.Kinds) != 4 {
		t.Fatalf("result: %+v", res)
	}
	if res.ForecastMSPerSeries == nil || *res.ForecastMSPerSeries != 10 {
		t.Fatalf("the hook's measure: %v", res.ForecastMSPerSeries)
	}
	res.ForecastMSPerSeries = nil
	raw, _ := json.Marshal(res)
	if strings.Contains(string(raw), "forecast_ms_per_series") {
		t.Fatalf("a forecast key without a forecast: %s", raw)
	}
}
