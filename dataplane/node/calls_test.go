package node_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// callSink is the env's sink that also takes call records.
type callSink struct {
	node.Sink
	mu      sync.Mutex
	batches []domain.AccessCallsRecorded
}

func (s *callSink) AccessCallsRecorded(b domain.AccessCallsRecorded) {
	s.mu.Lock()
	s.batches = append(s.batches, b)
	s.mu.Unlock()
}

// calls returns every call recorded so far and the drops reported.
func (s *callSink) calls() ([]domain.AccessCall, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []domain.AccessCall
	var dropped int64
	for _, b := range s.batches {
		out = append(out, b.Calls...)
		dropped += b.Dropped
	}
	return out, dropped
}

// newCallsEnv is an env whose tunnel tun-llm logs calls under the ref "logged" (and not under
// "llm"), with the agent holding it.
func newCallsEnv(t *testing.T, mod func(*node.Config)) (*env, *callSink) {
	cs := &callSink{}
	rt := staticRouter{"logged": {OrgID: "org-1", TunnelID: "tun-llm", Name: "llm", Calls: true}}
	for k, v := range routes {
		rt[k] = v
	}
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		cs.Sink, c.Sink, c.Router = c.Sink, cs, rt
		mod(c)
	}))
	e.startAgent("tun-llm", nil)
	e.waitHeld("tun-llm")
	return e, cs
}

// Calls to a tunnel logging calls are recorded one by one (method, route without the query
// string, status, bytes each way, the caller); calls to a tunnel that does not, none. A hostile
// path is cut to the record's bound, and every record is one the ingester takes.
func TestCallRecordsAreExactAndBounded(t *testing.T) {
	t.Parallel()
	e, cs := newCallsEnv(t, func(c *node.Config) { c.CallFlushInterval = 20 * time.Millisecond })
	if status, _, _ := e.do(e.request("GET", "/t/llm/echo/unlogged", nil, e.alice)); status != 200 {
		t.Fatalf("unlogged call: %d", status)
	}
	long := "/echo/" + strings.Repeat("a&b=", 250)
	script := []struct {
		method, path, body string
		status             int32
		route              string
	}{
		{"POST", "/t/logged/echo/chat?api_key=secret", "0123456789", 200, "/echo/chat"},
		{"GET", "/t/logged/echo" + long[5:] + "?q=1", "", 200, long[:domain.MaxCallRoute]},
		{"GET", "/t/logged", "", 404, "/"},
		{"PUT", "/t/logged/echo", "abc", 200, "/echo"},
	}
	for _, s := range script {
		var body *strings.Reader
		if s.body != "" {
			body = strings.NewReader(s.body)
		}
		req := e.request(s.method, s.path, nil, e.alice)
		if body != nil {
			req = e.request(s.method, s.path, body, e.alice)
		}
		if status, _, _ := e.do(req); int32(status) != s.status {
			t.Fatalf("%s %s: %d, want %d", s.method, s.path, status, s.status)
		}
	}
	var got []domain.AccessCall
	poll.Until(t, 5*time.Second, "every logged call recorded", func() bool { got, _ = cs.calls(); return len(got) >= len(script) })
	if len(got) != len(script) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(script), got)
	}
	for i, s := range script {
		g := got[i]
		if g.Method != s.method || g.Route != s.route || int32(g.Status) != s.status || g.BytesIn != int64(len(s.body)) {
			t.Errorf("record %d: %s %q %d in %d, want %s %q %d in %d", i, g.Method, g.Route, g.Status, g.BytesIn, s.method, s.route, s.status, len(s.body))
		}
		if s.status == 200 && g.BytesOut != int64(len(s.body)) {
			t.Errorf("record %d: %d bytes out, want the echo's %d", i, g.BytesOut, len(s.body))
		}
		if g.CallerKind != domain.CallerUser || g.CallerID != "alice" || g.TunnelID != "tun-llm" || g.At.IsZero() {
			t.Errorf("record %d: %+v", i, g)
		}
		// The ingester's rules, with ids as the log has them.
		g.OrgID, g.TunnelID = "0190b8a5-6c6e-7000-8000-000000000001", "0190b8a5-6c6e-7000-8000-000000000002"
		b := domain.AccessCallsRecorded{NodeID: "node-test", Calls: []domain.AccessCall{g}}
		if err := b.Validate(); err != nil {
			t.Errorf("record %d breaks the ingester's rules: %v", i, err)
		}
	}
}

// A node whose queue of call records is full drops further calls without making them wait, and
// counts them: in the next batch's Dropped and in its metric.
func TestCallQueueFullDropsAndCounts(t *testing.T) {
	t.Parallel()
	e, cs := newCallsEnv(t, func(c *node.Config) { c.CallQueueMax, c.CallFlushInterval = 2, time.Hour })
	for range 5 {
		if status, _, _ := e.do(e.request("GET", "/t/logged/echo/x", nil, e.alice)); status != 200 {
			t.Fatalf("call: %d", status)
		}
	}
	// A call's record is queued once its answer is out: the last may follow the client's read.
	poll.Until(t, 5*time.Second, "three calls dropped", func() bool {
		return metricValue(t, e, "tunnelplane_node_access_calls_dropped_total") >= 3
	})
	if got := metricValue(t, e, "tunnelplane_node_access_calls_dropped_total"); got != 3 {
		t.Fatalf("dropped metric %v, want 3", got)
	}
	e.stopNode() // the queued records go out when the node stops
	got, dropped := cs.calls()
	if len(got) != 2 || dropped != 3 {
		t.Fatalf("%d calls recorded and %d dropped, want 2 and 3", len(got), dropped)
	}
}
