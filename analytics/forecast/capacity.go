package forecast

import (
	"fmt"
	"math"
	"time"
)

// Crossing answers "when is the series forecast to exceed Threshold": the first forecast hour
// whose probability of exceeding it reaches MinProbability. The probability of an hour is the
// share of its pooled backtest errors (the ones its intervals come from, widened the same way)
// that, added to its point forecast, land above the threshold: the empirical error
// distribution, not a normal.
// So "Tunnel T is forecast to exceed N requests/hour around Hour with Probability".
type Crossing struct {
	Threshold      float64 `json:"threshold"`
	MinProbability float64 `json:"min_probability"`
	// Found reports whether an hour of the horizon reaches MinProbability; Hour, Step (0 for
	// the first forecast hour) and Probability describe the first that does.
	Found       bool      `json:"found"`
	Hour        time.Time `json:"hour,omitzero"`
	Step        int       `json:"step"`
	Probability float64   `json:"probability"`
	// PeakHour and PeakProbability are the hour most likely to exceed the threshold (the first
	// of equals), whether or not it reaches MinProbability: "not expected, but a 20% chance on
	// Tuesday".
	PeakHour        time.Time `json:"peak_hour"`
	PeakProbability float64   `json:"peak_probability"`
}

// Crossing finds when f is expected to exceed threshold: the first hour whose probability of
// exceeding it is at least minProbability (in (0, 1]; 0.5 asks for the hour the forecast's
// median crosses).
func (f Forecast) Crossing(threshold, minProbability float64) (Crossing, error) {
	if math.IsNaN(threshold) || math.IsInf(threshold, 0) || threshold < 0 ||
		math.IsNaN(minProbability) || minProbability <= 0 || minProbability > 1 {
		return Crossing{}, ErrBadThreshold
	}
	errs := f.Backtest.Errors
	if len(errs) == 0 || len(f.Points) == 0 {
		return Crossing{}, ErrNoBacktestErr
	}
	for _, e := range errs {
		if len(e) != len(f.Points) {
			return Crossing{}, fmt.Errorf("%w: %d errors per origin for %d points", ErrNoBacktestErr, len(e), len(f.Points))
		}
	}
	half := (f.Backtest.PoolSteps - 1) / 2
	if half < 0 || 2*half+1 > len(f.Points) {
		half = poolHalfWidth(len(errs), len(f.Points))
	}
	c := Crossing{Threshold: threshold, MinProbability: minProbability, PeakProbability: -1}
	w := widening(len(errs))
	var buf []float64
	for i, p := range f.Points {
		buf = pooled(buf[:0], errs, nil, i, half)
		var above int
		for _, e := range buf {
			if p.Value+w*e > threshold {
				above++
			}
		}
		prob := float64(above) / float64(len(buf))
		if prob > c.PeakProbability {
			c.PeakProbability, c.PeakHour = prob, p.Hour
		}
		if !c.Found && prob >= minProbability {
			c.Found, c.Hour, c.Step, c.Probability = true, p.Hour, i, prob
		}
	}
	return c, nil
}
