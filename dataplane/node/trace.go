package node

import (
	"bufio"
	"context"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Tracing of calls (docs/architecture.md): with a TracerProvider, every ingress request is a
// server span, child of the caller's traceparent when it sends a valid one (internal/tracing
// parses it strictly; an invalid one is ignored, never forwarded). The caller's traceparent and
// tracestate are replaced by the node's: a sampled call to an agent that traces goes on a
// ChannelTraced of its own, where the agent adds its span's traceparent; any other call carries
// the ingress span's traceparent to the upstream. Without a provider none of this runs.

// callTrace is one ingress request's span.
type callTrace struct {
	ctx   context.Context // holds span
	span  trace.Span
	owned bool // a reqState holds it: endRequest ends the span
	tp    [tracing.TraceparentLen]byte
	ts    string // the caller's tracestate, when valid
}

// traceKey is the fasthttp user value that hands the call's trace to serveIngress.
const traceKey = "tunnelplane.trace"

// ingress serves a tunnel request, traced when the node traces.
func (n *Node) ingress(ctx *fasthttp.RequestCtx) {
	if n.tracer == nil {
		n.serveIngress(ctx)
		return
	}
	tr := n.startTrace(ctx)
	ctx.SetUserValue(traceKey, tr)
	n.serveIngress(ctx)
	if !tr.owned {
		// Answered before it became a call (refused, malformed): the span ends with the answer.
		tr.end(ctx.Response.StatusCode(), "")
	}
}

func (n *Node) startTrace(ctx *fasthttp.RequestCtx) *callTrace {
	parent := context.Background()
	h := &ctx.Request.Header
	if sc, ok := tracing.ParseTraceparent(h.Peek(tracing.HeaderTraceparent)); ok {
		sc = sc.WithTraceState(tracing.ParseTracestate(h.Peek(tracing.HeaderTracestate)))
		parent = trace.ContextWithRemoteSpanContext(parent, sc)
	}
	c, span := n.tracer.Start(parent, "tunnel ingress", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", callMethod(h.Method())),
			attribute.String("tunnelplane.node_id", n.cfg.NodeID)))
	tr := &callTrace{ctx: c, span: span}
	sc := span.SpanContext()
	tracing.AppendTraceparent(tr.tp[:0], sc)
	tr.ts = sc.TraceState().String()
	return tr
}

// ownTrace hands the request's trace to its reqState (nil when the node does not trace).
func ownTrace(ctx *fasthttp.RequestCtx) *callTrace {
	tr, _ := ctx.UserValue(traceKey).(*callTrace)
	if tr != nil {
		tr.owned = true
	}
	return tr
}

func (tr *callTrace) end(status int, class string) {
	if status > 0 {
		tr.span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if class != "" {
		tr.span.SetAttributes(attribute.String("error.type", class))
	}
	if status >= 500 || class != "" && status == 0 {
		tr.span.SetStatus(codes.Error, class)
	}
	tr.span.End()
}

// endTrace ends rs's span (finishRequest).
func (rs *reqState) endTrace() {
	if rs.trace == nil {
		return
	}
	tr := rs.trace
	tr.span.SetAttributes(attribute.String("tunnelplane.tunnel_id", rs.route.TunnelID),
		attribute.String("tunnelplane.org_id", rs.route.OrgID))
	tr.end(rs.status, rs.class)
}

// TraceContext is the context holding rs's ingress span (context.Background without one): the
// parent of a hop to another node, whose request gets it with tracing.Inject.
func (rs *reqState) TraceContext() context.Context {
	if rs.trace == nil {
		return context.Background()
	}
	return rs.trace.ctx
}

// TraceID is rs's trace id as 32 hex digits ("" untraced): the call's record carries it.
func (rs *reqState) traceID() string {
	if rs.trace == nil {
		return ""
	}
	return string(rs.trace.tp[3:35])
}

// tracedChannel tells whether rs's call goes on a ChannelTraced: it is sampled and its agent
// takes them.
func (rs *reqState) tracedChannel() bool {
	if rs.trace == nil || !rs.trace.span.SpanContext().IsSampled() {
		return false
	}
	rs.sess.mu.Lock()
	defer rs.sess.mu.Unlock()
	return rs.sess.tracing
}

// writeTraceHeaders writes the trace context the upstream gets (not on a ChannelTraced: the
// agent writes its own there).
func writeTraceHeaders(bw *bufio.Writer, rs *reqState) {
	if rs.trace == nil {
		return
	}
	switch {
	case rs.hopTP != "":
		bw.WriteString("Traceparent: ")
		bw.WriteString(rs.hopTP)
		bw.WriteString("\r\n")
	case !rs.onTraced:
		bw.WriteString("Traceparent: ")
		bw.Write(rs.trace.tp[:])
		bw.WriteString("\r\n")
	}
	if rs.trace.ts != "" {
		bw.WriteString("Tracestate: ")
		bw.WriteString(rs.trace.ts)
		bw.WriteString("\r\n")
	}
}

// isTraceHeader: the caller's trace context, replaced by the node's when it traces.
func isTraceHeader(k []byte) bool {
	return string(k) == "Traceparent" || string(k) == "Tracestate"
}

// tracedConn opens a ChannelTraced for rs's call (never pooled: the agent's spans end with it).
func (s *session) tracedConn(rs *reqState, gone func() bool) (*tunnelConn, error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, s.gone()
	}
	fwd := *s.forward
	s.mu.Unlock()
	host, port := originOf(rs.remote)
	ch, _, err := s.openChannelType(ChannelTraced, ssh.Marshal(TracedChannel{Addr: fwd.BindAddr, Port: fwd.BindPort,
		OriginAddr: host, OriginPort: port, Traceparent: string(rs.trace.tp[:])}), gone, rs.traceID(), 0, true)
	if err != nil {
		return nil, wrapOpenErr(s, err)
	}
	return &tunnelConn{s: s, ch: ch, traced: true}, nil
}

// takeConn is the channel rs's call goes on: a ChannelTraced of its own when tracedChannel, else
// a pooled or new ChannelForwarded.
func (n *Node) takeConn(ctx *fasthttp.RequestCtx, rs *reqState) (tc *tunnelConn, reused bool, err error) {
	gone := func() bool { return callerGone(ctx) }
	if rs.sess.peer != nil && rs.trace != nil && rs.trace.span.SpanContext().IsSampled() {
		// A sampled call forwarded to a peer goes on a channel of its own carrying its span.
		return rs.sess.getConnFor(rs.remote, gone, rs.traceID(), rs.peerWait(n.cfg.FailoverWait), string(rs.trace.tp[:]))
	}
	if rs.tracedChannel() {
		tc, err = rs.sess.tracedConn(rs, gone)
		return tc, false, err
	}
	return rs.sess.getConn(rs.remote, gone, rs.traceID(), rs.peerWait(n.cfg.FailoverWait))
}
