package forecast

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Limits on what a caller may ask for. They bound the work one request can cause.
const (
	// WeekHours is the weekly season; DayHours the daily one.
	WeekHours = 168
	DayHours  = 24
	// MinTrainHours is the shortest history a backtest origin trains on: two weeks, the least
	// from which a weekly profile (and the weekly seasonal naive's in-sample error, the MASE
	// scale) can be estimated. Shorter histories are refused rather than guessed at.
	MinTrainHours = 2 * WeekHours
	// OriginStep is the distance between two backtest origins.
	OriginStep = 2 * DayHours
	// MaxOrigins is the most backtest origins a forecast uses.
	MaxOrigins = 8
	// MaxHorizon is the longest forecast: one year of hours.
	MaxHorizon = 8760
	// MaxSeriesHours bounds the input: five years of hours.
	MaxSeriesHours = 5 * 8760
	// MaxValue bounds one hour's usage (a petabyte of bytes an hour), so that no sum or
	// difference of values can overflow into an infinity that JSON cannot carry.
	MaxValue = 1e15
)

// Sentinel errors. Callers match them with errors.Is.
var (
	ErrEmptySeries   = errors.New("forecast: empty series")
	ErrShortSeries   = errors.New("forecast: series too short")
	ErrLongSeries    = errors.New("forecast: series too long")
	ErrBadValue      = errors.New("forecast: value not finite, negative or above MaxValue")
	ErrStartNotHour  = errors.New("forecast: series start is not a whole UTC hour")
	ErrBadHorizon    = errors.New("forecast: horizon out of range")
	ErrUnknownModel  = errors.New("forecast: unknown model")
	ErrBadParams     = errors.New("forecast: parameters do not fit the model")
	ErrBadThreshold  = errors.New("forecast: threshold or probability out of range")
	ErrPointOutside  = errors.New("forecast: point outside the series range")
	ErrNoBacktestErr = errors.New("forecast: forecast carries no backtest errors")
)

// Series is an hourly series of usage: Values[i] is the usage in the hour starting at
// Start + i hours. An hour without usage is a zero, never a gap: usage windows that were not
// recorded mean nothing was used.
type Series struct {
	Start  time.Time
	Values []float64
}

// NewSeries checks and copies an hourly series. start must be a whole hour (it is converted to
// UTC); every value must be finite, not negative and at most MaxValue.
func NewSeries(start time.Time, values []float64) (Series, error) {
	s := Series{Start: start.UTC(), Values: values}
	if err := s.validate(); err != nil {
		return Series{}, err
	}
	s.Values = append([]float64(nil), values...)
	return s, nil
}

// Point is the usage of one hour.
type Point struct {
	Hour  time.Time
	Value float64
}

// FromPoints builds the series of the hours [from, to) from hourly points; points of the same
// hour add up, and an hour without a point is zero. Every point must lie in the range and fall
// on a whole hour.
func FromPoints(from, to time.Time, points []Point) (Series, error) {
	from, to = from.UTC(), to.UTC()
	if !from.Truncate(time.Hour).Equal(from) || !to.Truncate(time.Hour).Equal(to) {
		return Series{}, ErrStartNotHour
	}
	hours := int64(to.Sub(from) / time.Hour)
	if hours <= 0 {
		return Series{}, ErrEmptySeries
	}
	if hours > MaxSeriesHours {
		return Series{}, fmt.Errorf("%w: %d hours, at most %d", ErrLongSeries, hours, MaxSeriesHours)
	}
	values := make([]float64, hours)
	for _, p := range points {
		h := p.Hour.UTC()
		if !h.Truncate(time.Hour).Equal(h) || h.Before(from) || !h.Before(to) {
			return Series{}, ErrPointOutside
		}
		values[h.Sub(from)/time.Hour] += p.Value
	}
	return NewSeries(from, values)
}

// End is the first hour after the series: the as-of time of a forecast made from it.
func (s Series) End() time.Time {
	return s.Start.Add(time.Duration(len(s.Values)) * time.Hour)
}

// Until returns the part of the series before t (a forecast "as of" t sees only that). The
// values are shared, not copied.
func (s Series) Until(t time.Time) Series {
	n := int(t.Sub(s.Start) / time.Hour)
	n = max(0, min(n, len(s.Values)))
	return Series{Start: s.Start, Values: s.Values[:n]}
}

// validate checks a series, also one built as a struct literal rather than by NewSeries.
func (s Series) validate() error {
	if !s.Start.Truncate(time.Hour).Equal(s.Start) {
		return ErrStartNotHour
	}
	if len(s.Values) == 0 {
		return ErrEmptySeries
	}
	if len(s.Values) > MaxSeriesHours {
		return fmt.Errorf("%w: %d hours, at most %d", ErrLongSeries, len(s.Values), MaxSeriesHours)
	}
	for i, v := range s.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > MaxValue {
			return fmt.Errorf("%w: hour %d", ErrBadValue, i)
		}
	}
	return nil
}
