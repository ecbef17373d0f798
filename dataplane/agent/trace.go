package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// maxRequestLine bounds the request line the agent reads on a traced channel to put its
// traceparent after it (the node's own ingress refuses request heads over its MaxHeaderBytes,
// 64 KiB by default).
const maxRequestLine = 1 << 20

var errRequestLine = errors.New("no request line within 1 MiB")

// copyRequestLine copies the request line but its last buffered part to up and returns the
// method and that part (which ends in "\n"), the bytes after it left in br.
func copyRequestLine(up io.Writer, br *bufio.Reader) (method string, rest []byte, err error) {
	total := 0
	for {
		part, err := br.ReadSlice('\n')
		if total == 0 {
			if i := bytes.IndexByte(part, ' '); i > 0 && i <= 24 {
				method = string(part[:i])
			}
		}
		total += len(part)
		switch {
		case total > maxRequestLine:
			return method, nil, errRequestLine
		case err == nil:
			return method, part, nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return method, nil, err
		}
		if _, err := up.Write(part); err != nil {
			return method, nil, err
		}
	}
}

// forwardTraced carries one traced call (node.ChannelTraced): a span for the call, child of the
// node's ingress span, and under it a client span for the request to the upstream, whose
// traceparent the agent writes right after the request line (the node wrote none on this
// channel). The channel carries this one call: both spans end when it closes.
func (c *conn) forwardTraced(nc ssh.NewChannel) {
	var tc node.TracedChannel
	parent := context.Background()
	if ssh.Unmarshal(nc.ExtraData(), &tc) == nil {
		if sc, ok := tracing.ParseTraceparent([]byte(tc.Traceparent)); ok {
			parent = trace.ContextWithRemoteSpanContext(parent, sc)
		}
	}
	tracer := c.a.tracer
	ctx, span := tracer.Start(parent, "tunnel agent", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tunnelplane.node_id", c.nodeID)))
	defer span.End()
	up, ch := c.dialAccept(nc)
	if ch == nil {
		span.SetStatus(codes.Error, "upstream unreachable or channel gone")
		return
	}
	br := bufio.NewReaderSize(ch, 4<<10)
	method, rest, err := copyRequestLine(up, br)
	_, cspan := tracer.Start(ctx, "upstream "+method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("http.request.method", method),
			attribute.String("server.address", c.up.addr), attribute.String("url.scheme", c.up.scheme)))
	defer cspan.End()
	if err == nil {
		head := make([]byte, 0, len(rest)+len("Traceparent: \r\n")+tracing.TraceparentLen)
		head = append(head, rest...)
		head = append(head, "Traceparent: "...)
		head = tracing.AppendTraceparent(head, cspan.SpanContext())
		head = append(head, "\r\n"...)
		_, err = up.Write(head)
	}
	if err != nil {
		cspan.SetStatus(codes.Error, "request line: "+err.Error())
		_ = ch.Close()
		_ = up.Close()
		return
	}
	st := &statusSniffer{r: up}
	pipe(ch, br, up, st, c.up.scheme != "tcp")
	if code := st.status(); code > 0 {
		cspan.SetAttributes(attribute.Int("http.response.status_code", code))
		if code >= 500 {
			cspan.SetStatus(codes.Error, "")
		}
	}
}

// statusSniffer reads the upstream's response and keeps its first bytes, for the status code.
type statusSniffer struct {
	r    io.Reader
	head [12]byte // "HTTP/1.1 200"
	n    int
}

func (s *statusSniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if s.n < len(s.head) {
		s.n += copy(s.head[s.n:], p[:n])
	}
	return n, err
}

// status is the status code of the first response, 0 when it did not start as one.
func (s *statusSniffer) status() int {
	if s.n < len(s.head) || !bytes.HasPrefix(s.head[:], []byte("HTTP/1.")) || s.head[8] != ' ' {
		return 0
	}
	code, err := strconv.Atoi(string(s.head[9:12]))
	if err != nil || code < 100 || code > 999 {
		return 0
	}
	return code
}
