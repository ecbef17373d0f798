package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/tunnelplane/tunnelplane/domain"
)

// CallSink receives batches of call records of the tunnels whose access log is
// domain.AccessLogCalls (Route.Calls). A Config.Sink that does not implement it gets none: the
// calls are counted as dropped. Like Sink it must not block.
type CallSink interface {
	AccessCallsRecorded(domain.AccessCallsRecorded)
}

// callInfo is what a call record keeps of the request, taken when the call began (the request's
// context is gone when a streamed response ends).
type callInfo struct {
	on                     bool // the call is recorded
	at                     time.Time
	kind, id, method, path string
	traceID                string
}

// callLog queues the records of calls to tunnels logging calls until the loop hands them to the
// CallSink in batches of at most batch. The queue is bounded (max): a call that finds it full is
// dropped and counted, in the next batch's Dropped and in
// tunnelplane_node_access_calls_dropped_total. Adding is an append under a mutex: the data path
// never waits for the sink, NATS or the disk.
type callLog struct {
	max, batch int
	dropped    prometheus.Counter

	mu    sync.Mutex
	queue []domain.AccessCall
	lost  int64 // dropped since the last batch
	wake  chan struct{}
}

func newCallLog(max, batch int) *callLog {
	return &callLog{max: max, batch: batch, wake: make(chan struct{}, 1),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_node_access_calls_dropped_total",
			Help: "Calls of tunnels logging calls that the node did not record: its queue of call records (CallQueueMax) was full.",
		})}
}

func (l *callLog) register(r prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	return r.Register(l.dropped)
}

// beginCall takes what the record of rs's call needs from its request: its method and path
// (without the query string, and without the /t/<ref> prefix of path routing), cut to the
// record's bounds.
func beginCall(ctx *fasthttp.RequestCtx, rs *reqState, caller Principal, start time.Time) {
	k := callerKey(rs.route, caller)
	path := ctx.URI().PathOriginal()
	if rs.prefix != "" {
		path = path[min(len(rs.prefix), len(path)):]
	}
	route := "/"
	if len(path) > 0 {
		route = domain.CallRoute(path)
	}
	rs.call = callInfo{on: true, at: start, kind: k.kind, id: k.id, method: callMethod(ctx.Method()), path: route, traceID: rs.traceID()}
}

// callMethod is the method as a record keeps it: the common ones without an allocation.
func callMethod(m []byte) string {
	for _, known := range [...]string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"} {
		if string(m) == known {
			return known
		}
	}
	if s := string(m); domain.ValidCallMethod(s) {
		return s
	}
	return "INVALID"
}

// add queues the record of a finished call.
func (l *callLog) add(c domain.AccessCall) {
	l.mu.Lock()
	if len(l.queue) >= l.max {
		l.lost++
		l.mu.Unlock()
		l.dropped.Inc()
		return
	}
	l.queue = append(l.queue, c)
	full := len(l.queue)%l.batch == 0
	l.mu.Unlock()
	if full {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// maxCallBatchBytes bounds a batch's payload: a node's fact may hold at most
// wire.MaxNodeFactBytes (64 KiB) of payload and metadata.
const maxCallBatchBytes = 48 << 10

// take empties the queue into batches of at most l.batch calls and maxCallBatchBytes of JSON; the
// first carries the drop count (a batch of no calls when only drops are left to tell).
func (l *callLog) take(nodeID string) []domain.AccessCallsRecorded {
	l.mu.Lock()
	q, lost := l.queue, l.lost
	// The batches keep q; the next queue starts as large as this one grew (no regrowth).
	l.queue, l.lost = make([]domain.AccessCall, 0, min(len(q), l.max)), 0
	l.mu.Unlock()
	if len(q) == 0 && lost == 0 {
		return nil
	}
	out := make([]domain.AccessCallsRecorded, 0, len(q)/l.batch+1)
	for len(q) > 0 || lost > 0 {
		n, size := 0, 0
		for n < len(q) && n < l.batch {
			size += callJSONBound(&q[n])
			if n > 0 && size > maxCallBatchBytes {
				break
			}
			n++
		}
		out = append(out, domain.AccessCallsRecorded{NodeID: nodeID, Calls: q[:n:n], Dropped: lost})
		q, lost = q[n:], 0
	}
	return out
}

// callJSONBound is at least the bytes of c's JSON: its fixed members at their longest, and its
// strings with every byte escaped as encoding/json may (<, > and & as \u003c; non-ASCII bytes
// counted twice, for U+2028 and U+2029).
func callJSONBound(c *domain.AccessCall) int {
	return 360 + 16 + len(c.TraceID) + len(c.Method) + jsonStringBound(c.CallerID) + jsonStringBound(c.Route)
}

func jsonStringBound(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '<' || c == '>' || c == '&':
			n += 5
		case c == '"' || c == '\\' || c >= 0x80:
			n++
		}
	}
	return n
}

// recordCall queues the record of rs's call when its tunnel logs calls.
func (n *Node) recordCall(rs *reqState, latency time.Duration) {
	c := &rs.call
	if !c.on {
		return
	}
	n.calls.add(domain.AccessCall{At: c.at.UTC(), OrgID: rs.route.OrgID, TunnelID: rs.route.TunnelID,
		CallerKind: c.kind, CallerID: c.id, Method: c.method, Route: c.path, Status: rs.status,
		BytesIn: rs.bytesIn.Load(), BytesOut: rs.bytesOut.Load(), DurationUS: latency.Microseconds(), TraceID: c.traceID})
}

// callsLoop hands the queued records to the sink every CallFlushInterval, or as soon as a batch
// is full, and the rest when the node stops.
func (n *Node) callsLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.CallFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.emitCalls()
			return
		case <-t.C:
		case <-n.calls.wake:
		}
		n.emitCalls()
	}
}

func (n *Node) emitCalls() {
	sink, ok := n.cfg.Sink.(CallSink)
	for _, b := range n.calls.take(n.cfg.NodeID) {
		if ok {
			sink.AccessCallsRecorded(b)
		}
	}
}

// validateCalls checks the call log's settings (Config.Validate).
func (c Config) validateCalls() error {
	var errs []error
	if c.CallQueueMax < 0 {
		errs = append(errs, fmt.Errorf("%w: CallQueueMax must be positive, got %d", ErrInvalidConfig, c.CallQueueMax))
	}
	if c.CallBatchMax < 0 || c.CallBatchMax > domain.MaxCallsPerBatch {
		errs = append(errs, fmt.Errorf("%w: CallBatchMax must be 1..%d, got %d", ErrInvalidConfig, domain.MaxCallsPerBatch, c.CallBatchMax))
	}
	if c.CallFlushInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: CallFlushInterval must be positive, got %v", ErrInvalidConfig, c.CallFlushInterval))
	}
	return errors.Join(errs...)
}
