package node

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/domain"
)

// usageKey is one account of a window: a tunnel and a caller (kind and id as in
// domain.UsageRecorded).
type usageKey struct{ org, tunnel, kind, id string }

// callerKey is the account of p's calls to r: its access key, else its user, else anonymous (a
// Principal naming neither: an Authorizer that admits callers it does not identify). An id no
// valid fact could carry (over 128 bytes) goes to the tunnel's overflow account.
func callerKey(r Route, p Principal) usageKey {
	k := usageKey{org: r.OrgID, tunnel: r.TunnelID}
	switch {
	case p.AccessKeyID != "":
		k.kind, k.id = domain.CallerAccessKey, p.AccessKeyID
	case p.UserID != "":
		k.kind, k.id = domain.CallerUser, p.UserID
	default:
		k.kind = domain.CallerAnonymous
	}
	if len(k.id) > 128 {
		k.kind, k.id = domain.CallerOverflow, ""
	}
	return k
}

type usageAcc struct {
	key               usageKey
	requests          int64
	errors            map[string]int64
	bytesIn, bytesOut int64
	// open is the calls open now; streamsMax the most open at once in the window; streamed the
	// time calls were open in the window, summed up to since, when open last changed.
	open, streamsMax int64
	streamed         time.Duration
	since            time.Time
	latency, ttfb    sparseHist
}

// advance adds the open calls' time up to now (a time before since, a call's start read before
// a window began, adds nothing).
func (a *usageAcc) advance(now time.Time) {
	if d := now.Sub(a.since); d > 0 {
		a.streamed += time.Duration(a.open) * d
		a.since = now
	}
}

// sparseHist holds the counts of domain.Histogram buckets from off to off+len(c)-1: the range a
// window's calls touched (a few dozen buckets), not all of them.
type sparseHist struct {
	off int
	c   []int64
}

func (h *sparseHist) add(i int) {
	switch {
	case h.c == nil:
		h.off, h.c = i, make([]int64, 1, 16)
	case i < h.off:
		c := make([]int64, h.off+len(h.c)-i, h.off+len(h.c)-i+8)
		copy(c[h.off-i:], h.c)
		h.off, h.c = i, c
	case i >= h.off+len(h.c):
		h.c = append(h.c, make([]int64, i-h.off-len(h.c)+1)...)
	}
	h.c[i-h.off]++
}

// wire is the fact's form; its first and last counts are not zero.
func (h *sparseHist) wire() *domain.Histogram {
	if h.c == nil {
		return nil
	}
	return &domain.Histogram{Offset: h.off, Counts: h.c}
}

// usage aggregates calls per (tunnel, caller) over the current window. A call is open from
// begin (the request was authorized: it is the tenant's) to end (its response finished or
// failed, a stream or a WebSocket included). One mutex for all accounts: begin is a map lookup
// and a few additions, end a few additions, far cheaper than anything else a request does.
//
// Distinct callers per window are bounded (maxCallers): callers beyond it are summed into their
// tunnel's overflow account and counted in overflow, so hostile callers cannot grow the node's
// memory; the tunnels are bounded by the agents holding them.
type usage struct {
	maxCallers int
	overflow   prometheus.Counter

	mu      sync.Mutex
	start   time.Time // the window's start, on the node's clock (Config.Now)
	cut     time.Time // when the window began, on the monotonic clock of calls' times
	acc     map[usageKey]*usageAcc
	callers int      // accounts in acc other than overflow ones
	open    reqState // sentinel of the list of open calls (open.unext is the first)
}

func newUsage(start time.Time, maxCallers int, overflow prometheus.Counter) *usage {
	u := &usage{maxCallers: maxCallers, overflow: overflow, start: start, cut: time.Now(), acc: map[usageKey]*usageAcc{}}
	u.open.uprev, u.open.unext = &u.open, &u.open
	return u
}

// begin opens rs's call, which started at now, in the account of caller's calls to rs.route.
func (u *usage) begin(rs *reqState, caller Principal, now time.Time) {
	k := callerKey(rs.route, caller)
	overflowed := false
	u.mu.Lock()
	if now.Before(u.cut) {
		now = u.cut // it started before this window began: its earlier time fell in no window's count
	}
	a := u.acc[k]
	if a == nil && k.kind != domain.CallerOverflow && u.callers >= u.maxCallers {
		k.kind, k.id = domain.CallerOverflow, ""
		a = u.acc[k]
		overflowed = true
	}
	if a == nil {
		a = &usageAcc{key: k, since: now}
		u.acc[k] = a
		if k.kind != domain.CallerOverflow {
			u.callers++
		}
	}
	a.advance(now)
	a.open++
	a.streamsMax = max(a.streamsMax, a.open)
	rs.uacc = a
	rs.uprev, rs.unext = u.open.uprev, &u.open
	u.open.uprev.unext = rs
	u.open.uprev = rs
	u.mu.Unlock()
	if overflowed {
		u.overflow.Inc()
	}
}

// end closes rs's call at now: it counts in the window where it ends, with its bytes since the
// last window's end, its whole duration (latency) and, when a response started, its time to the
// first byte (ttfb > 0).
func (u *usage) end(rs *reqState, now time.Time, latency, ttfb time.Duration) {
	li := domain.HistogramIndex(latency)
	ti := -1
	if ttfb > 0 {
		ti = domain.HistogramIndex(ttfb)
	}
	in, out := rs.bytesIn.Load(), rs.bytesOut.Load()
	u.mu.Lock()
	a := rs.uacc
	if a == nil { // not begun, or ended already
		u.mu.Unlock()
		return
	}
	rs.uacc = nil
	rs.uprev.unext, rs.unext.uprev = rs.unext, rs.uprev
	rs.uprev, rs.unext = nil, nil
	a.advance(now)
	a.open--
	a.requests++
	if rs.class != "" {
		if a.errors == nil {
			a.errors = map[string]int64{}
		}
		a.errors[rs.class]++
	}
	a.bytesIn += in - rs.seenIn
	a.bytesOut += out - rs.seenOut
	a.latency.add(li)
	if ti >= 0 {
		a.ttfb.add(ti)
	}
	u.mu.Unlock()
}

// flush closes the window at end (on the node's clock) and returns one fact per account with
// calls in it: calls that ended, and calls still open, whose bytes so far and open time count
// in this window and whose accounts carry into the next.
func (u *usage) flush(nodeID string, end time.Time) []domain.UsageRecorded {
	now := time.Now()
	u.mu.Lock()
	acc, start := u.acc, u.start
	if !end.After(start) {
		// The wall clock stepped back: a window must still end after it starts (Validate), or
		// the ingester refuses the batch holding it.
		end = start.Add(time.Microsecond)
	}
	u.acc, u.start, u.cut, u.callers = make(map[usageKey]*usageAcc, len(acc)), end, now, 0
	for _, a := range acc {
		a.advance(now)
	}
	for rs := u.open.unext; rs != &u.open; rs = rs.unext {
		a := rs.uacc
		in, out := rs.bytesIn.Load(), rs.bytesOut.Load()
		a.bytesIn += in - rs.seenIn
		a.bytesOut += out - rs.seenOut
		rs.seenIn, rs.seenOut = in, out
		next := u.acc[a.key]
		if next == nil {
			next = &usageAcc{key: a.key, since: now}
			u.acc[a.key] = next
			if a.key.kind != domain.CallerOverflow {
				u.callers++
			}
		}
		next.open++
		next.streamsMax = next.open
		rs.uacc = next
	}
	u.mu.Unlock()
	out := make([]domain.UsageRecorded, 0, len(acc))
	for _, a := range acc {
		out = append(out, domain.UsageRecorded{
			NodeID: nodeID, OrgID: a.key.org, TunnelID: a.key.tunnel, WindowStart: start.UTC(), WindowEnd: end.UTC(),
			CallerKind: a.key.kind, CallerID: a.key.id,
			Requests: a.requests, Errors: a.errors, BytesIn: a.bytesIn, BytesOut: a.bytesOut,
			StreamsMax: a.streamsMax, StreamedMS: a.streamed.Milliseconds(),
			Latency: a.latency.wire(), TTFB: a.ttfb.wire(),
		})
	}
	return out
}
