package main

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// tunnelplane forecast prints the chosen model, its backtest against the seasonal naive and
// every hour of the horizon with its intervals; --json gives the API's answer.
func TestForecastCommand(t *testing.T) {
	t.Parallel()
	env := startAdminEnv(t)
	cp := env.cp
	as := func(args ...string) result { return env.must(t, args...) }
	org := strings.Fields(as("admin", "orgs", "create", "acme", "--owner", "alice").stdout)[2]
	var tun struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(as("admin", "tunnels", "create", "llm", "--org", "acme", "--upstream", "http://127.0.0.1:11434", "--json").stdout), &tun); err != nil {
		t.Fatal(err)
	}
	const days = 21
	start := time.Now().UTC().Truncate(time.Hour).Add(-days * 24 * time.Hour)
	syn := forecast.Synthetic{Hours: days * 24, Base: 100, DailyAmp: 0.5, WeekendFactor: 0.7, Noise: 0.05, Seed: 11}.Generate()
	var evs []eventstore.EventData
	for h, v := range syn.Values {
		at := start.Add(time.Duration(h) * time.Hour)
		raw, _ := json.Marshal(domain.UsageRecorded{NodeID: "n", OrgID: org, TunnelID: tun.ID, CallerKind: domain.CallerAnonymous,
			WindowStart: at, WindowEnd: at.Add(10 * time.Second), Requests: int64(math.Round(v))})
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: raw})
	}
	if _, err := cp.Log.Store.Append(context.Background(), domain.NodeFactsStream(uuid.NewString()), eventstore.AnyVersion, evs...); err != nil {
		t.Fatal(err)
	}

	out := as("forecast", "--org", "acme", "--tunnel", "llm", "--horizon", "24h").stdout
	if !strings.Contains(out, "model ") || !strings.Contains(out, "backtest MASE") || strings.Count(out, "\n") < 24+3 {
		t.Fatalf("forecast:\n%s", out)
	}
	var f api.ForecastAnswer
	if err := json.Unmarshal([]byte(as("forecast", "--org", "acme", "--tunnel", "llm", "--horizon", "24h", "--json").stdout), &f); err != nil ||
		len(f.Forecast.Forecast.Points) != 24 || f.Windows != len(evs) {
		t.Fatalf("forecast --json: %v %+v", err, f)
	}
	bad := env.run(t, "forecast", "--org", "acme", "--tunnel", "llm", "--horizon", "1y")
	if bad.code == 0 || !strings.Contains(bad.stderr, "horizon") {
		t.Fatalf("a bad horizon: %d %s", bad.code, bad.stderr)
	}
}
