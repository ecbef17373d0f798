package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// A forecast is made from the log's usage windows of the tunnel: the horizon's points with their
// intervals, the model and its backtest, the log position read; with a threshold, when it is
// expected to be crossed, in words. Only the organization's readers may ask.
func TestForecastFromTheLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	e.createOrg(root, "other", "mallory")
	alice, mallory := e.token("alice"), e.token("mallory")
	tun := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:11434"})

	const days = 21
	start := time.Now().UTC().Truncate(time.Hour).Add(-days * 24 * time.Hour)
	syn := forecast.Synthetic{Hours: days * 24, Base: 300, TrendPerWeek: 0.2, DailyAmp: 0.7, WeekendFactor: 0.6, Noise: 0.05, Seed: 3}.Generate()
	var evs []eventstore.EventData
	for h, v := range syn.Values {
		at := start.Add(time.Duration(h) * time.Hour)
		p, _ := json.Marshal(domain.UsageRecorded{NodeID: "n1", OrgID: org, TunnelID: tun.ID, CallerKind: domain.CallerUser, CallerID: "alice",
			WindowStart: at, WindowEnd: at.Add(10 * time.Second), Requests: int64(math.Round(v))})
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: p})
	}
	if _, err := e.store.Append(context.Background(), domain.NodeFactsStream("n1"), eventstore.AnyVersion, evs...); err != nil {
		t.Fatal(err)
	}

	path := fmt.Sprintf("/api/v1/analytics/forecast?org=acme&tunnel=%s&horizon=24h", tun.ID)
	var f api.ForecastAnswer
	e.must(200, "GET", path, alice, nil).decode(t, &f)
	if f.Windows != len(evs) || f.Position == 0 || f.Forecast.Forecast.Model == "" || len(f.Forecast.Forecast.Points) != 24 || f.Warning != "" {
		t.Fatalf("%+v", f)
	}
	peak := 0.0
	for _, p := range f.Forecast.Forecast.Points {
		peak = max(peak, p.Value)
	}
	var warned api.ForecastAnswer
	e.must(200, "GET", fmt.Sprintf("%s&threshold=%g", path, peak/2), alice, nil).decode(t, &warned)
	if warned.Capacity == nil || !warned.Capacity.Found || !strings.Contains(warned.Warning, "is forecast to exceed") {
		t.Fatalf("a threshold half the peak: %+v %q", warned.Capacity, warned.Warning)
	}

	e.must(403, "GET", path, mallory, nil)
	e.must(400, "GET", path+"&metric=latency", alice, nil)
	e.must(400, "GET", strings.Replace(path, "24h", "90m", 1), alice, nil)
	e.must(400, "GET", path+"&as_of=yesterday", alice, nil)
	if p := e.must(422, "GET", path+"&history=240h", alice, nil).problem(t); !strings.Contains(p.Detail, "not enough usage history") {
		t.Fatalf("ten days of history: %+v", p)
	}
}
