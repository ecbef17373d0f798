package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/analytics/replay"
	analyticsreport "github.com/tunnelplane/tunnelplane/analytics/report"
	"github.com/tunnelplane/tunnelplane/compliance/report"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// Compliance makes a compliance report (the schedule's kind names the framework) over the run's
// window.
type Compliance struct {
	Generator *report.Generator
	// CatchUp brings the compliance read model to the log's head before a report is built, so
	// that it covers what was recorded up to the run.
	CatchUp func(ctx context.Context) error
}

// Prepare implements Kind.
func (c Compliance) Prepare(ctx context.Context, run Run) (Prepared, error) {
	if c.CatchUp != nil {
		if err := c.CatchUp(ctx); err != nil {
			return Prepared{}, err
		}
	}
	format, err := render.ParseFormat(run.Spec.Format)
	if err != nil {
		return Prepared{}, err
	}
	p, err := c.Generator.Prepare(ctx, report.Request{Framework: run.Spec.Kind, From: run.From, To: run.To, OrgID: run.OrgID,
		Actor: Actor, ReportID: run.ReportID}, format)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{File: p.File, Event: p.Event}, nil
}

// Analytics makes an organization's usage, chargeback or capacity report (the schedule's kind)
// over the run's window.
type Analytics struct {
	Generator *analyticsreport.Generator
	// CatchUp brings the usage and nodes read models to the log's head before a report is built.
	CatchUp func(ctx context.Context) error
}

// Prepare implements Kind.
func (a Analytics) Prepare(ctx context.Context, run Run) (Prepared, error) {
	if a.CatchUp != nil {
		if err := a.CatchUp(ctx); err != nil {
			return Prepared{}, err
		}
	}
	format, err := render.ParseFormat(run.Spec.Format)
	if err != nil {
		return Prepared{}, err
	}
	req := analyticsreport.Request{Kind: run.Spec.Kind, From: run.From, To: run.To, OrgID: run.OrgID, Actor: Actor, ReportID: run.ReportID}
	if err := req.Validate(); err != nil {
		return Prepared{}, err
	}
	p, err := a.Generator.Prepare(ctx, req, format)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{File: p.File, Event: p.Event}, nil
}

// ForecastLog is what a forecast run reads and appends (an *eventstore.Store).
type ForecastLog interface {
	replay.Log
	Append(ctx context.Context, streamID string, expected eventstore.ExpectedVersion, events ...eventstore.EventData) (eventstore.AppendResult, error)
}

// Forecast forecasts a series from the log as of the run's due time (analytics/replay) and,
// when it is expected to cross the schedule's threshold, appends capacity.forecast_exceeded
// with the forecast's inputs. Its report is the forecast as JSON.
type Forecast struct {
	Log ForecastLog
	Now func() time.Time
}

func (f Forecast) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// ForecastReport is the file of a forecast run.
type ForecastReport struct {
	Forecast *replay.Forecast   `json:"forecast,omitempty"`
	Capacity *forecast.Crossing `json:"capacity,omitempty"`
	Warning  string             `json:"warning,omitempty"`
	// Error says why no forecast could be made (no usage yet, too short a history): the run is
	// made all the same, so it is not retried for ever.
	Error string `json:"error,omitempty"`
}

// Prepare implements Kind.
func (f Forecast) Prepare(ctx context.Context, run Run) (Prepared, error) {
	spec := run.Spec.Forecast
	if spec == nil {
		return Prepared{}, errors.New("forecast schedule without its forecast spec")
	}
	req := replay.Request{OrgID: run.OrgID, TunnelID: spec.TunnelID, Metric: replay.Metric(spec.Metric), AsOf: run.Due}
	fc, err := replay.MakeForecast(ctx, f.Log, req, spec.HorizonHours, f.now())
	var out ForecastReport
	ev := domain.ReportGenerated{To: run.Due.UTC().Format(time.RFC3339Nano)}
	switch {
	case errors.Is(err, replay.ErrNoData) || errors.Is(err, replay.ErrInvalid):
		out.Error = err.Error()
		ev.From = ev.To
	case err != nil:
		return Prepared{}, err
	default:
		out.Forecast = &fc
		ev.From, ev.Position = fc.Forecast.SeriesStart.UTC().Format(time.RFC3339Nano), fc.Position
		cr, err := fc.Forecast.Crossing(spec.Threshold, spec.Probability)
		if err != nil {
			return Prepared{}, err
		}
		out.Capacity = &cr
		if cr.Found {
			out.Warning = Warning(run.OrgID, spec, cr)
			if err := f.warn(ctx, run, fc, cr); err != nil {
				return Prepared{}, err
			}
		}
	}
	file, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{File: file, Event: ev}, nil
}

// Warning says a crossing in words.
func Warning(orgID string, spec *domain.ForecastSpec, cr forecast.Crossing) string {
	scope := "Organization " + orgID
	if spec.TunnelID != "" {
		scope = "Tunnel " + spec.TunnelID
	}
	return fmt.Sprintf("%s is forecast to exceed %s %s/hour around %s, with %.0f%% probability.", scope,
		strconv.FormatFloat(spec.Threshold, 'f', -1, 64), spec.Metric, cr.Hour.UTC().Format(time.RFC3339), 100*cr.Probability)
}

// CapacityEventID is the event id of the capacity warning of a run (its report's id).
func CapacityEventID(reportID string) uuid.UUID {
	return uuid.NewSHA1(runNamespace, []byte(domain.TypeCapacityForecastExceeded+"\x00"+reportID))
}

// warn appends the run's capacity.forecast_exceeded once: its id is derived from the run's.
func (f Forecast) warn(ctx context.Context, run Run, fc replay.Forecast, cr forecast.Crossing) error {
	params := make([]domain.ForecastParam, len(fc.Forecast.Params))
	for i, p := range fc.Forecast.Params {
		params[i] = domain.ForecastParam{Name: p.Name, Value: p.Value}
	}
	spec := run.Spec.Forecast
	ev := domain.CapacityForecastExceeded{ScheduleID: run.ScheduleID, OrgID: run.OrgID, TunnelID: spec.TunnelID, DueAt: run.Due.UTC(),
		AsOf: run.Due.UTC(), Position: fc.Position, HistoryHours: int(fc.Request.History / time.Hour), SeriesStart: fc.Forecast.SeriesStart.UTC(),
		SeriesHours: fc.Forecast.SeriesHours, HorizonHours: fc.Forecast.Horizon, Model: fc.Forecast.Model, Params: params,
		Metric: spec.Metric, Threshold: spec.Threshold, MinProbability: spec.Probability, Hour: cr.Hour.UTC(), Probability: cr.Probability,
		ReportID: run.ReportID}
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	meta, err := json.Marshal(domain.Metadata{Actor: Actor, OrgID: run.OrgID, Command: "ForecastCapacity", CorrelationID: run.ScheduleID,
		OccurredAt: f.now().UTC()})
	if err != nil {
		return err
	}
	id := CapacityEventID(run.ReportID)
	_, err = f.Log.Append(ctx, domain.CapacityStream(id.String()), eventstore.NoStream,
		eventstore.EventData{ID: id, Type: domain.TypeCapacityForecastExceeded, Payload: payload, Metadata: meta})
	if errors.Is(err, eventstore.ErrWrongExpectedVersion) || errors.Is(err, eventstore.ErrDuplicateEventID) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("record the capacity warning: %w", err)
	}
	return nil
}
