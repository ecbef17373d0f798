package forecast

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Forecast is a forecast with everything needed to reproduce it: the model and its fitted
// parameters, the series it was made from (start and length, hence the as-of hour), the
// horizon, and the backtest that chose the model and sized its intervals. Forecasting the same
// series again gives the same Forecast, bit for bit, on the same architecture.
type Forecast struct {
	Model  string  `json:"model"`
	Params []Param `json:"params"`
	// SeriesStart and SeriesHours name the input; AsOf = SeriesStart + SeriesHours is the first
	// forecast hour.
	SeriesStart time.Time `json:"series_start"`
	SeriesHours int       `json:"series_hours"`
	AsOf        time.Time `json:"as_of"`
	Horizon     int       `json:"horizon_hours"`
	// LevelShift, when set, was removed from the history before modelling (it is found again
	// from the same series, so it is a result, not an input).
	LevelShift *LevelShift     `json:"level_shift,omitempty"`
	Points     []ForecastPoint `json:"points"`
	Backtest   Backtest        `json:"backtest"`
}

// ForecastPoint is the forecast of one hour with its 80% and 95% prediction intervals. Usage
// cannot be negative, so values and bounds are clamped at zero.
type ForecastPoint struct {
	Hour  time.Time `json:"hour"`
	Value float64   `json:"value"`
	Lo80  float64   `json:"lo80"`
	Hi80  float64   `json:"hi80"`
	Lo95  float64   `json:"lo95"`
	Hi95  float64   `json:"hi95"`
}

// Backtest is the rolling-origin evaluation behind a forecast. Origin j (0 the latest) trains
// on the series up to SeriesHours - Horizon - j·OriginStep hours and is scored on the Horizon
// hours after it.
type Backtest struct {
	Origins    int `json:"origins"`
	OriginStep int `json:"origin_step_hours"`
	// MASE is the chosen model's mean absolute scaled error over the origins; ReferenceMASE the
	// weekly seasonal naive's. The scale of each origin is the weekly seasonal naive's in-sample
	// mean absolute error on that origin's training history, so ReferenceMASE near 1 means the
	// series repeats as well out of sample as in it, and MASE/ReferenceMASE is the chosen
	// model's error relative to the seasonal naive's.
	MASE           float64 `json:"mase"`
	ReferenceModel string  `json:"reference_model"`
	ReferenceMASE  float64 `json:"reference_mase"`
	// Coverage80 and Coverage95 are the share of backtest actuals inside the intervals, each
	// origin judged by intervals built from the other origins' errors only (leave one origin
	// out), so they estimate the coverage of a new forecast rather than restate the fit.
	Coverage80 float64 `json:"coverage80"`
	Coverage95 float64 `json:"coverage95"`
	// PoolSteps is how many neighbouring horizon steps are pooled for one step's interval.
	PoolSteps  int     `json:"pool_steps"`
	Candidates []Score `json:"candidates"`
	// Errors are the chosen model's backtest errors (actual − forecast), [origin][step]: the
	// empirical error distribution the intervals and capacity probabilities come from.
	Errors [][]float64 `json:"errors"`
}

// Score is one candidate's backtest MASE.
type Score struct {
	Model string  `json:"model"`
	MASE  float64 `json:"mase"`
}

// minPool is the number of backtest errors an interval's quantiles are taken from. Eight
// origins give eight errors per horizon step, too few for a 2.5% quantile; errors of
// neighbouring steps come from the same origins a few hours apart and are nearly exchangeable,
// so a step pools the steps around it until about 200 errors (25 steps, about a day, with
// eight origins). Pooling a whole day also averages the hour-of-day differences in spread,
// so an interval is as wide at night as at the peak: the price of few origins.
const minPool = 200

// MinSeriesHours is the shortest series that can be forecast horizon hours ahead: two weeks to
// train the earliest origin on, the horizon to score it, and a day for a second origin (the
// coverage estimate leaves one origin out).
func MinSeriesHours(horizon int) int { return MinTrainHours + horizon + OriginStep }

// Make forecasts s for horizon hours after its end. It backtests every candidate model on
// the series' own history, keeps the one with the lowest MASE (the weekly seasonal naive unless
// another is strictly better), refits it on the whole series and sizes its intervals from its
// backtest errors.
func Make(s Series, horizon int) (Forecast, error) {
	if err := s.validate(); err != nil {
		return Forecast{}, err
	}
	if horizon < 1 || horizon > MaxHorizon {
		return Forecast{}, fmt.Errorf("%w: %d hours, want 1 to %d", ErrBadHorizon, horizon, MaxHorizon)
	}
	n := len(s.Values)
	if need := MinSeriesHours(horizon); n < need {
		return Forecast{}, fmt.Errorf("%w: %d hours, a %d-hour horizon needs at least %d", ErrShortSeries, n, horizon, need)
	}
	// The backtest runs on the adjusted history too, so it asks which model forecasts best
	// once the shift is known, the situation of the forecast being made; on the raw history
	// it would mostly score how models weather a shift they cannot foresee.
	y, shift := adjusted(s.Values)
	origins := min(MaxOrigins, 1+(n-MinTrainHours-horizon)/OriginStep)
	scales := make([]float64, origins)
	for j := range scales {
		scales[j] = maseScale(y[:originAt(n, horizon, j)])
	}

	hists := make([]*history, origins)
	for j := range hists {
		hists[j] = newHistory(y[:originAt(n, horizon, j)])
	}
	models := candidates()
	scores := make([]Score, len(models))
	var bestErrs, bestFc [][]float64
	best := 0
	for i, m := range models {
		mase, errs, fcs := backtest(m, y, hists, horizon, scales)
		scores[i] = Score{Model: m.name, MASE: mase}
		if i == 0 || mase < scores[best].MASE {
			best, bestErrs, bestFc = i, errs, fcs
		}
	}
	chosen := models[best]
	hist := newHistory(y)
	params := chosen.fit(hist)
	point := clampNonNegative(chosen.predict(hist, params, horizon))

	pool := poolHalfWidth(origins, horizon)
	f := Forecast{
		Model:       chosen.name,
		Params:      namedParams(chosen, params),
		LevelShift:  shift,
		SeriesStart: s.Start.UTC(),
		SeriesHours: n,
		AsOf:        s.End().UTC(),
		Horizon:     horizon,
		Points:      make([]ForecastPoint, horizon),
		Backtest: Backtest{
			Origins:        origins,
			OriginStep:     OriginStep,
			MASE:           scores[best].MASE,
			ReferenceModel: models[0].name,
			ReferenceMASE:  scores[0].MASE,
			PoolSteps:      2*pool + 1,
			Candidates:     scores,
			Errors:         bestErrs,
		},
	}
	actuals := make([][]float64, origins)
	for j := range actuals {
		o := originAt(n, horizon, j)
		actuals[j] = y[o : o+horizon]
	}
	f.Backtest.Coverage80, f.Backtest.Coverage95 = looCoverage(bestErrs, bestFc, actuals, pool)
	buf := make([]float64, 0, origins*(2*pool+1))
	for i := range f.Points {
		e := pooled(buf[:0], bestErrs, nil, i, pool)
		v := point[i]
		w := widening(origins)
		f.Points[i] = ForecastPoint{
			Hour:  f.AsOf.Add(time.Duration(i) * time.Hour),
			Value: v,
			Lo80:  max(0, v+w*quantile(e, 0.10)),
			Hi80:  max(0, v+w*quantile(e, 0.90)),
			Lo95:  max(0, v+w*quantile(e, 0.025)),
			Hi95:  max(0, v+w*quantile(e, 0.975)),
		}
	}
	return f, nil
}

// Predict reproduces a forecast's point values from its model and parameters, without fitting
// or backtesting: Predict(s, f.Model, f.Params, f.Horizon) equals f's values for the series f
// was made from. A replay uses it to check a recorded forecast.
func Predict(s Series, modelName string, params []Param, horizon int) ([]float64, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	if horizon < 1 || horizon > MaxHorizon {
		return nil, fmt.Errorf("%w: %d hours, want 1 to %d", ErrBadHorizon, horizon, MaxHorizon)
	}
	m, err := modelByName(modelName)
	if err != nil {
		return nil, err
	}
	if len(s.Values) < m.minTrain {
		return nil, fmt.Errorf("%w: %s needs %d hours", ErrShortSeries, m.name, m.minTrain)
	}
	if len(params) != len(m.params) {
		return nil, fmt.Errorf("%w: %s takes %d", ErrBadParams, m.name, len(m.params))
	}
	p := make([]float64, len(params))
	for i, prm := range params {
		if prm.Name != m.params[i] || math.IsNaN(prm.Value) || math.IsInf(prm.Value, 0) {
			return nil, fmt.Errorf("%w: %s", ErrBadParams, m.name)
		}
		p[i] = prm.Value
	}
	y, _ := adjusted(s.Values)
	return clampNonNegative(m.predict(newHistory(y), p, horizon)), nil
}

func namedParams(m model, p []float64) []Param {
	out := make([]Param, len(p))
	for i, v := range p {
		out[i] = Param{Name: m.params[i], Value: v}
	}
	return out
}

// originAt is the training length of backtest origin j.
func originAt(n, horizon, j int) int { return n - horizon - j*OriginStep }

// maseScale is the weekly seasonal naive's in-sample mean absolute error on y. A series that
// repeats exactly every week has none; then the scale is the mean absolute value, and 1 for an
// all-zero history, so that MASE stays finite and still orders the models.
func maseScale(y []float64) float64 {
	var sum float64
	for t := WeekHours; t < len(y); t++ {
		sum += math.Abs(y[t] - y[t-WeekHours])
	}
	if sum > 0 {
		return sum / float64(len(y)-WeekHours)
	}
	var abs float64
	for _, v := range y {
		abs += v
	}
	if abs > 0 {
		return abs / float64(len(y))
	}
	return 1
}

// backtest fits m at every origin and scores it on the horizon after. It returns the mean
// MASE over the origins, the errors and the forecasts, [origin][step].
func backtest(m model, y []float64, hists []*history, horizon int, scales []float64) (float64, [][]float64, [][]float64) {
	origins := len(hists)
	errs := make([][]float64, origins)
	fcs := make([][]float64, origins)
	var total float64
	for j := range origins {
		hist := hists[j]
		o := len(hist.y)
		fc := clampNonNegative(m.predict(hist, m.fit(hist), horizon))
		e := make([]float64, horizon)
		var abs float64
		for i := range e {
			e[i] = y[o+i] - fc[i]
			abs += math.Abs(e[i])
		}
		errs[j], fcs[j] = e, fc
		total += abs / float64(horizon) / scales[j]
	}
	return total / float64(origins), errs, fcs
}

func clampNonNegative(f []float64) []float64 {
	for i, v := range f {
		if v < 0 || math.IsNaN(v) {
			f[i] = 0
		}
	}
	return f
}

// poolHalfWidth is how many steps on each side of a step its interval pools (see minPool).
func poolHalfWidth(origins, horizon int) int {
	w := minPool / origins / 2 // 2w+1 ≥ minPool/origins steps
	return max(0, min(w, (horizon-1)/2))
}

// pooled appends to dst the errors of the steps around step (a window of 2·half+1 steps, moved
// inward at the ends of the horizon) from every origin except skip, and sorts them.
func pooled(dst []float64, errs [][]float64, skip []bool, step, half int) []float64 {
	horizon := len(errs[0])
	lo := max(0, min(step-half, horizon-1-2*half))
	hi := min(horizon-1, lo+2*half)
	for j, e := range errs {
		if skip != nil && skip[j] {
			continue
		}
		dst = append(dst, e[lo:hi+1]...)
	}
	slices.Sort(dst)
	return dst
}

// quantile is the p-quantile of sorted v, interpolated between order statistics (Hyndman and
// Fan's type 7, R's default).
func quantile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	h := p * float64(len(v)-1)
	i := int(h)
	if i+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[i] + (h-float64(i))*(v[i+1]-v[i])
}

// looCoverage measures the intervals' coverage in the backtest: each origin's actuals against
// intervals built from the other origins' errors, as a new forecast's would be.
func looCoverage(errs, fcs, actuals [][]float64, half int) (c80, c95 float64) {
	if len(errs) < 2 {
		return 0, 0
	}
	skip := make([]bool, len(errs))
	w := widening(len(errs) - 1)
	var in80, in95, total int
	var buf []float64
	for j := range errs {
		skip[j] = true
		for i := range errs[j] {
			buf = pooled(buf[:0], errs, skip, i, half)
			f, actual := fcs[j][i], actuals[j][i]
			if inside(actual, f, w, buf, 0.10, 0.90) {
				in80++
			}
			if inside(actual, f, w, buf, 0.025, 0.975) {
				in95++
			}
			total++
		}
		skip[j] = false
	}
	return float64(in80) / float64(total), float64(in95) / float64(total)
}

func inside(actual, f, w float64, sorted []float64, lo, hi float64) bool {
	return actual >= max(0, f+w*quantile(sorted, lo)) && actual <= max(0, f+w*quantile(sorted, hi))
}

// widening is the factor backtest errors are scaled by before their quantiles bound an
// interval: √(1 + 1/k) for k origins. An origin's errors move together (a level a little off
// stays off for the whole horizon), so the pooled errors hold about k independent draws, not
// hundreds, and quantiles of so few draws are too narrow for the next one; √(1 + 1/k) is the
// factor by which a new observation's spread exceeds that of a sample of k around its own
// estimated centre. The backtest coverage is measured with the same rule (k − 1 origins).
func widening(origins int) float64 { return math.Sqrt(1 + 1/float64(max(1, origins))) }
