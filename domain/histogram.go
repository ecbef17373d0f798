package domain

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Histogram counts durations in log-scaled buckets that merge by adding counts, so a rollup's
// percentiles come from merged buckets, never from averaging percentiles.
//
// The layout is Prometheus's native histogram at schema 3, in microseconds: bucket i holds
// values v with 2^((i-1)/8) < v ≤ 2^(i/8) µs (a growth factor γ = 2^(1/8) ≈ 1.0905); values
// below 1 µs count in bucket 0. A quantile is reported as the bucket's representative value
// 2γ^i/(γ+1), whose relative error against any value in the bucket is at most
// (γ-1)/(γ+1) ≈ 4.3%. Counts are stored densely from Offset (the first bucket's index).
type Histogram struct {
	Offset int     `json:"offset"`
	Counts []int64 `json:"counts"`
}

// HistogramBuckets is the number of buckets: index 0 … HistogramBuckets-1 covers up to
// 2^(HistogramMaxIndex/8) µs ≈ 19 hours; longer values count in the last bucket.
const (
	HistogramMaxIndex = 8 * 36
	HistogramBuckets  = HistogramMaxIndex + 1
)

// HistogramGrowth is γ, the ratio between consecutive bucket bounds.
var HistogramGrowth = math.Pow(2, 1.0/8)

// HistogramRelativeError is the largest relative error of a reported quantile, (γ-1)/(γ+1).
var HistogramRelativeError = (HistogramGrowth - 1) / (HistogramGrowth + 1)

// ErrInvalidHistogram is returned for a histogram no node could have produced.
var ErrInvalidHistogram = errors.New("invalid histogram")

// subOctave[k] = 2^(k/8): the bounds of the eight buckets inside one power of two.
var subOctave = func() [9]float64 {
	var s [9]float64
	for k := range s {
		s[k] = math.Pow(2, float64(k)/8)
	}
	return s
}()

// HistogramIndex is the bucket of a duration.
func HistogramIndex(d time.Duration) int {
	us := d.Microseconds()
	if us <= 1 {
		return 0
	}
	e := bits.Len64(uint64(us)) - 1 // 2^e ≤ us < 2^(e+1)
	frac := float64(us) / float64(uint64(1)<<e)
	k := 0
	for k < 8 && frac > subOctave[k] {
		k++
	}
	i := 8*e + k
	if i > HistogramMaxIndex {
		return HistogramMaxIndex
	}
	return i
}

// HistogramUpper is bucket i's upper bound.
func HistogramUpper(i int) time.Duration {
	return time.Duration(math.Pow(2, float64(i)/8) * float64(time.Microsecond))
}

// HistogramOf makes the dense wire form of a full array of counts (nil when all are zero).
func HistogramOf(counts *[HistogramBuckets]int64) *Histogram {
	lo, hi := -1, -1
	for i, c := range counts {
		if c != 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if lo < 0 {
		return nil
	}
	return &Histogram{Offset: lo, Counts: append([]int64(nil), counts[lo:hi+1]...)}
}

// Validate checks what a hostile reporter could send: indexes within the layout, no negative
// counts, and a total that cannot overflow.
func (h *Histogram) Validate() error {
	if h == nil {
		return nil
	}
	if h.Offset < 0 || h.Offset > HistogramMaxIndex || len(h.Counts) > HistogramBuckets-h.Offset {
		return fmt.Errorf("%w: buckets %d..%d outside 0..%d", ErrInvalidHistogram, h.Offset, h.Offset+len(h.Counts)-1, HistogramMaxIndex)
	}
	var total int64
	for _, c := range h.Counts {
		if c < 0 || c > math.MaxInt64-total {
			return fmt.Errorf("%w: a count is negative or the total overflows", ErrInvalidHistogram)
		}
		total += c
	}
	return nil
}

// AddTo adds h's counts into a full array (h must be valid).
func (h *Histogram) AddTo(counts *[HistogramBuckets]int64) {
	if h == nil {
		return
	}
	for i, c := range h.Counts {
		counts[h.Offset+i] += c
	}
}

// Count is the number of values counted.
func (h *Histogram) Count() int64 {
	if h == nil {
		return 0
	}
	var n int64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// HistogramQuantile is the q-quantile (0 < q ≤ 1) of full counts: the representative value of
// the bucket holding the value of rank ceil(q·n), 0 when nothing was counted.
func HistogramQuantile(counts *[HistogramBuckets]int64, q float64) time.Duration {
	var n int64
	for _, c := range counts {
		n += c
	}
	if n == 0 || q <= 0 || q > 1 || math.IsNaN(q) {
		return 0
	}
	rank := int64(math.Ceil(q * float64(n)))
	var seen int64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			if i == 0 {
				return time.Microsecond
			}
			rep := 2 * math.Pow(2, float64(i)/8) / (HistogramGrowth + 1)
			return time.Duration(rep * float64(time.Microsecond))
		}
	}
	return 0
}
