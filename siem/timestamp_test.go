package siem

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The RFC 5424 timestamp is what time.AppendFormat writes with its layout, in UTC, fractions
// truncated, from year 0 to 9999 and beyond.
func TestAppendTimestampIsAppendFormat(t *testing.T) {
	t.Parallel()
	times := []time.Time{{}, time.Unix(0, 0), time.Date(2026, 12, 2, 6, 0, 1, 999999999, time.FixedZone("", -7*3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range 10000 {
		times = append(times, time.Unix(rand.Int64N(400_000_000_000)-62_000_000_000, rand.Int64N(1e9)))
	}
	for _, at := range times {
		want := at.UTC().AppendFormat([]byte("x"), timestampLayout)
		if got := appendTimestamp([]byte("x"), at); string(got) != string(want) {
			t.Fatalf("%v: %s, want %s", at, got, want)
		}
	}
}
