package forecast

import (
	"math"
	"math/rand/v2"
	"time"
)

// Synthetic describes an hourly usage series with a known structure. The accuracy tests and
// `tunnelplane bench analytics` generate their series from it; the same description and seed
// always give the same series (for one Go version: math/rand/v2's PCG and its normal sampler).
type Synthetic struct {
	Hours int
	// Base is the mean usage per hour at the start; TrendPerWeek the fraction of Base added
	// every week (linear).
	Base         float64
	TrendPerWeek float64
	// DailyAmp scales the daily profile (a daytime peak around 14:00 and a smaller morning
	// one); WeekendFactor multiplies Saturdays and Sundays (the series starts on a Monday).
	DailyAmp      float64
	WeekendFactor float64
	// Noise is the standard deviation of multiplicative Gaussian noise. Counts instead draws
	// every hour from a Poisson distribution around its mean: at a low Base that is an
	// intermittent series, mostly zeros.
	Noise  float64
	Counts bool
	// Holidays days, placed at random, run at HolidayFactor of their usual usage.
	Holidays      int
	HolidayFactor float64
	// From hour ShiftAt on (0: never) the level is multiplied by ShiftBy.
	ShiftAt int
	ShiftBy float64
	Seed    uint64
}

// SyntheticStart is the first hour of generated series: a Monday, 00:00 UTC.
var SyntheticStart = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

// Generate returns the series.
func (g Synthetic) Generate() Series {
	rng := rand.New(rand.NewPCG(g.Seed, 0x7f4a7c15))
	days := (g.Hours + DayHours - 1) / DayHours
	holiday := make([]bool, days)
	for range g.Holidays {
		holiday[rng.IntN(days)] = true
	}
	v := make([]float64, g.Hours)
	for t := range v {
		level := g.Base * (1 + g.TrendPerWeek*float64(t)/WeekHours)
		if g.ShiftAt > 0 && t >= g.ShiftAt {
			level *= g.ShiftBy
		}
		h := float64(t % DayHours)
		shape := 1 + g.DailyAmp*(math.Cos(2*math.Pi*(h-14)/DayHours)+0.4*math.Cos(2*math.Pi*(h-9)/12))
		mean := level * max(0, shape)
		if d := (t / DayHours) % 7; d >= 5 {
			mean *= g.WeekendFactor
		}
		if holiday[t/DayHours] {
			mean *= g.HolidayFactor
		}
		if g.Counts {
			v[t] = poisson(rng, mean)
			continue
		}
		v[t] = max(0, mean*(1+g.Noise*rng.NormFloat64()))
	}
	return Series{Start: SyntheticStart, Values: v}
}

// poisson draws from a Poisson distribution: by Knuth's product of uniforms for small means,
// by the rounded normal approximation for large ones (where it is close enough for a test).
func poisson(rng *rand.Rand, mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	if mean > 30 {
		return max(0, math.Round(mean+math.Sqrt(mean)*rng.NormFloat64()))
	}
	limit, p, k := math.Exp(-mean), 1.0, 0.0
	for {
		p *= rng.Float64()
		if p <= limit {
			return k
		}
		k++
	}
}
