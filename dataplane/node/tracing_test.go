package node_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
	"github.com/tunnelplane/tunnelplane/internal/tracing/otlptest"
)

// otlpProvider is a provider exporting over OTLP/HTTP to recv, as service.
func otlpProvider(t *testing.T, recv *otlptest.Receiver, service string) *sdktrace.TracerProvider {
	t.Helper()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tracing.NewProvider(context.Background(), exp, service, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// traceUpstream answers 200 and keeps the traceparent of every request.
type traceUpstream struct {
	mu   sync.Mutex
	seen []string
}

func (u *traceUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, strings.Join(r.Header.Values("Traceparent"), "|"))
	u.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

func (u *traceUpstream) last() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return ""
	}
	return u.seen[len(u.seen)-1]
}

// A traced call is one trace: the caller's traceparent is the parent of the ingress node's server
// span, the agent's span is its child, the agent's client span to the upstream is the agent
// span's child and the parent the upstream sees in its traceparent; every span reaches a real
// OTLP/HTTP receiver, and the call's access record carries the trace id. A hostile traceparent
// is not honoured (a new trace starts) and never reaches the upstream; an agent that does not
// trace still gets the trace to its upstream, with the ingress span as parent.
func TestTracedCallIsOneTraceFromCallerToUpstream(t *testing.T) {
	t.Parallel()
	recv := otlptest.Start(t)
	nodeTP, agentTP := otlpProvider(t, recv, "tunnelplane-node"), otlpProvider(t, recv, "tunnelplane-agent")
	up := &traceUpstream{}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	cs := &callSink{}
	rt := staticRouter{"logged": {OrgID: "org-1", TunnelID: "tun-llm", Name: "llm", Calls: true},
		"plain": {OrgID: "org-1", TunnelID: "tun-2", Name: "second", Calls: true}}
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		cs.Sink, c.Sink, c.Router = c.Sink, cs, rt
		c.CallFlushInterval = 20 * time.Millisecond
		c.TracerProvider = nodeTP
	}))
	e.startAgent("tun-llm", func(c *agent.Config) { c.TracerProvider, c.Upstream = agentTP, upSrv.URL })
	e.startAgent("tun-2", func(c *agent.Config) { c.Upstream = upSrv.URL }) // does not trace
	e.waitHeld("tun-llm")
	e.waitHeld("tun-2")

	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	flush := func() {
		_ = nodeTP.ForceFlush(context.Background())
		_ = agentTP.ForceFlush(context.Background())
	}
	call := func(ref, traceparent string) {
		t.Helper()
		req := e.request("POST", "/t/"+ref+"/v1/chat?key=secret", strings.NewReader("hi"), e.alice)
		if traceparent != "" {
			req.Header.Set("Traceparent", traceparent)
		}
		if status, _, body := e.do(req); status != 200 || string(body) != "ok" {
			t.Fatalf("call %s: %d %q", ref, status, body)
		}
	}

	call("logged", "00-"+callerTrace+"-"+callerSpan+"-01")
	atUpstream := up.last()
	flush()
	var spans []otlptest.Span
	poll.Until(t, 5*time.Second, "three spans of the caller's trace", func() bool { spans = recv.Trace(callerTrace); return len(spans) >= 3 })
	if len(spans) != 3 {
		t.Fatalf("%d spans in the trace, want 3: %+v", len(spans), spans)
	}
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	ingress, ag, client := byName["tunnel ingress"], byName["tunnel agent"], byName["upstream POST"]
	switch {
	case ingress.Service != "tunnelplane-node" || ingress.Kind != tracepb.Span_SPAN_KIND_SERVER || ingress.Parent != callerSpan:
		t.Fatalf("ingress span %+v: want the node's server span, child of the caller's %s", ingress, callerSpan)
	case ag.Service != "tunnelplane-agent" || ag.Parent != ingress.SpanID:
		t.Fatalf("agent span %+v: want the agent's, child of the ingress span %s", ag, ingress.SpanID)
	case client.Service != "tunnelplane-agent" || client.Kind != tracepb.Span_SPAN_KIND_CLIENT || client.Parent != ag.SpanID:
		t.Fatalf("upstream span %+v: want the agent's client span, child of the agent span %s", client, ag.SpanID)
	}
	if want := "00-" + callerTrace + "-" + client.SpanID + "-01"; atUpstream != want {
		t.Fatalf("the upstream saw traceparent %q, want %q (the agent's client span as parent)", atUpstream, want)
	}
	if ingress.Attrs["tunnelplane.tunnel_id"] != "tun-llm" || !strings.Contains(client.Attrs["http.response.status_code"], "200") {
		t.Errorf("attributes: ingress %v, upstream %v", ingress.Attrs, client.Attrs)
	}
	for _, s := range spans {
		for k, v := range s.Attrs {
			if strings.Contains(v, "secret") || strings.Contains(v, e.alice) {
				t.Errorf("span %s attribute %s carries the query string or the credential: %q", s.Name, k, v)
			}
		}
	}

	// Hostile or malformed parents are ignored; the call gets a trace of its own.
	for _, bad := range []string{
		"00-" + strings.ToUpper(callerTrace) + "-" + callerSpan + "-01",            // uppercase
		"00-" + callerTrace + "-0000000000000000-01",                               // zero span id
		"ff-" + callerTrace + "-" + callerSpan + "-01",                             // version ff
		"00-" + callerTrace + "-" + callerSpan + "-01-extra",                       // version 00 with more
		"00-" + callerTrace + "-" + callerSpan + "-01" + strings.Repeat("x", 4096), // long
	} {
		call("logged", bad)
		got := up.last()
		sc, ok := tracing.ParseTraceparent([]byte(got))
		if !ok || sc.TraceID().String() == callerTrace {
			t.Fatalf("caller traceparent %.80q: the upstream saw %q, want a new valid trace", bad, got)
		}
	}

	// An agent that does not trace: the upstream's parent is the ingress span.
	call("plain", "00-"+callerTrace+"-"+callerSpan+"-01")
	got := up.last()
	flush()
	poll.Until(t, 5*time.Second, "the untraced agent's call exported", func() bool { return len(recv.Trace(callerTrace)) >= 4 })
	var second otlptest.Span
	for _, s := range recv.Trace(callerTrace) {
		if s.Attrs["tunnelplane.tunnel_id"] == "tun-2" {
			second = s
		}
	}
	if want := "00-" + callerTrace + "-" + second.SpanID + "-01"; second.SpanID == "" || got != want {
		t.Fatalf("untraced agent: the upstream saw %q, want %q", got, want)
	}

	// The access records carry the trace ids, and the ingester takes them.
	var recs []domain.AccessCall
	poll.Until(t, 5*time.Second, "every call recorded", func() bool { recs, _ = cs.calls(); return len(recs) >= 7 })
	if recs[0].TraceID != callerTrace || recs[6].TraceID != callerTrace {
		t.Fatalf("records' trace ids %q and %q, want %q", recs[0].TraceID, recs[6].TraceID, callerTrace)
	}
	for i, r := range recs {
		if !domain.ValidTraceID(r.TraceID) {
			t.Fatalf("record %d: trace id %q", i, r.TraceID)
		}
		r.OrgID, r.TunnelID = "0190b8a5-6c6e-7000-8000-000000000001", "0190b8a5-6c6e-7000-8000-000000000002"
		if err := (&domain.AccessCallsRecorded{NodeID: "n", Calls: []domain.AccessCall{r}}).Validate(); err != nil {
			t.Fatalf("record %d breaks the ingester's rules: %v", i, err)
		}
	}
	// A request line longer than the agent's read buffer keeps its traceparent.
	req := e.request("GET", "/t/logged/"+strings.Repeat("a", 20<<10), nil, e.alice)
	req.Header.Set("Traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	if status, _, _ := e.do(req); status != 200 {
		t.Fatalf("long request line: %d", status)
	}
	if sc, ok := tracing.ParseTraceparent([]byte(up.last())); !ok || sc.TraceID().String() != callerTrace {
		t.Fatalf("long request line: the upstream saw %q", up.last())
	}
	if recv.Refused() != 0 {
		t.Fatalf("the receiver refused %d exports", recv.Refused())
	}
}

// correlatedSink is the env's sink that also takes correlated facts.
type correlatedSink struct {
	node.Sink
	mu   sync.Mutex
	got  []domain.Event
	corr []string
}

func (s *correlatedSink) Correlated(e domain.Event, id string) {
	s.mu.Lock()
	s.got, s.corr = append(s.got, e), append(s.corr, id)
	s.mu.Unlock()
}

func (s *correlatedSink) first() (domain.Event, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == 0 {
		return nil, ""
	}
	return s.got[0], s.corr[0]
}

// The disconnection a call causes (its wait probed a frozen agent, which did not answer) carries
// the call's trace id as its correlation id.
func TestDisconnectionCausedByATracedCallIsCorrelated(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	cs := &correlatedSink{}
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newEnv(t, withNodeConfig(func(c *node.Config) {
		cs.Sink, c.Sink = c.Sink, cs
		c.KeepaliveTimeout, c.TracerProvider = timeout, tp
		c.FailoverWait = -1 // the caller is answered when the frozen agent is found out, not later
	}))
	fz := newFreezer(t, e.addr)
	e.startAgent("tun-llm", func(c *agent.Config) { c.NodeURL = "ws://" + fz.addr() + "/v1/agent" })
	t.Cleanup(fz.thaw)
	s1 := e.waitHeld("tun-llm")
	fz.freeze()
	const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := e.request("GET", "/t/llm/healthz", nil, e.alice)
	req.Header.Set("Traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01")
	if status, _, _ := e.do(req); status != http.StatusServiceUnavailable {
		t.Fatalf("call to a frozen agent: %d", status)
	}
	var ev domain.Event
	var corr string
	poll.Until(t, 5*time.Second, "the correlated disconnection", func() bool { ev, corr = cs.first(); return ev != nil })
	d, ok := ev.(domain.AgentDisconnected)
	if !ok || d.SessionID != s1.SessionID || corr != callerTrace {
		t.Fatalf("correlated fact %T %+v with %q, want the session's agent.disconnected with %q", ev, ev, corr, callerTrace)
	}
}
