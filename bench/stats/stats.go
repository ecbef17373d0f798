// Package stats is the arithmetic every bench under bench/ reports with: sorted copies, medians
// over rounds and rank statistics of samples. It owns only numbers; it must not measure, print
// or start anything.
//
// The benches grew up with three rank conventions, and the numbers they print are defined by
// them, so each one is kept under its own name:
//
//   - Median: the middle value, or the mean of the two middle values (bench store's rounds);
//   - Quantile: nearest rank over the n−1 gaps, index round(q·(n−1)), so q=.5 of an even count
//     is the upper middle value (bench tunnel's samples, and UpperMedian);
//   - Percentile: the classic nearest rank, the round(q·n)-th smallest value (bench api's
//     latencies).
package stats

import (
	"cmp"
	"slices"
)

// Sorted returns a sorted copy of xs; xs is left as it was.
func Sorted[T cmp.Ordered](xs []T) []T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}

// Median is the middle value of xs, or the mean of the two middle values when their count is
// even; 0 for none. xs need not be sorted.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := Sorted(xs)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// UpperMedian is the middle value of xs, or the upper of the two middle values when their count
// is even (always one of the values, never a mean); the zero value for none. xs need not be
// sorted. It equals Quantile(Sorted(xs), .5).
func UpperMedian[T cmp.Ordered](xs []T) T {
	return Quantile(Sorted(xs), .5)
}

// Quantile is the q-quantile (0 ≤ q ≤ 1) of sorted by nearest rank over the n−1 gaps between
// its values: sorted[round(q·(n−1))]. q=0 is the minimum, q=1 the maximum. The zero value for
// an empty slice.
func Quantile[T cmp.Ordered](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Percentile is the q-th percentile (0 ≤ q ≤ 1) of sorted by nearest rank: the round(q·n)-th
// smallest value, clamped to the first and the last. The zero value for an empty slice.
func Percentile[T cmp.Ordered](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
