package stats

import (
	"slices"
	"testing"
	"time"
)

func TestRankStatistics(t *testing.T) {
	t.Parallel()
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"median of none", Median(nil), 0},
		{"median of one", Median([]float64{7}), 7},
		{"median of an odd count, unsorted", Median([]float64{9, 1, 5}), 5},
		{"median of an even count is the mean of the middle two", Median([]float64{4, 1, 3, 2}), 2.5},
		{"upper median of none", UpperMedian([]float64(nil)), 0},
		{"upper median of an odd count, unsorted", UpperMedian([]float64{9, 1, 5}), 5},
		{"upper median of an even count is the upper middle", UpperMedian([]float64{4, 1, 3, 2}), 3},
		{"upper median of two", UpperMedian([]float64{60, 10}), 60},
		{"quantile of none", Quantile([]float64(nil), .5), 0},
		{"quantile 0 is the minimum", Quantile(ten, 0), 1},
		{"quantile 1 is the maximum", Quantile(ten, 1), 10},
		{"quantile .5 of ten is the sixth", Quantile(ten, .5), 6},
		{"quantile .95 of ten rounds to the last", Quantile(ten, .95), 10},
		{"quantile .9 of ten", Quantile(ten, .9), 9},
		{"quantile of one", Quantile([]float64{3}, .99), 3},
		{"percentile of none", Percentile([]float64(nil), .5), 0},
		{"percentile .5 of ten is the fifth", Percentile(ten, .5), 5},
		{"percentile .5 of four is the lower middle", Percentile([]float64{1, 2, 3, 4}, .5), 2},
		{"percentile .99 of ten is the last", Percentile(ten, .99), 10},
		{"percentile .9 of ten is the ninth", Percentile(ten, .9), 9},
		{"percentile 0 clamps to the first", Percentile(ten, 0), 1},
		{"percentile 1 is the last", Percentile(ten, 1), 10},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.name, c.got, c.want)
		}
	}
}

// The benches hand these their own sample slices: a statistic must not reorder them.
func TestInputsAreLeftAsTheyWere(t *testing.T) {
	t.Parallel()
	xs := []float64{3, 1, 2, 5, 4}
	orig := slices.Clone(xs)
	_, _, _ = Median(xs), UpperMedian(xs), Sorted(xs)
	if !slices.Equal(xs, orig) {
		t.Fatalf("input changed to %v", xs)
	}
	if s := Sorted(xs); !slices.Equal(s, []float64{1, 2, 3, 4, 5}) {
		t.Fatalf("sorted %v", s)
	}
}

// bench api's latencies are durations.
func TestDurations(t *testing.T) {
	t.Parallel()
	d := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond}
	if got := Percentile(Sorted(d), .99); got != 4*time.Millisecond {
		t.Errorf("p99 %v", got)
	}
	if got := Percentile(Sorted(d), .5); got != 2*time.Millisecond {
		t.Errorf("p50 %v", got)
	}
	if got := UpperMedian(d); got != 3*time.Millisecond {
		t.Errorf("upper median %v", got)
	}
}
