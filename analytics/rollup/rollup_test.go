package rollup

import (
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// hours makes one row per UTC hour in [from, to), with requests = 1000 + the hour's index and a
// latency histogram of one call.
func hours(from, to time.Time) []readmodels.UsageHour {
	var out []readmodels.UsageHour
	for i, t := 0, from; t.Before(to); i, t = i+1, t.Add(time.Hour) {
		var lat [domain.HistogramBuckets]int64
		lat[domain.HistogramIndex(time.Duration(i+1)*time.Millisecond)] = 1
		out = append(out, readmodels.UsageHour{UsageKey: readmodels.UsageKey{TunnelID: "t"}, Hour: t, Requests: int64(1000 + i),
			BytesIn: int64(i), StreamedMS: 1800_000, StreamsMax: int64(i % 5), Latency: domain.HistogramOf(&lat)})
	}
	return out
}

// Across both DST changes of 2026 in Berlin, hours land in their local day, the days are 23 and
// 25 hours long, and a day's totals are the sums of its hours; the ISO week starts on Monday.
func TestDaysAndWeeksAcrossDSTInBerlin(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		day        time.Time // local midnight
		hours      int
		weekStart  time.Time
		weekHours  int
		firstUTC   time.Time
		afterUTC   time.Time
		streamMean float64
	}{
		{time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), 23, time.Date(2026, 3, 23, 0, 0, 0, 0, berlin), 167,
			time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC), 0.5},
		{time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), 25, time.Date(2026, 10, 19, 0, 0, 0, 0, berlin), 169,
			time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 23, 0, 0, 0, time.UTC), 0.5},
	} {
		rows := hours(tc.day.AddDate(0, 0, -8), tc.day.AddDate(0, 0, 8))
		var want, wantIn int64
		var inDay []readmodels.UsageHour
		for _, h := range rows {
			if !h.Hour.Before(tc.firstUTC) && h.Hour.Before(tc.afterUTC) {
				want += h.Requests
				wantIn += h.BytesIn
				inDay = append(inDay, h)
			}
		}
		if len(inDay) != tc.hours {
			t.Fatalf("%s: %d UTC hours in the local day, want %d", tc.day, len(inDay), tc.hours)
		}
		days, err := Aggregate(rows, Day, berlin)
		if err != nil {
			t.Fatal(err)
		}
		var got *Bucket
		var sum int64
		for i := range days {
			sum += days[i].Requests
			if days[i].Start.Equal(tc.day) {
				got = &days[i]
			}
		}
		if got == nil {
			t.Fatalf("%s: no day bucket", tc.day)
		}
		if got.Hours != tc.hours || !got.End.Equal(tc.afterUTC) || !got.Start.Equal(tc.firstUTC) || got.Requests != want || got.BytesIn != wantIn {
			t.Errorf("%s: bucket %s..%s hours %d requests %d bytes %d; want %s..%s %d %d %d", tc.day, got.Start.UTC(), got.End.UTC(), got.Hours,
				got.Requests, got.BytesIn, tc.firstUTC, tc.afterUTC, tc.hours, want, wantIn)
		}
		if got.StreamsMean != tc.streamMean || got.Latency.Count != int64(tc.hours) {
			t.Errorf("%s: streams mean %v latency count %d", tc.day, got.StreamsMean, got.Latency.Count)
		}
		var all int64
		for _, h := range rows {
			all += h.Requests
		}
		if sum != all {
			t.Errorf("%s: the days hold %d requests, the hours %d", tc.day, sum, all)
		}
		weeks, err := Aggregate(rows, Week, berlin)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, w := range weeks {
			if w.Start.Equal(tc.weekStart) {
				found = true
				if w.Hours != tc.weekHours || w.Start.In(berlin).Weekday() != time.Monday {
					t.Errorf("%s: week from %s holds %d hours, want %d", tc.day, w.Start, w.Hours, tc.weekHours)
				}
			}
		}
		if !found {
			t.Errorf("%s: no week starting %s", tc.day, tc.weekStart)
		}
	}
}

// Percentiles come from the merged buckets of every hour, not from the hours' percentiles.
func TestPercentilesComeFromMergedBuckets(t *testing.T) {
	rows := hours(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 5, 2, 0, 0, 0, 0, time.UTC)) // 1..24 ms, one call each
	days, err := Aggregate(rows, Day, time.UTC)
	if err != nil || len(days) != 1 {
		t.Fatalf("%v %d", err, len(days))
	}
	// The median of 1..24 ms is the 12th value: 12 ms, within the layout's relative error.
	if p := days[0].Latency.P50; p < 12*(1-domain.HistogramRelativeError) || p > 12*(1+domain.HistogramRelativeError) {
		t.Errorf("p50 %v ms, want 12 ms ± %.1f%%", p, domain.HistogramRelativeError*100)
	}
	if p := days[0].Latency.P99; p < 24*(1-domain.HistogramRelativeError) || p > 24*(1+domain.HistogramRelativeError) {
		t.Errorf("p99 %v ms, want 24 ms", p)
	}
}

func TestCapacityPeakAndP95(t *testing.T) {
	from := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	rows := hours(from, from.Add(100*time.Hour))
	rows[42].Requests = 1e6
	c := Capacities(rows, from, from.Add(100*time.Hour), 10, 3)
	if len(c) != 1 || c[0].PeakHour == nil || !c[0].PeakHour.Equal(rows[42].Hour) || c[0].PeakRequests != 1e6 {
		t.Fatalf("%+v", c)
	}
	// streams max cycles 0..4: 20 hours each, so the 95th of 100 hours is 4; capacity 30.
	if c[0].P95StreamsMax != 4 || c[0].TotalCapacity != 30 || c[0].Headroom != 26 || c[0].P95StreamsMean != 0.5 {
		t.Fatalf("%+v", c[0])
	}
}
