package forecast

import (
	"fmt"
	"time"
)

// BenchSeries returns count series for timing forecasts: 90 days of hourly history each,
// trended with daily and weekly seasons, noise and holidays, one seed per series.
func BenchSeries(count int) []Series {
	out := make([]Series, count)
	for i := range out {
		out[i] = Synthetic{
			Hours: 90 * DayHours, Base: 1000, TrendPerWeek: 0.03, DailyAmp: 0.5,
			WeekendFactor: 0.6, Noise: 0.1, Holidays: 2, HolidayFactor: 0.3, Seed: uint64(i + 1),
		}.Generate()
	}
	return out
}

// MsPerSeries forecasts every series horizon hours ahead, backtest included, one after the
// other, and returns the mean wall time per series in milliseconds: the
// forecast_ms_per_series of `tunnelplane bench analytics`.
func MsPerSeries(series []Series, horizon int) (float64, error) {
	if len(series) == 0 {
		return 0, ErrEmptySeries
	}
	start := time.Now()
	for i, s := range series {
		if _, err := Make(s, horizon); err != nil {
			return 0, fmt.Errorf("series %d: %w", i, err)
		}
	}
	return float64(time.Since(start).Microseconds()) / 1000 / float64(len(series)), nil
}
