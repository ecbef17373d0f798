package scheduler

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/analytics/replay"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// A scheduled forecast that crosses its threshold appends capacity.forecast_exceeded, once, and
// the event's inputs (log position, as-of time, history, model and parameters) make the same
// forecast again by replay: the same crossing, and the same points from the model alone.
func TestCapacityWarningIsReproducedByReplay(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	h := newHarness(t, now)
	ctx := context.Background()
	org, tunnel := uuid.NewString(), uuid.NewString()

	const days = 21
	start := now.Truncate(time.Hour).Add(-days * 24 * time.Hour)
	syn := forecast.Synthetic{Hours: days*24 + 1, Base: 200, TrendPerWeek: 0.1, DailyAmp: 0.6, WeekendFactor: 0.5, Noise: 0.05, Seed: 7}.Generate()
	var evs []eventstore.EventData
	for i, v := range syn.Values {
		at := start.Add(time.Duration(i) * time.Hour)
		w := domain.UsageRecorded{NodeID: "n1", OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerAnonymous, WindowStart: at,
			WindowEnd: at.Add(10 * time.Second), Requests: int64(math.Round(v))}
		p, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: p})
	}
	if _, err := h.env.Store.Append(ctx, domain.NodeFactsStream("n1"), eventstore.AnyVersion, evs...); err != nil {
		t.Fatal(err)
	}
	// The schedule is appended as its command would (the org is not created here: the forecast
	// reads only usage windows).
	spec := domain.ReportScheduleSpec{Kind: domain.ReportKindForecast, Format: "json", Cadence: domain.Cadence{Every: domain.CadenceInterval, IntervalHours: 1},
		Forecast: &domain.ForecastSpec{TunnelID: tunnel, Metric: "requests", Threshold: 150, Probability: 0.5, HorizonHours: 24}}
	id := uuid.NewString()
	created, err := domain.CreateReportSchedule(domain.NewReportSchedule{ScheduleID: id, OrgID: org, CreatedBy: "alice", Now: time.Now(), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(created)
	if _, err := h.env.Store.Append(ctx, domain.ReportScheduleStream(id), eventstore.NoStream,
		eventstore.EventData{Type: domain.TypeReportScheduleCreated, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	due := created.Since.Truncate(time.Hour).Add(time.Hour)
	h.clock.Set(due.Add(5 * time.Minute))
	for range 2 { // a restart makes no second warning
		m := h.manager()
		h.start(m)
		h.waitGenerated(id, due)
		m.Stop()
	}
	headPos, err := h.env.Store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := h.env.Store.ReadType(ctx, domain.TypeCapacityForecastExceeded, 0, headPos-1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d capacity warnings, want 1", len(recs))
	}
	var ev domain.CapacityForecastExceeded
	if err := json.Unmarshal(recs[0].Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.ScheduleID != id || ev.TunnelID != tunnel || ev.Threshold != 150 || !ev.DueAt.Equal(due) || ev.Model == "" || ev.Probability < 0.5 ||
		ev.ReportID != ReportID(id, due) {
		t.Fatalf("warning: %+v", ev)
	}

	// Usage recorded later, some for the hours forecast, does not change the replay.
	late, _ := json.Marshal(domain.UsageRecorded{NodeID: "n1", OrgID: org, TunnelID: tunnel, CallerKind: domain.CallerAnonymous,
		WindowStart: now.Truncate(time.Hour), WindowEnd: now.Truncate(time.Hour).Add(10 * time.Second), Requests: 99999})
	if _, err := h.env.Store.Append(ctx, domain.NodeFactsStream("n1"), eventstore.AnyVersion, eventstore.EventData{Type: domain.TypeUsageRecorded, Payload: late}); err != nil {
		t.Fatal(err)
	}
	pos := ev.Position
	req := replay.Request{OrgID: ev.OrgID, TunnelID: ev.TunnelID, Metric: replay.Metric(ev.Metric), AsOf: ev.AsOf, UpTo: &pos,
		History: time.Duration(ev.HistoryHours) * time.Hour}
	again, err := replay.MakeForecast(ctx, h.env.Store, req, ev.HorizonHours, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	cr, err := again.Forecast.Crossing(ev.Threshold, ev.MinProbability)
	if err != nil {
		t.Fatal(err)
	}
	if again.Forecast.Model != ev.Model || !cr.Found || !cr.Hour.Equal(ev.Hour) || cr.Probability != ev.Probability ||
		!again.Forecast.SeriesStart.Equal(ev.SeriesStart) || again.Forecast.SeriesHours != ev.SeriesHours {
		t.Fatalf("replayed: model %s, crossing %+v, series %s+%d; recorded %+v", again.Forecast.Model, cr, again.Forecast.SeriesStart, again.Forecast.SeriesHours, ev)
	}
	for i, p := range again.Forecast.Params {
		if p.Name != ev.Params[i].Name || p.Value != ev.Params[i].Value {
			t.Fatalf("parameter %d: replayed %+v, recorded %+v", i, p, ev.Params[i])
		}
	}
	// The model and parameters alone give the same points on the replayed series.
	s, err := replay.Hourly(ctx, h.env.Store, req, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	first := int(ev.SeriesStart.Sub(s.Start) / time.Hour)
	series, err := forecast.NewSeries(ev.SeriesStart, s.Values[first:first+ev.SeriesHours])
	if err != nil {
		t.Fatal(err)
	}
	params := make([]forecast.Param, len(ev.Params))
	for i, p := range ev.Params {
		params[i] = forecast.Param{Name: p.Name, Value: p.Value}
	}
	points, err := forecast.Predict(series, ev.Model, params, ev.HorizonHours)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range again.Forecast.Points {
		if points[i] != p.Value {
			t.Fatalf("point %d: %v from the recorded model, %v replayed", i, points[i], p.Value)
		}
	}
}
