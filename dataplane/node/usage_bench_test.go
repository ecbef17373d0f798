package node

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkUsageCall is what the usage windows add to one ingress call: begin and end, from
// parallel callers of one (tunnel, caller) account, as the c=64 bench drives it.
func BenchmarkUsageCall(b *testing.B) {
	u := newUsage(time.Now(), 10000, prometheus.NewCounter(prometheus.CounterOpts{Name: "overflow"}))
	r, p := Route{OrgID: "org-1", TunnelID: "tun-1"}, Principal{UserID: "bench"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rs := &reqState{route: r}
			start := time.Now()
			u.begin(rs, p, start)
			now := time.Now()
			u.end(rs, now, now.Sub(start)+time.Millisecond, 500*time.Microsecond)
		}
	})
}

// BenchmarkUsageCallSerial is begin and end alone, from one caller at a time, without reading
// the clock (the ingress reads it twice per call anyway): their own cost, uncontended.
func BenchmarkUsageCallSerial(b *testing.B) {
	u := newUsage(time.Now(), 10000, prometheus.NewCounter(prometheus.CounterOpts{Name: "overflow"}))
	r, p := Route{OrgID: "org-1", TunnelID: "tun-1"}, Principal{UserID: "bench"}
	rs := &reqState{route: r}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		u.begin(rs, p, now)
		now = now.Add(time.Millisecond)
		u.end(rs, now, time.Millisecond, 500*time.Microsecond)
	}
}
