package replay_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/analytics/replay"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
)

// A forecast made from the log can be made again exactly: asked later "as of" the time it was
// made, the replay reads what the log held then and gives the same forecast, byte for byte; and
// the position and model it names reproduce its points without refitting.
func TestAForecastAsOfThenEqualsTheForecastMadeThen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := logtest.Start(t, 20*time.Millisecond)
	now := time.Now().UTC()
	const days = 21
	start := now.Truncate(time.Hour).Add(-days * 24 * time.Hour)
	syn := forecast.Synthetic{Hours: days * 24, Base: 200, TrendPerWeek: 0.1, DailyAmp: 0.6, WeekendFactor: 0.5, Noise: 0.05, Seed: 7}.Generate()
	var ws []domain.UsageRecorded
	for h, v := range syn.Values {
		ws = append(ws, window("o1", "t1", start.Add(time.Duration(h)*time.Hour), int64(math.Round(v)), 0, 0, 0))
	}
	appendWindows(t, l.Store, ws)
	req := replay.Request{OrgID: "o1", TunnelID: "t1", Metric: replay.Requests}
	then, err := replay.MakeForecast(ctx, l.Store, req, 24, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	madeAt := time.Now()
	if then.Windows != len(ws) || then.Forecast.Horizon != 24 || len(then.Forecast.Points) != 24 || then.Forecast.Model == "" {
		t.Fatalf("%+v", then)
	}
	for !time.Now().After(madeAt) {
	}
	// Later usage, some of it for the very hours forecast.
	appendWindows(t, l.Store, []domain.UsageRecorded{window("o1", "t1", now.Truncate(time.Hour).Add(-time.Hour), 99999, 0, 0, 0),
		window("o1", "t1", now, 5, 0, 0, 0)})

	req.AsOf = madeAt
	again, err := replay.MakeForecast(ctx, l.Store, req, 24, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(then)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Fatalf("as of the time it was made, the forecast differs:\n%s\n%s", a, b)
	}
	// From what it names: the position read, the model and its parameters.
	pos := then.Position
	s, err := replay.Hourly(ctx, l.Store, replay.Request{OrgID: "o1", TunnelID: "t1", Metric: replay.Requests, AsOf: time.Now(), UpTo: &pos,
		History: time.Since(then.Forecast.SeriesStart).Truncate(time.Hour) + time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	first := int(then.Forecast.SeriesStart.Sub(s.Start) / time.Hour)
	series, err := forecast.NewSeries(then.Forecast.SeriesStart, s.Values[first:first+then.Forecast.SeriesHours])
	if err != nil {
		t.Fatal(err)
	}
	points, err := forecast.Predict(series, then.Forecast.Model, then.Forecast.Params, 24)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range then.Forecast.Points {
		if points[i] != p.Value {
			t.Fatalf("point %d: %v replayed, %v forecast", i, points[i], p.Value)
		}
	}

	if _, err := replay.MakeForecast(ctx, l.Store, replay.Request{OrgID: "o1", Metric: replay.Requests}, 0, time.Now()); !errors.Is(err, replay.ErrInvalid) {
		t.Fatalf("horizon 0: %v", err)
	}
	short := replay.Request{OrgID: "o1", TunnelID: "t1", Metric: replay.Requests, AsOf: madeAt, History: 5 * 24 * time.Hour}
	if _, err := replay.MakeForecast(ctx, l.Store, short, 24, time.Now()); !errors.Is(err, replay.ErrInvalid) || !errors.Is(err, forecast.ErrShortSeries) {
		t.Fatalf("five days of history: %v", err)
	}
}
