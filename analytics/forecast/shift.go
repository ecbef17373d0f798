package forecast

import (
	"math"
	"slices"
)

// LevelShift is a lasting change of level found in the history and removed before modelling:
// the hours before Hour are moved by LogRatio on the log(1+y) scale, so that every model, the
// backtest and the MASE scale see the history as if it had always been at the new level. It
// is the level-shift regressor of X-13ARIMA-SEATS's pre-adjustment, found by a robust scan
// instead of by t-tests on a model.
type LevelShift struct {
	Hour     int     `json:"hour"`      // index of the first hour at the new level
	LogRatio float64 `json:"log_ratio"` // new level − old level, on the log(1+y) scale
}

// Detection thresholds. A step is taken for a shift when the medians of the day means (of the
// deseasonalized log series) of the week before and of up to a week after differ by at least
// minShiftRatio and by shiftSigmas robust standard deviations of a day mean's day-to-day
// change. Medians, so that a holiday is not a shift; a week on the near side, so that a trend
// (a few per cent a week) is not one either; three days on the far side at least, so that the
// last day's dip is not one: a shift in the last three days is left to the models.
const (
	shiftSearchWeeks = 12
	minShiftRatio    = 1.2
	shiftSigmas      = 5
	shiftPreDays     = 7
	shiftMinPostDays = 3
)

// detectShift finds the largest level shift in the last twelve weeks of y, if any.
func detectShift(y []float64) (LevelShift, bool) {
	n := len(y)
	w0 := max(0, n-shiftSearchWeeks*WeekHours)
	w0 = (w0 + DayHours - 1) / DayHours * DayHours
	if n-w0 < 2*WeekHours {
		return LevelShift{}, false
	}
	z := logSeries(y)
	profile := weeklyProfile(z, w0)
	days := (n - w0) / DayHours
	dm := make([]float64, days)
	for d := range dm {
		var sum float64
		for t := w0 + d*DayHours; t < w0+(d+1)*DayHours; t++ {
			sum += z[t] - profile[t%WeekHours]
		}
		dm[d] = sum / DayHours
	}
	diffs := make([]float64, days-1)
	for d := range diffs {
		diffs[d] = math.Abs(dm[d+1] - dm[d])
	}
	// MAD of the differences (their median is about zero) → standard deviation of one day mean.
	sigma := 1.4826 * median(diffs) / math.Sqrt2
	best, bestStat, bestDelta := -1, 0.0, 0.0
	for k := shiftPreDays; k+shiftMinPostDays <= days; k++ {
		delta := median(dm[k:min(days, k+shiftPreDays)]) - median(dm[k-shiftPreDays:k])
		if math.Abs(delta) < math.Log(minShiftRatio) {
			continue
		}
		stat := math.Inf(1)
		if sigma > 0 {
			stat = math.Abs(delta) / sigma
		}
		if stat >= shiftSigmas && (best < 0 || stat > bestStat || (stat == bestStat && math.Abs(delta) > math.Abs(bestDelta))) {
			best, bestStat, bestDelta = k, stat, delta
		}
	}
	if best < 0 {
		return LevelShift{}, false
	}
	return LevelShift{Hour: w0 + best*DayHours, LogRatio: bestDelta}, true
}

// apply returns y with the hours before the shift moved to the new level.
func (ls LevelShift) apply(y []float64) []float64 {
	out := slices.Clone(y)
	for t := range min(ls.Hour, len(out)) {
		out[t] = max(0, math.Expm1(math.Log1p(out[t])+ls.LogRatio))
	}
	return out
}

// adjusted is the history the models see: y, or y with its level shift removed.
func adjusted(y []float64) ([]float64, *LevelShift) {
	ls, ok := detectShift(y)
	if !ok {
		return y, nil
	}
	return ls.apply(y), &ls
}
