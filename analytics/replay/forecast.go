package replay

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/analytics/forecast"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Forecast is a forecast made from the log, with what it read: enough to make it again (Request
// with UpTo set to Position, and the model and parameters of Forecast for forecast.Predict).
type Forecast struct {
	Request  Request           `json:"-"`
	Metric   Metric            `json:"metric"`
	OrgID    string            `json:"org_id"`
	TunnelID string            `json:"tunnel_id,omitempty"`
	Position uint64            `json:"position"` // the last log position read
	Windows  int               `json:"windows"`  // usage windows folded in
	Skipped  int               `json:"skipped"`  // windows that did not validate
	Forecast forecast.Forecast `json:"forecast"`
}

// MakeForecast rebuilds the series from the log (Hourly), from its first hour with usage on, and
// forecasts horizon hours past it.
func MakeForecast(ctx context.Context, st *eventstore.Store, req Request, horizon int, now time.Time) (Forecast, error) {
	if horizon < 1 || horizon > forecast.MaxHorizon {
		return Forecast{}, fmt.Errorf("%w: horizon must be 1..%d hours", ErrInvalid, forecast.MaxHorizon)
	}
	if req.History == 0 {
		// At least what the backtest needs, and 90 days when the horizon allows.
		req.History = time.Duration(max(forecast.MinSeriesHours(horizon), 90*24)) * time.Hour
	}
	s, err := Hourly(ctx, st, req, now)
	if err != nil {
		return Forecast{}, err
	}
	// Hours before the first usage are not zero usage but no tunnel yet: the series starts
	// with the first hour that saw a call.
	first := 0
	for first < len(s.Values) && s.Values[first] == 0 {
		first++
	}
	series, err := forecast.NewSeries(s.Start.Add(time.Duration(first)*time.Hour), s.Values[first:])
	if err != nil {
		return Forecast{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	f, err := forecast.Make(series, horizon)
	if err != nil {
		return Forecast{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return Forecast{Request: req, Metric: req.Metric, OrgID: req.OrgID, TunnelID: req.TunnelID, Position: s.Position,
		Windows: s.Windows, Skipped: s.Skipped, Forecast: f}, nil
}
