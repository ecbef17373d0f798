package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/analytics/replay"
	"github.com/tunnelplane/tunnelplane/commands"
)

// ForecastAnswer is GET /api/v1/analytics/forecast: a forecast made from the log's usage
// windows (replayed up to as_of, never read from the rollups), what it read, and, with a
// threshold, when it is expected to be crossed.
type ForecastAnswer struct {
	replay.Forecast
	Capacity *forecast.Crossing `json:"capacity,omitempty"`
	// Warning says the crossing in words, when one is expected.
	Warning string `json:"warning,omitempty"`
}

// maxForecastsAtOnce bounds concurrent forecasts: each replays the log's usage windows and fits
// models (about a tenth of a second of CPU per series).
const maxForecastsAtOnce = 2

func (s *Server) forecastUsage(c echo.Context) error {
	q, err := newQuery(c, "org", "tunnel", "metric", "horizon", "as_of", "history", "threshold", "probability", "wait_for")
	if err != nil {
		return err
	}
	metric, err := q.oneOf("metric", string(replay.Requests), string(replay.Requests), string(replay.Bytes), string(replay.Streams))
	if err != nil {
		return err
	}
	horizon, err := hoursParam(q, "horizon", 168*time.Hour, time.Duration(forecast.MaxHorizon)*time.Hour)
	if err != nil {
		return err
	}
	history, err := hoursParam(q, "history", 0, replay.MaxHistory*time.Hour)
	if err != nil {
		return err
	}
	asOf, err := q.time("as_of")
	if err != nil {
		return err
	}
	threshold, err := floatParam(q, "threshold", 0, 0, math.MaxFloat64)
	if err != nil {
		return err
	}
	probability, err := floatParam(q, "probability", 0.5, 0.01, 1)
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAnalytics, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c); err != nil { // read from the log itself: the log's position
		return err
	}
	req := replay.Request{OrgID: org, TunnelID: q.str("tunnel"), Metric: replay.Metric(metric), History: history}
	if asOf != nil {
		req.AsOf = *asOf
	}
	select {
	case s.forecasts <- struct{}{}:
		defer func() { <-s.forecasts }()
	case <-c.Request().Context().Done():
		return c.Request().Context().Err()
	}
	f, err := replay.MakeForecast(c.Request().Context(), s.cfg.Log, req, int(horizon/time.Hour), time.Now())
	switch {
	case errors.Is(err, replay.ErrNoData):
		return invalid("tunnel", "%s", err.Error())
	case errors.Is(err, forecast.ErrShortSeries):
		return invalid("history", "not enough usage history to forecast %d hours: %d hours of it are needed, from the first hour with calls on",
			int(horizon/time.Hour), forecast.MinSeriesHours(int(horizon/time.Hour)))
	case errors.Is(err, replay.ErrInvalid):
		return invalid("", "%s", err.Error())
	case err != nil:
		return err
	}
	out := ForecastAnswer{Forecast: f}
	if threshold > 0 {
		cr, err := f.Forecast.Crossing(threshold, probability)
		if err != nil {
			return invalid("threshold", "%s", err.Error())
		}
		out.Capacity = &cr
		if cr.Found {
			scope := "Organization " + org
			if req.TunnelID != "" {
				scope = "Tunnel " + req.TunnelID
			}
			out.Warning = fmt.Sprintf("%s is forecast to exceed %s %s/hour around %s, with %.0f%% probability.", scope,
				strconv.FormatFloat(threshold, 'f', -1, 64), metric, cr.Hour.UTC().Format(time.RFC3339), 100*cr.Probability)
		}
	}
	return c.JSON(http.StatusOK, out)
}

// hoursParam reads a duration of whole hours (Go syntax, "168h"), def when absent.
func hoursParam(q *query, name string, def, maxDur time.Duration) (time.Duration, error) {
	v := q.str(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Hour || d > maxDur || d%time.Hour != 0 {
		return 0, badRequest(name, "want whole hours from 1h to %dh, like 168h", int(maxDur/time.Hour))
	}
	return d, nil
}

// floatParam reads a number within [lo, hi], def when absent.
func floatParam(q *query, name string, def, lo, hi float64) (float64, error) {
	v := q.str(name)
	if v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < lo || f > hi {
		return 0, badRequest(name, "want a number from %g to %g", lo, hi)
	}
	return f, nil
}
