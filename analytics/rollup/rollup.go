// Package rollup turns the hourly usage rows of the read model (projections/readmodels) into the
// buckets the analytics API serves: hours, and days, ISO weeks and months in an organization's
// time zone, with percentiles from merged histogram buckets; and the capacity summary. It reads
// nothing itself and owns no state: the API hands it rows.
package rollup

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Granularity is the length of a bucket.
type Granularity string

// Granularities.
const (
	Hour  Granularity = "hour"
	Day   Granularity = "day"
	Week  Granularity = "week" // ISO 8601: Monday to Sunday
	Month Granularity = "month"
)

// ErrGranularity: not one of the granularities.
var ErrGranularity = errors.New("unknown granularity")

// BucketStart is the start of the bucket holding t: the UTC hour, or the local midnight that
// starts t's day, ISO week or month in loc. Days are 23 or 25 hours long across DST changes.
func BucketStart(t time.Time, g Granularity, loc *time.Location) (time.Time, error) {
	if g == Hour {
		return t.UTC().Truncate(time.Hour), nil
	}
	l := t.In(loc)
	y, m, d := l.Date()
	switch g {
	case Day:
		return time.Date(y, m, d, 0, 0, 0, 0, loc), nil
	case Week:
		back := (int(l.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, loc), nil
	case Month:
		return time.Date(y, m, 1, 0, 0, 0, 0, loc), nil
	}
	return time.Time{}, fmt.Errorf("%w: %q", ErrGranularity, g)
}

// BucketEnd is the start of the bucket after the one starting at start.
func BucketEnd(start time.Time, g Granularity, loc *time.Location) time.Time {
	if g == Hour {
		return start.Add(time.Hour)
	}
	l := start.In(loc)
	y, m, d := l.Date()
	switch g {
	case Day:
		return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	case Week:
		return time.Date(y, m, d+7, 0, 0, 0, 0, loc)
	default:
		return time.Date(y, m+1, 1, 0, 0, 0, 0, loc)
	}
}

// Widen is [from, to) widened to whole buckets of g in loc: from back to its bucket's start, to
// on to the end of its bucket.
func Widen(from, to time.Time, g Granularity, loc *time.Location) (time.Time, time.Time, error) {
	f, err := BucketStart(from, g, loc)
	if err != nil {
		return f, f, err
	}
	t, err := BucketStart(to, g, loc)
	if err != nil {
		return f, t, err
	}
	if t.Before(to) {
		t = BucketEnd(t, g, loc)
	}
	return f, t, nil
}

// Bucket is one series' usage over one bucket.
type Bucket struct {
	readmodels.UsageKey
	Start        time.Time        `json:"start"`
	End          time.Time        `json:"end"`
	Hours        int              `json:"hours"` // hours with usage in the bucket
	Requests     int64            `json:"requests"`
	Errors       int64            `json:"errors"`
	ErrorClasses map[string]int64 `json:"error_classes,omitempty"`
	BytesIn      int64            `json:"bytes_in"`
	BytesOut     int64            `json:"bytes_out"`
	Latency      Percentiles      `json:"latency_ms"`
	TTFB         Percentiles      `json:"ttfb_ms"`
	// StreamsMax is the most calls one node had open at once for one tunnel and caller in the
	// bucket; StreamsMean the mean number open over the bucket's length (exact at every scope).
	StreamsMax      int64   `json:"streams_max"`
	StreamsMean     float64 `json:"streams_mean"`
	StreamedSeconds float64 `json:"streamed_seconds"`

	streamedMS int64
	// The merged buckets, sparse (offset and counts): a full array per bucket would cost 4.6 KB
	// of allocation for every hour of an hourly series.
	latency, ttfb domain.Histogram
}

// Percentiles of a merged histogram, in milliseconds (0 when nothing was counted); Count is the
// number of calls the histogram holds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
}

// Aggregate folds hourly rows, ordered by key then hour, into buckets of g in loc, ordered the
// same way.
func Aggregate(rows []readmodels.UsageHour, g Granularity, loc *time.Location) ([]Bucket, error) {
	var out []Bucket
	var cur *Bucket
	for _, h := range rows {
		start, err := BucketStart(h.Hour, g, loc)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.UsageKey != h.UsageKey || !cur.Start.Equal(start) {
			out = append(out, Bucket{UsageKey: h.UsageKey, Start: start, End: BucketEnd(start, g, loc)})
			cur = &out[len(out)-1]
		}
		cur.add(h)
	}
	var scratch [domain.HistogramBuckets]int64
	for i := range out {
		out[i].finish(&scratch)
	}
	return out, nil
}

// Totals folds each key's hourly rows (ordered by key then hour) into one bucket spanning
// [from, to): the key's totals and percentiles over the whole range.
func Totals(rows []readmodels.UsageHour, from, to time.Time) []Bucket {
	var out []Bucket
	for _, h := range rows {
		if len(out) == 0 || out[len(out)-1].UsageKey != h.UsageKey {
			out = append(out, Bucket{UsageKey: h.UsageKey, Start: from, End: to})
		}
		out[len(out)-1].add(h)
	}
	var scratch [domain.HistogramBuckets]int64
	for i := range out {
		out[i].finish(&scratch)
	}
	return out
}

// StreamedMS is the bucket's exact streamed time in milliseconds.
func (b *Bucket) StreamedMS() int64 { return b.streamedMS }

func (b *Bucket) add(h readmodels.UsageHour) {
	b.Hours++
	b.Requests += h.Requests
	b.Errors += h.Errors
	for c, n := range h.ErrorClasses {
		if b.ErrorClasses == nil {
			b.ErrorClasses = map[string]int64{}
		}
		b.ErrorClasses[c] += n
	}
	b.BytesIn += h.BytesIn
	b.BytesOut += h.BytesOut
	b.StreamsMax = max(b.StreamsMax, h.StreamsMax)
	b.streamedMS += h.StreamedMS
	mergeSparse(&b.latency, h.Latency)
	mergeSparse(&b.ttfb, h.TTFB)
}

// mergeSparse adds src into dst, widening dst's range as needed (both within the layout).
func mergeSparse(dst, src *domain.Histogram) {
	if src == nil || len(src.Counts) == 0 {
		return
	}
	if len(dst.Counts) == 0 {
		dst.Offset, dst.Counts = src.Offset, append([]int64(nil), src.Counts...)
		return
	}
	lo, hi := min(dst.Offset, src.Offset), max(dst.Offset+len(dst.Counts), src.Offset+len(src.Counts))
	if lo != dst.Offset || hi != dst.Offset+len(dst.Counts) {
		grown := make([]int64, hi-lo)
		copy(grown[dst.Offset-lo:], dst.Counts)
		dst.Offset, dst.Counts = lo, grown
	}
	for i, c := range src.Counts {
		dst.Counts[src.Offset-dst.Offset+i] += c
	}
}

func (b *Bucket) finish(scratch *[domain.HistogramBuckets]int64) {
	b.Latency, b.TTFB = percentiles(scratch, &b.latency), percentiles(scratch, &b.ttfb)
	b.StreamedSeconds = float64(b.streamedMS) / 1000
	b.StreamsMean = float64(b.streamedMS) / float64(b.End.Sub(b.Start).Milliseconds())
}

// percentiles of a sparse histogram, through a full array (cleared again afterwards).
func percentiles(c *[domain.HistogramBuckets]int64, h *domain.Histogram) Percentiles {
	n := h.Count()
	if n == 0 {
		return Percentiles{}
	}
	h.AddTo(c)
	defer clear(c[h.Offset : h.Offset+len(h.Counts)])
	ms := func(q float64) float64 { return float64(domain.HistogramQuantile(c, q)) / float64(time.Millisecond) }
	return Percentiles{Count: n, P50: ms(0.50), P95: ms(0.95), P99: ms(0.99)}
}

// Capacity summarises one series over a range of hours.
type Capacity struct {
	readmodels.UsageKey
	Hours int `json:"hours"` // hours in the range
	// PeakHour is the hour with the most requests.
	PeakHour         *time.Time `json:"peak_hour,omitempty"`
	PeakRequests     int64      `json:"peak_requests"`
	PeakStreamsMax   int64      `json:"peak_streams_max"`
	P95StreamsMax    int64      `json:"p95_hourly_streams_max"` // over every hour of the range, idle ones as 0
	P95StreamsMean   float64    `json:"p95_hourly_streams_mean"`
	NodeCapacity     int64      `json:"node_capacity"`     // streams one node is configured to carry
	Nodes            int        `json:"nodes"`             // nodes in service
	TotalCapacity    int64      `json:"total_capacity"`    // NodeCapacity × Nodes
	Headroom         int64      `json:"headroom"`          // TotalCapacity − P95StreamsMax
	HeadroomFraction float64    `json:"headroom_fraction"` // Headroom / TotalCapacity (0 without capacity)
}

// Capacities summarises each key's hourly rows (ordered by key then hour) over [from, to).
func Capacities(rows []readmodels.UsageHour, from, to time.Time, nodeCapacity int64, nodes int) []Capacity {
	hours := int(to.Sub(from) / time.Hour)
	var out []Capacity
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j].UsageKey == rows[i].UsageKey {
			j++
		}
		out = append(out, capacity(rows[i:j], hours, nodeCapacity, nodes))
		i = j
	}
	return out
}

func capacity(rows []readmodels.UsageHour, hours int, nodeCapacity int64, nodes int) Capacity {
	c := Capacity{UsageKey: rows[0].UsageKey, Hours: hours, NodeCapacity: nodeCapacity, Nodes: nodes, TotalCapacity: nodeCapacity * int64(nodes)}
	maxes := make([]int64, max(hours, len(rows)))
	means := make([]float64, len(maxes))
	for i, h := range rows {
		if c.PeakHour == nil || h.Requests > c.PeakRequests {
			hour := h.Hour
			c.PeakHour, c.PeakRequests = &hour, h.Requests
		}
		c.PeakStreamsMax = max(c.PeakStreamsMax, h.StreamsMax)
		maxes[i], means[i] = h.StreamsMax, float64(h.StreamedMS)/float64(time.Hour.Milliseconds())
	}
	slices.Sort(maxes)
	slices.Sort(means)
	// p95 by nearest rank over every hour of the range.
	rank := (95*len(maxes) + 99) / 100
	if rank > 0 {
		c.P95StreamsMax, c.P95StreamsMean = maxes[rank-1], means[rank-1]
	}
	c.Headroom = c.TotalCapacity - c.P95StreamsMax
	if c.TotalCapacity > 0 {
		c.HeadroomFraction = float64(c.Headroom) / float64(c.TotalCapacity)
	}
	return c
}
