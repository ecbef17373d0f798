package node

import (
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

type usageKey struct{ org, tunnel string }

type usageAcc struct {
	requests          int64
	errors            map[string]int64
	bytesIn, bytesOut int64
	ttfb              [domain.HistogramBuckets]int64
}

// usage aggregates requests per tunnel over the current window. One mutex for all tunnels: an
// update is a few additions, far cheaper than anything else a request does.
type usage struct {
	mu    sync.Mutex
	start time.Time
	acc   map[usageKey]*usageAcc
}

func newUsage(now time.Time) *usage { return &usage{start: now, acc: map[usageKey]*usageAcc{}} }

func (u *usage) record(org, tunnel, class string, latency time.Duration, in, out int64) {
	b := domain.HistogramIndex(latency)
	k := usageKey{org, tunnel}
	u.mu.Lock()
	a := u.acc[k]
	if a == nil {
		a = &usageAcc{}
		u.acc[k] = a
	}
	a.requests++
	if class != "" {
		if a.errors == nil {
			a.errors = map[string]int64{}
		}
		a.errors[class]++
	}
	a.bytesIn += in
	a.bytesOut += out
	a.ttfb[b]++
	u.mu.Unlock()
}

// flush closes the window at now and returns one fact per tunnel that saw requests in it.
func (u *usage) flush(nodeID string, now time.Time) []domain.UsageRecorded {
	u.mu.Lock()
	acc, start := u.acc, u.start
	u.acc, u.start = map[usageKey]*usageAcc{}, now
	u.mu.Unlock()
	out := make([]domain.UsageRecorded, 0, len(acc))
	for k, a := range acc {
		if a.requests == 0 {
			continue
		}
		out = append(out, domain.UsageRecorded{
			NodeID: nodeID, OrgID: k.org, TunnelID: k.tunnel, WindowStart: start.UTC(), WindowEnd: now.UTC(),
			Requests: a.requests, Errors: a.errors, BytesIn: a.bytesIn, BytesOut: a.bytesOut, TTFB: domain.HistogramOf(&a.ttfb),
		})
	}
	return out
}
