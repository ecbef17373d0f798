package forecast

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
)

// Model names, as they appear in a forecast and in the events that carry one. They are part of
// the log's contract: renaming one breaks the replay of forecasts recorded under it.
const (
	ModelSeasonalNaiveDaily  = "seasonal_naive_daily"
	ModelSeasonalNaiveWeekly = "seasonal_naive_weekly"
	ModelSeasonalMedian      = "seasonal_median_5w"
	ModelHolt                = "holt_deseasonalized"
	ModelDampedHolt          = "damped_holt_deseasonalized"
	ModelRegression          = "trend_hour_day_regression"
	ModelCombination         = "combination_holt_damped_regression"
)

// Windows: how much of the training history each model looks at. Bounding them keeps a
// forecast's cost independent of how long the series is, and lets old behaviour age out.
const (
	holtWindow       = 8 * WeekHours
	regressionWindow = 8 * WeekHours
	seasonalWeeks    = 5
	// Nelder-Mead budget per fit. The objective is smooth in the smoothing constants and
	// flat near its optimum, so a loose tolerance loses nothing a forecast would show.
	fitEvaluations = 100
	// fitHorizon is how far ahead the smoothing constants are fitted to forecast: a week.
	fitHorizon = WeekHours
	fitStride  = 5
)

// Param is one fitted parameter of a model.
type Param struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// model is one candidate method. fit estimates its parameters from the training history y
// (y[0] is the series' first hour, so t mod 168 is the hour of the week throughout);
// predict forecasts the h hours after y with given parameters. predict is deterministic in
// (y, params, h): that is what lets a recorded forecast be reproduced from its parameters.
type model struct {
	name     string
	params   []string
	minTrain int
	fit      func(hist *history) []float64
	predict  func(hist *history, p []float64, h int) []float64
}

// history is a training history with what several models derive from it, computed once: the
// Holt models of one backtest origin share one deseasonalized series.
type history struct {
	y       []float64
	a       []float64 // deseasonalized log series of the Holt window
	profile []float64
	holt    map[bool][]float64 // fitted Holt parameters, by damped
	clipAt  float64
	reg     []float64 // the regression's forecast, of len(reg) hours
}

func newHistory(y []float64) *history { return &history{y: y, holt: map[bool][]float64{}} }

// deseasonalized returns the window Holt works on, log(1+y[w0:]) minus its weekly profile.
func (hist *history) deseasonalized() (a, profile []float64) {
	if hist.a == nil {
		z := logSeries(hist.y)
		w0 := max(0, len(z)-holtWindow)
		hist.profile = weeklyProfile(z, w0)
		hist.a = make([]float64, len(z)-w0)
		for i := range hist.a {
			hist.a[i] = z[w0+i] - hist.profile[(w0+i)%WeekHours]
		}
	}
	return hist.a, hist.profile
}

// candidates returns the models in a fixed order; the order breaks ties in the backtest.
func candidates() []model {
	noFit := func(*history) []float64 { return nil }
	return []model{
		{name: ModelSeasonalNaiveWeekly, minTrain: WeekHours, fit: noFit, predict: seasonalNaive(WeekHours)},
		{name: ModelSeasonalNaiveDaily, minTrain: DayHours, fit: noFit, predict: seasonalNaive(DayHours)},
		{name: ModelSeasonalMedian, minTrain: 2 * WeekHours, fit: noFit, predict: seasonalMedian},
		{name: ModelHolt, params: []string{"alpha", "beta"}, minTrain: 2 * WeekHours,
			fit: func(hist *history) []float64 { return fitHolt(hist, false) }, predict: predictHolt},
		{name: ModelDampedHolt, params: []string{"alpha", "beta", "phi"}, minTrain: 2 * WeekHours,
			fit: func(hist *history) []float64 { return fitHolt(hist, true) }, predict: predictHolt},
		{name: ModelRegression, minTrain: 2 * WeekHours, fit: noFit, predict: predictRegression},
		{name: ModelCombination, params: []string{"holt_alpha", "holt_beta", "damped_alpha", "damped_beta", "damped_phi"},
			minTrain: 2 * WeekHours, fit: fitCombination, predict: predictCombination},
	}
}

// fitCombination fits the two Holt models (the regression has nothing to fit).
func fitCombination(hist *history) []float64 {
	return append(slices.Clone(fitHolt(hist, false)), fitHolt(hist, true)...)
}

// predictCombination is the mean of the Holt, damped Holt and regression forecasts. Averaging
// forecasts whose errors are not the same cancels part of each one's error (the lesson of the
// M competitions, where such a combination beat most single methods); it also makes the
// choice less of a gamble when the three score alike in the backtest.
func predictCombination(hist *history, p []float64, h int) []float64 {
	f := predictHolt(hist, p[:2], h)
	d := predictHolt(hist, p[2:], h)
	r := predictRegression(hist, nil, h)
	for i := range f {
		f[i] = (f[i] + d[i] + r[i]) / 3
	}
	return f
}

func modelByName(name string) (model, error) {
	for _, m := range candidates() {
		if m.name == name {
			return m, nil
		}
	}
	return model{}, fmt.Errorf("%w: %q", ErrUnknownModel, name)
}

// seasonalNaive repeats the last season.
func seasonalNaive(m int) func(*history, []float64, int) []float64 {
	return func(hist *history, _ []float64, h int) []float64 {
		y := hist.y
		n := len(y)
		f := make([]float64, h)
		for i := range f {
			f[i] = y[n-m+i%m]
		}
		return f
	}
}

// seasonalMedian forecasts each hour of the week by its median over the last five weeks (or
// as many as there are): the seasonal naive with its noise averaged down and a week's holiday
// or outage ignored.
func seasonalMedian(hist *history, _ []float64, h int) []float64 {
	y := hist.y
	n := len(y)
	weeks := min(seasonalWeeks, n/WeekHours)
	f := make([]float64, WeekHours)
	v := make([]float64, weeks)
	for j := range WeekHours {
		for k := range weeks {
			v[k] = y[n-(k+1)*WeekHours+j]
		}
		f[j] = median(v)
	}
	out := make([]float64, h)
	for i := range out {
		out[i] = f[i%WeekHours]
	}
	return out
}

// weeklyProfile is the additive hour-of-week profile of y[w0:] by classical decomposition,
// built as a daily shape plus a level per day of the week: the series minus its centred 2x168
// moving average, the median of that per hour of the day, then the median of what is left per
// day of the week, both centred on zero. Index j is the hour t with t mod 168 == j.
//
// Two factors instead of 168 free hours: each hour of the day is estimated from every day
// rather than one day a week, which with a few weeks of history cuts the profile's own noise by
// more than half. On the log scale a weekend that is uniformly quieter is exactly a day level;
// weekdays whose shapes differ are left to the models that keep every hour of the week (the
// seasonal naive and the five-week median), and the backtest chooses. Medians, so that a holiday
// or an outage does not move the profile.
func weeklyProfile(y []float64, w0 int) []float64 {
	n := len(y)
	const half = WeekHours / 2
	// prefix[i] = sum of y[w0 : w0+i]
	prefix := make([]float64, n-w0+1)
	for i := w0; i < n; i++ {
		prefix[i-w0+1] = prefix[i-w0] + y[i]
	}
	first := w0 + half
	dev := make([]float64, 0, n-w0)
	for t := first; t+half < n; t++ {
		inner := prefix[t+half-w0] - prefix[t-half+1-w0] // y[t-83 .. t+83]
		ma := (inner + 0.5*y[t-half] + 0.5*y[t+half]) / WeekHours
		dev = append(dev, y[t]-ma)
	}
	groupMedians := func(groups int, key func(t int) int, value func(i, t int) float64) []float64 {
		g := make([][]float64, groups)
		for i := range dev {
			t := first + i
			g[key(t)] = append(g[key(t)], value(i, t))
		}
		m := make([]float64, groups)
		var mean float64
		for k := range g {
			m[k] = median(g[k])
			mean += m[k]
		}
		mean /= float64(groups)
		for k := range m {
			m[k] -= mean
		}
		return m
	}
	hourOfDay := func(t int) int { return t % DayHours }
	dayOfWeek := func(t int) int { return t % WeekHours / DayHours }
	daily := groupMedians(DayHours, hourOfDay, func(i, _ int) float64 { return dev[i] })
	days := groupMedians(7, dayOfWeek, func(i, t int) float64 { return dev[i] - daily[t%DayHours] })
	s := make([]float64, WeekHours)
	for j := range s {
		s[j] = daily[hourOfDay(j)] + days[dayOfWeek(j)]
	}
	return s
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// holtState runs Holt's linear method (damped when phi < 1) over a and returns the final level
// and trend. With score it also returns the loss the parameters are fitted to: the mean
// absolute error of the forecasts made from every day's end (after the two weeks the state
// starts from) for each of the next fitHorizon hours. One-step errors, the textbook loss,
// are dominated by hourly noise and choose a level that lags the trend, which is what
// matters a week out.
//
// The error that updates the state is clipped at clip (three robust standard deviations of the
// hour-to-hour change): a holiday or an outage moves the level by at most that much an hour
// instead of dragging it down for days (robust exponential smoothing, as in Gelper, Fried and
// Croux, 2010). A lasting change still gets through, a clipped step at a time, and a level
// shift large enough to matter has been removed before (LevelShift).
func holtState(a []float64, alpha, beta, phi, clip float64, score bool) (level, trend, loss float64) {
	// Start from the first two weeks: level at their mean, trend the weekly difference.
	w1, w2 := meanOf(a[:WeekHours]), meanOf(a[WeekHours:2*WeekHours])
	trend = (w2 - w1) / WeekHours
	level = w1 - trend*(WeekHours-1)/2
	var damp [fitHorizon]float64
	if score {
		pow, sum := 1.0, 0.0
		for i := range damp {
			pow *= phi
			sum += pow
			damp[i] = sum
		}
	}
	count := 0
	for day := 0; day < len(a); day += DayHours {
		if score && day >= 2*WeekHours && day+fitHorizon <= len(a) {
			// Every fifth step: neighbouring steps' errors are nearly the same, and 5 is
			// prime to 24, so the sampled steps still fall on every hour of the day.
			for i := 0; i < fitHorizon; i += fitStride {
				loss += math.Abs(a[day+i] - level - damp[i]*trend)
				count++
			}
		}
		for _, v := range a[day:min(day+DayHours, len(a))] {
			pred := level + phi*trend
			newLevel := pred + alpha*max(-clip, min(clip, v-pred))
			trend = phi*trend + beta*(newLevel-level-phi*trend)
			level = newLevel
		}
	}
	if count > 0 {
		loss /= float64(count)
	}
	return level, trend, loss
}

func meanOf(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// clip is the bound on a Holt update's error: three robust standard deviations (MAD of the
// hour-to-hour differences of the deseasonalized series, over √2), or no bound when the series
// is flat.
func (hist *history) clip() float64 {
	if hist.clipAt == 0 {
		a, _ := hist.deseasonalized()
		d := make([]float64, len(a)-1)
		for i := range d {
			d[i] = math.Abs(a[i+1] - a[i])
		}
		hist.clipAt = 3 * 1.4826 * median(d) / math.Sqrt2
		if hist.clipAt == 0 {
			hist.clipAt = math.Inf(1)
		}
	}
	return hist.clipAt
}

// Parameters are optimized unconstrained and mapped into their ranges: alpha and beta in
// (0, 1), phi in [0.8, 0.98] (Hyndman's damping range: below 0.8 the trend barely counts,
// above 0.98 it is indistinguishable from the undamped one).
func holtParams(x []float64, damped bool) (alpha, beta, phi float64) {
	alpha = 0.001 + 0.998*sigmoid(x[0])
	beta = 0.001 + 0.998*sigmoid(x[1])
	phi = 1
	if damped {
		phi = 0.8 + 0.18*sigmoid(x[2])
	}
	return alpha, beta, phi
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func fitHolt(hist *history, damped bool) []float64 {
	if p, ok := hist.holt[damped]; ok {
		return p
	}
	a, _ := hist.deseasonalized()
	clip := hist.clip()
	x0 := []float64{logit(0.1), logit(0.01), 0}
	if !damped {
		x0 = x0[:2]
	}
	x := minimize(func(x []float64) float64 {
		alpha, beta, phi := holtParams(x, damped)
		_, _, loss := holtState(a, alpha, beta, phi, clip, true)
		return loss
	}, x0)
	alpha, beta, phi := holtParams(x, damped)
	p := []float64{alpha, beta, phi}
	if !damped {
		p = p[:2]
	}
	hist.holt[damped] = p
	return p
}

func logit(p float64) float64 { return math.Log(p / (1 - p)) }

// logSeries is log(1+y): usage grows and shifts multiplicatively (its daily swing scales with
// its level), which is additive on this scale, and the back-transform of a forecast made here
// is a median, the forecast that minimizes absolute error, which MASE scores.
func logSeries(y []float64) []float64 {
	z := make([]float64, len(y))
	for i, v := range y {
		z[i] = math.Log1p(v)
	}
	return z
}

// fromLog maps forecasts on the log scale back, capped so that a runaway trend cannot
// overflow (e^50 is far beyond any hourly count).
func fromLog(f []float64) []float64 {
	for i, v := range f {
		f[i] = math.Expm1(min(v, 50))
	}
	return f
}

func predictHolt(hist *history, p []float64, h int) []float64 {
	alpha, beta, phi := p[0], p[1], 1.0
	if len(p) == 3 {
		phi = p[2]
	}
	a, profile := hist.deseasonalized()
	level, trend, _ := holtState(a, alpha, beta, phi, hist.clip(), false)
	n := len(hist.y)
	f := make([]float64, h)
	damp := 0.0
	pow := 1.0
	for i := range f {
		pow *= phi
		damp += pow
		f[i] = level + damp*trend + profile[(n+i)%WeekHours]
	}
	return fromLog(f)
}

// minimize runs Nelder-Mead from x0 (deterministic: no random start, one evaluation at a
// time) and returns the best point it found, or x0 when the optimizer fails.
func minimize(f func([]float64) float64, x0 []float64) []float64 {
	obj := func(x []float64) float64 {
		v := f(x)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return math.MaxFloat64
		}
		return v
	}
	res, err := optimize.Minimize(optimize.Problem{Func: obj}, x0, &optimize.Settings{
		FuncEvaluations: fitEvaluations,
		Converger:       &optimize.FunctionConverge{Relative: 1e-5, Iterations: 20},
	}, &optimize.NelderMead{SimplexSize: 1})
	if err != nil || res == nil || obj(res.X) > obj(x0) {
		return x0
	}
	return res.X
}

// predictRegression fits, by least squares (gonum's QR) on the log scale over the last eight
// weeks, log(1+y) = a + b·t + hour-of-day + day-of-week (dummies, the first of each left out),
// and extends it: the daily and the weekly season and a linear trend in one model, with 31
// coefficients from 1,344 hours. It has no parameters to tune: the fit is exact.
func predictRegression(hist *history, _ []float64, h int) []float64 {
	if len(hist.reg) != h {
		hist.reg = regression(hist.y, h)
	}
	return slices.Clone(hist.reg)
}

func regression(y []float64, h int) []float64 {
	n := len(y)
	w0 := max(0, n-regressionWindow)
	rows := n - w0
	const cols = 2 + (DayHours - 1) + 6
	design := func(t int, row []float64) {
		clear(row)
		row[0] = 1
		row[1] = float64(t-w0) / float64(rows)
		if hd := t % DayHours; hd > 0 {
			row[1+hd] = 1
		}
		if dw := t % WeekHours / DayHours; dw > 0 {
			row[1+DayHours-1+dw] = 1
		}
	}
	x := mat.NewDense(rows, cols, nil)
	b := mat.NewVecDense(rows, nil)
	for t := w0; t < n; t++ {
		design(t, x.RawRowView(t-w0))
		b.SetVec(t-w0, math.Log1p(y[t]))
	}
	var qr mat.QR
	qr.Factorize(x)
	var coef mat.Dense
	f := make([]float64, h)
	if err := qr.SolveTo(&coef, false, b); err != nil {
		// Singular only if the design is, which it is not with two weeks of rows or more;
		// fall back to the window's mean rather than fail the forecast.
		m := meanOf(y[w0:])
		for i := range f {
			f[i] = m
		}
		return f
	}
	row := make([]float64, cols)
	for i := range f {
		design(n+i, row)
		var v float64
		for j, r := range row {
			v += r * coef.At(j, 0)
		}
		f[i] = v
	}
	return fromLog(f)
}
