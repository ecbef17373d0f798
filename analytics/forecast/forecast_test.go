package forecast

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"
)

func benchLikeSeries(t *testing.T, days int, seed uint64) Series {
	t.Helper()
	return Synthetic{Hours: days * DayHours, Base: 800, TrendPerWeek: 0.04, DailyAmp: 0.5,
		WeekendFactor: 0.6, Noise: 0.1, Holidays: 1, HolidayFactor: 0.3, Seed: seed}.Generate()
}

// The same series gives the same forecast, and its JSON (what an event carries) is the same
// bytes: a replay must reproduce a recorded forecast exactly.
func TestDeterministic(t *testing.T) {
	s := benchLikeSeries(t, 40, 11)
	a, err := Make(s, 96)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Make(Series{Start: s.Start, Values: append([]float64(nil), s.Values...)}, 96)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two forecasts of the same series differ")
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatal("two forecasts of the same series encode differently")
	}
}

// A forecast as of a time sees nothing after it: changing the later hours changes nothing,
// and the forecast says which hours it was made from.
func TestAsOfIgnoresLaterHours(t *testing.T) {
	s := benchLikeSeries(t, 45, 5)
	asOf := s.Start.Add(38 * DayHours * time.Hour)
	before, err := Make(s.Until(asOf), 168)
	if err != nil {
		t.Fatal(err)
	}
	changed := Series{Start: s.Start, Values: append([]float64(nil), s.Values...)}
	for i := 38 * DayHours; i < len(changed.Values); i++ {
		changed.Values[i] *= 3
	}
	after, err := Make(changed.Until(asOf), 168)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatal("hours after the as-of time changed the forecast")
	}
	if !before.AsOf.Equal(asOf) || before.SeriesHours != 38*DayHours || !before.Points[0].Hour.Equal(asOf) {
		t.Fatalf("as of %v: forecast says as of %v from %d hours, first point %v", asOf, before.AsOf, before.SeriesHours, before.Points[0].Hour)
	}
}

// Predict reproduces every model's forecast from its parameters after a round trip through
// JSON, and Make's chosen forecast from the parameters it reports, level shift included.
func TestPredictReproducesFromParameters(t *testing.T) {
	s := benchLikeSeries(t, 40, 21)
	for _, m := range candidates() {
		params := namedParams(m, m.fit(newHistory(s.Values)))
		raw, err := json.Marshal(params)
		if err != nil {
			t.Fatal(err)
		}
		var decoded []Param
		if err := json.Unmarshal(raw, &decoded); err != nil {
			t.Fatal(err)
		}
		got, err := Predict(s, m.name, decoded, 72)
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		hist := newHistory(s.Values)
		want := clampNonNegative(m.predict(hist, m.fit(hist), 72))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Predict from decoded parameters differs from the fitted forecast", m.name)
		}
	}
	shifted := Synthetic{Hours: 40 * DayHours, Base: 300, DailyAmp: 0.5, WeekendFactor: 0.6, Noise: 0.05,
		ShiftAt: 30 * DayHours, ShiftBy: 0.6, Seed: 4}.Generate()
	for _, s := range []Series{s, shifted} {
		f, err := Make(s, 72)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Predict(s, f.Model, f.Params, f.Horizon)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range f.Points {
			if got[i] != p.Value {
				t.Fatalf("%s hour %d: Predict %v, forecast %v", f.Model, i, got[i], p.Value)
			}
		}
	}
	if f, _ := Make(shifted, 72); f.LevelShift == nil || f.LevelShift.Hour != 30*DayHours {
		t.Fatalf("the 40%% drop at day 30 is not the forecast's level shift: %+v", f.LevelShift)
	}
}

// Every forecast is well formed: as many points as hours asked for, on consecutive hours, no
// negative values, Lo95 ≤ Lo80 ≤ Hi80 ≤ Hi95, and the backtest's numbers in range.
func TestForecastShape(t *testing.T) {
	for _, fam := range families() {
		g := fam.gen
		g.Seed, g.Hours = 9, 30*DayHours
		g.ShiftAt = min(g.ShiftAt, 20*DayHours)
		s := g.Generate()
		f, err := Make(s, 100)
		if err != nil {
			t.Fatalf("%s: %v", fam.name, err)
		}
		if len(f.Points) != 100 || f.Horizon != 100 || f.SeriesHours != len(s.Values) {
			t.Fatalf("%s: %d points for a 100-hour horizon", fam.name, len(f.Points))
		}
		for i, p := range f.Points {
			if !p.Hour.Equal(s.End().Add(time.Duration(i)*time.Hour)) || p.Value < 0 || p.Lo95 < 0 ||
				p.Lo95 > p.Lo80 || p.Lo80 > p.Hi80 || p.Hi80 > p.Hi95 {
				t.Fatalf("%s hour %d: %+v", fam.name, i, p)
			}
		}
		b := f.Backtest
		if b.Origins < 2 || b.Origins > MaxOrigins || len(b.Errors) != b.Origins || b.MASE > b.ReferenceMASE ||
			b.Coverage80 <= 0 || b.Coverage80 > b.Coverage95 || b.Coverage95 > 1 || len(b.Candidates) != len(candidates()) {
			t.Fatalf("%s: backtest %+v", fam.name, b)
		}
	}
}

func TestValidation(t *testing.T) {
	ok := benchLikeSeries(t, 30, 1)
	with := func(i int, v float64) Series {
		s := Series{Start: ok.Start, Values: append([]float64(nil), ok.Values...)}
		s.Values[i] = v
		return s
	}
	short := Series{Start: ok.Start, Values: ok.Values[:MinSeriesHours(168)-1]}
	cases := []struct {
		name    string
		s       Series
		horizon int
		want    error
	}{
		{"empty", Series{Start: ok.Start}, 168, ErrEmptySeries},
		{"one hour short", short, 168, ErrShortSeries},
		{"NaN", with(10, math.NaN()), 168, ErrBadValue},
		{"+Inf", with(10, math.Inf(1)), 168, ErrBadValue},
		{"negative", with(10, -1), 168, ErrBadValue},
		{"above MaxValue", with(10, MaxValue*2), 168, ErrBadValue},
		{"start off the hour", Series{Start: ok.Start.Add(time.Minute), Values: ok.Values}, 168, ErrStartNotHour},
		{"zero horizon", ok, 0, ErrBadHorizon},
		{"negative horizon", ok, -168, ErrBadHorizon},
		{"horizon over a year", ok, MaxHorizon + 1, ErrBadHorizon},
		{"longer than five years", Series{Start: ok.Start, Values: make([]float64, MaxSeriesHours+1)}, 168, ErrLongSeries},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Make(c.s, c.horizon); !errors.Is(err, c.want) {
				t.Fatalf("Make: %v, want %v", err, c.want)
			}
		})
	}
	if _, err := Make(Series{Start: ok.Start, Values: ok.Values[:MinSeriesHours(168)]}, 168); err != nil {
		t.Fatalf("the minimum length is refused: %v", err)
	}
	if _, err := Predict(ok, "arima", nil, 24); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("Predict with an unknown model: %v", err)
	}
	if _, err := Predict(ok, ModelHolt, []Param{{Name: "alpha", Value: 0.1}}, 24); !errors.Is(err, ErrBadParams) {
		t.Fatalf("Predict with a missing parameter: %v", err)
	}
	if _, err := Predict(ok, ModelHolt, []Param{{Name: "alpha", Value: math.NaN()}, {Name: "beta", Value: 0.1}}, 24); !errors.Is(err, ErrBadParams) {
		t.Fatalf("Predict with a NaN parameter: %v", err)
	}
	if _, err := FromPoints(ok.Start, ok.Start.Add(time.Hour), []Point{{Hour: ok.Start.Add(time.Hour), Value: 1}}); !errors.Is(err, ErrPointOutside) {
		t.Fatalf("FromPoints with a point past the range: %v", err)
	}
}

// Degenerate and extreme series still give a finite forecast that encodes as JSON: nothing
// at all, a constant, one spike, values at the bound, a series that stops dead.
func TestExtremeSeries(t *testing.T) {
	const hours = 30 * DayHours
	fill := func(f func(i int) float64) Series {
		v := make([]float64, hours)
		for i := range v {
			v[i] = f(i)
		}
		return Series{Start: SyntheticStart, Values: v}
	}
	cases := map[string]Series{
		"all zero": fill(func(int) float64 { return 0 }),
		"constant": fill(func(int) float64 { return 42 }),
		"one spike": fill(func(i int) float64 {
			if i == hours-30 {
				return MaxValue
			}
			return 1
		}),
		"at the bound": fill(func(i int) float64 { return MaxValue * float64(i%2) }),
		"stops dead":   fill(func(i int) float64 { return float64(1000 * min(1, max(0, hours-100-i))) }),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := Make(s, 168)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := json.Marshal(f); err != nil {
				t.Fatalf("forecast does not encode: %v", err)
			}
			for i, p := range f.Points {
				if p.Value < 0 || p.Value > 1e17 || p.Hi95 > 1e17 {
					t.Fatalf("hour %d: %+v", i, p)
				}
			}
			if _, err := f.Crossing(MaxValue, 0.5); err != nil {
				t.Fatal(err)
			}
		})
	}
	zero, _ := Make(cases["all zero"], 168)
	for _, p := range zero.Points {
		if p.Value != 0 || p.Hi95 != 0 {
			t.Fatalf("an all-zero history forecasts %+v", p)
		}
	}
}

// Hours without points are zeros and points of one hour add up.
func TestFromPoints(t *testing.T) {
	from := SyntheticStart
	s, err := FromPoints(from, from.Add(4*time.Hour), []Point{
		{Hour: from.Add(time.Hour), Value: 2}, {Hour: from.Add(time.Hour), Value: 3}, {Hour: from.Add(3 * time.Hour), Value: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0, 5, 0, 1}; !reflect.DeepEqual(s.Values, want) {
		t.Fatalf("values %v, want %v", s.Values, want)
	}
}

func TestCrossing(t *testing.T) {
	s := benchLikeSeries(t, 45, 3)
	f, err := Make(s, 168)
	if err != nil {
		t.Fatal(err)
	}
	var peak float64
	for _, p := range f.Points {
		peak = max(peak, p.Value)
	}
	// Below every hour's lower 95% bound: the first hour already exceeds it, almost surely.
	low, err := f.Crossing(0, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if !low.Found || low.Step != 0 || low.Probability < 0.9 {
		t.Fatalf("threshold 0: %+v", low)
	}
	// Far above the highest 95% bound: never, and no hour comes close.
	high, err := f.Crossing(10*peak, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if high.Found || high.PeakProbability != 0 {
		t.Fatalf("threshold 10× the peak: %+v", high)
	}
	// At the peak forecast: found, no earlier than some hour below it, and a higher
	// threshold is crossed no earlier and with no more probability at its peak.
	mid, err := f.Crossing(0.9*peak, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if !mid.Found || mid.Probability < 0.5 || f.Points[mid.Step].Hour != mid.Hour {
		t.Fatalf("threshold 0.9× the peak: %+v", mid)
	}
	higher, err := f.Crossing(1.1*peak, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if (higher.Found && higher.Step < mid.Step) || higher.PeakProbability > mid.PeakProbability {
		t.Fatalf("a higher threshold crossed sooner or likelier: %+v vs %+v", higher, mid)
	}
	for _, bad := range [][2]float64{{math.NaN(), 0.5}, {-1, 0.5}, {100, 0}, {100, 1.5}, {math.Inf(1), 0.5}} {
		if _, err := f.Crossing(bad[0], bad[1]); !errors.Is(err, ErrBadThreshold) {
			t.Fatalf("Crossing(%v, %v): %v", bad[0], bad[1], err)
		}
	}
	if _, err := (Forecast{Points: f.Points}).Crossing(100, 0.5); !errors.Is(err, ErrNoBacktestErr) {
		t.Fatalf("Crossing without errors: %v", err)
	}
}

// The harness `tunnelplane bench analytics` calls, on one series.
func TestMsPerSeries(t *testing.T) {
	ms, err := MsPerSeries(BenchSeries(1), 168)
	if err != nil || ms <= 0 {
		t.Fatalf("MsPerSeries: %v ms, %v", ms, err)
	}
	if _, err := MsPerSeries(nil, 168); !errors.Is(err, ErrEmptySeries) {
		t.Fatalf("MsPerSeries of nothing: %v", err)
	}
}

// BenchmarkForecast is one forecast of 90 days of hourly history, a week ahead, backtest
// included: forecast_ms_per_series.
func BenchmarkForecast(b *testing.B) {
	series := BenchSeries(8)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := Make(series[i%len(series)], 168); err != nil {
			b.Fatal(err)
		}
	}
}
