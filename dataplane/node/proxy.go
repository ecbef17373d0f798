package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// The proxy is httputil.ReverseProxy's behaviour (hop-by-hop headers, X-Forwarded-*, upgrades,
// trailers, flush per chunk, abort on a broken body) written against fasthttp: the request is
// written to the tunnel channel straight from the caller's parsed header, and the upstream's
// response header is parsed once into the caller's response. Bodies stream both ways at once
// and are never held whole; a response body is copied with a buffer that grows from 32 KiB to
// 256 KiB once a read fills it, so bulk transfers cross the node in large writes while the many
// slow streams of a busy node (model tokens) each keep only 32 KiB.

// isHopHeader reports the hop-by-hop headers of RFC 9110 §7.6.1, their old relatives and the
// message framing: each hop has its own (names as fasthttp normalises them).
func isHopHeader(k []byte) bool {
	switch string(k) {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// Errors of the exchange; proxyError maps them to answers and error classes.
var (
	errCallerGone      = errors.New("the caller's connection failed")
	errInvalidResponse = errors.New("the upstream's response header holds an invalid field")
)

// syncBodyMax is the largest request body that is written together with the request head
// (one SSH packet, no goroutine); larger ones stream from a goroutine while the response is read.
const syncBodyMax = 16 << 10

// connectionTokens returns (copies of) the header names a Connection header lists; they are
// hop-by-hop too.
func connectionTokens(all func(yield func([]byte, []byte) bool)) [][]byte {
	var toks [][]byte
	all(func(k, v []byte) bool {
		if string(k) == "Connection" {
			for t := range bytes.SplitSeq(v, []byte(",")) {
				if t = bytes.TrimSpace(t); len(t) > 0 {
					toks = append(toks, bytes.Clone(t))
				}
			}
		}
		return true
	})
	return toks
}

func listed(toks [][]byte, k []byte) bool {
	for _, t := range toks {
		if bytes.EqualFold(t, k) {
			return true
		}
	}
	return false
}

// forwardedOmitted reports the caller's headers that do not go upstream besides the hop-by-hop
// ones: Host and the framing (the node writes its own, first), the caller's tunnel credential
// (X-Tunnel-Key always, Proxy-Authorization as a hop-by-hop header, Authorization unless the
// tunnel credential came in one of the other two: then it is the upstream's own), Expect (the body is sent at once anyway), headers that
// claim who the client is or what it asked for (clientIdentityHeader: the node states them
// itself), and names with an underscore, which CGI-style servers (WSGI, PHP, Rack) read as the
// dashed name: X_Forwarded_For would otherwise pass for X-Forwarded-For.
func forwardedOmitted(k []byte, passAuthorization, preflight bool) bool {
	switch string(k) {
	case "Host", "Expect", "X-Tunnel-Key":
		return true
	case "Authorization":
		return !passAuthorization
	case "Cookie":
		return preflight // a preflight has no credential of any kind
	}
	return isHopHeader(k) || clientIdentityHeader(k) || bytes.IndexByte(k, '_') >= 0
}

// writeHead writes the request line and headers the upstream sees. bodyLen is the body's
// length, -1 for a chunked one. Everything written was parsed and checked (checkRequest); the
// Host and the framing are the node's own and come before the caller's headers, so no upstream
// parser can take the message's length from anything the caller wrote.
func (n *Node) writeHead(bw *bufio.Writer, ctx *fasthttp.RequestCtx, rs *reqState, host string, upgrade []byte, bodyLen int) error {
	h := &ctx.Request.Header
	bw.Write(h.Method())
	bw.WriteByte(' ')
	target := h.RequestURI()
	if len(target) > 0 && target[0] != '/' && target[0] != '*' {
		// Absolute form: the upstream gets the origin form.
		u := ctx.URI()
		target = u.PathOriginal()
		if q := u.QueryString(); len(q) > 0 {
			target = append(append(append([]byte(nil), target...), '?'), q...)
		}
	}
	if rs.prefix != "" {
		target = target[min(len(rs.prefix), len(target)):]
	}
	if len(target) == 0 || (target[0] != '/' && target[0] != '*') {
		bw.WriteByte('/')
	}
	writeTarget(bw, target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	if host != "" {
		bw.WriteString(host)
	} else {
		bw.Write(rs.host)
	}
	bw.WriteString("\r\n")
	switch {
	case bodyLen > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.Itoa(bodyLen))
		bw.WriteString("\r\n")
	case bodyLen < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		switch string(h.Method()) {
		case "POST", "PUT", "PATCH":
			bw.WriteString("Content-Length: 0\r\n")
		}
	}
	if len(upgrade) > 0 {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.Write(upgrade)
		bw.WriteString("\r\n")
	}
	if addr, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		ip := addr.IP.String()
		bw.WriteString("X-Forwarded-For: ")
		bw.WriteString(ip)
		bw.WriteString("\r\nX-Real-Ip: ")
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.Write(rs.host)
	if ctx.IsTLS() {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
	if addr, ok := ctx.LocalAddr().(*net.TCPAddr); ok {
		bw.WriteString("X-Forwarded-Port: ")
		bw.WriteString(strconv.Itoa(addr.Port))
		bw.WriteString("\r\n")
	}
	if rs.prefix != "" {
		bw.WriteString("X-Forwarded-Prefix: ")
		bw.WriteString(rs.prefix)
		bw.WriteString("\r\n")
	}

	writeTraceHeaders(bw, rs)

	toks := connectionTokens(h.All())
	teTrailers := false
	for k, v := range h.All() {
		if forwardedOmitted(k, rs.passAuthorization, rs.preflight) || listed(toks, k) || rs.trace != nil && isTraceHeader(k) {
			if string(k) == "Te" && httpguts.HeaderValuesContainsToken([]string{string(v)}, "trailers") {
				teTrailers = true
			}
			continue
		}
		bw.Write(k)
		bw.WriteString(": ")
		bw.Write(v)
		bw.WriteString("\r\n")
	}
	if teTrailers {
		bw.WriteString("Te: trailers\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// isWebSocketUpgrade tells whether a request asks to upgrade to a WebSocket.
func isWebSocketUpgrade(h *fasthttp.RequestHeader) bool {
	return h.ConnectionUpgrade() && bytes.EqualFold(bytes.TrimSpace(h.Peek("Upgrade")), []byte("websocket"))
}

// forward carries one request through the tunnel. It reports whether the response body is
// still streaming when it returns: the stream's end then ends the request.
func (n *Node) forward(ctx *fasthttp.RequestCtx, rs *reqState) (streaming bool) {
	h := &ctx.Request.Header
	// Only a WebSocket upgrade is carried: another protocol (h2c) would hand the caller a raw
	// connection to the upstream in a framing the node never checks. Others are ignored, as a
	// server may (RFC 9110 §7.8): the request goes on as a plain one.
	var upgrade []byte
	if !rs.preflight && isWebSocketUpgrade(h) {
		upgrade = h.Peek("Upgrade")
	}
	// fasthttp: -1 is a chunked body, -2 none declared (no body, for a request).
	bodyLen := h.ContentLength()
	if bodyLen < -1 {
		bodyLen = 0
	}
	var body io.Reader
	var small []byte // a body of at most syncBodyMax, read before it is sent: it can be sent again
	if bodyLen != 0 {
		// fasthttp's read deadline covers the whole request; a body streams for as long as it takes.
		clearReadDeadline(ctx)
		body = ctx.RequestBodyStream()
	}
	if bodyLen > 0 && bodyLen <= syncBodyMax {
		bp := smallBodies.Get().(*[]byte)
		defer smallBodies.Put(bp)
		small = (*bp)[:bodyLen]
		if _, err := io.ReadFull(body, small); err != nil {
			n.proxyError(ctx, rs, fmt.Errorf("%w: read request body: %w", errCallerGone, err))
			return false
		}
		rs.bytesIn.Add(int64(bodyLen))
		body = nil
	}
	isHead := h.IsHead()

	// A call is sent again only when no byte of it reached an agent (rs.reached; failover.go). A
	// streamed body is read from the caller only once the head is on a channel (roundTrip), so a
	// call sent again has consumed none of it.
	for retries := 0; ; {
		tc, _, err := n.takeConn(ctx, rs)
		exchanged := err == nil
		if exchanged {
			if !rs.live.attach(tc) {
				_ = tc.ch.Close()
				n.proxyError(ctx, rs, errAccessWithdrawn)
				return false
			}
			// A peer's channel is traced when the peer's agent writes the traceparent itself; else
			// the peer's span (hopTP) goes to the upstream.
			rs.onTraced = tc.traced && (tc.s.peer == nil || tc.peerAgentTraces)
			rs.hopTP = tc.peerTP
			ex := &exchange{n: n, ctx: ctx, rs: rs, tc: tc}
			resp, rerr := ex.roundTrip(upgrade, bodyLen, small, body, isHead)
			if rerr == nil {
				return ex.respond(resp, upgrade)
			}
			// The body's writer has stopped: what the channel took is all that reached the agent.
			err = rerr
			rs.reached = rs.reached || tc.written.Load() > 0
		}
		if rs.live.wasCut() {
			n.proxyError(ctx, rs, errAccessWithdrawn)
			return false
		}
		s := rs.sess
		if !beforeAgent(err, rs.reached) {
			// Bytes of the request reached the agent (the upstream may have seen it), or the failure
			// is the answer: it is never sent again.
			if exchanged && errors.Is(s.gone(), errAgentUnresponsive) {
				// The exchange failed because the node closed a frozen agent's connection.
				err = fmt.Errorf("%w: %w", errAgentUnresponsive, err)
			}
			n.proxyError(ctx, rs, err)
			return false
		}
		// Nothing reached the agent. A pooled channel the agent closed just before we used it (its
		// upstream dropped an idle keep-alive connection): another channel of the session. A
		// session going away: the next one, within what is left of FailoverWait.
		if !s.leaving(err) && retries < 3 {
			retries++
			continue
		}
		s.release()
		rs.sess = nil
		herr := n.holdSession(ctx, rs, s)
		switch {
		case errors.Is(herr, errAgentGone):
			// The node does not wait for another session (FailoverWait off, draining): the call
			// stays with its own while it lasts, as before.
			if retries < 3 && s.acquire() == nil {
				rs.sess = s
				retries++
				continue
			}
			n.proxyError(ctx, rs, s.endedBy(err))
			return false
		case herr != nil:
			n.noSession(ctx, rs, herr)
			return false
		}
		n.metrics.failoverRetries.Inc()
		retries = 0
	}
}

// exchange is one request and its response on one tunnel channel.
type exchange struct {
	n   *Node
	ctx *fasthttp.RequestCtx
	rs  *reqState
	tc  *tunnelConn

	resp     *fasthttp.Response
	br       *bufio.Reader
	bodyDone chan error // the request body's writer, when it runs on its own goroutine
}

// roundTrip sends the request and reads the response header.
func (ex *exchange) roundTrip(upgrade []byte, bodyLen int, small []byte, body io.Reader, isHead bool) (*fasthttp.Response, error) {
	tc := ex.tc
	if ex.rs.trace != nil || tc.cause.Load() != nil {
		tc.cause.Store(ex.rs.traceID())
	}
	tc.startExchange()
	bw := getWriter(tc)
	err := ex.n.writeHead(bw, ex.ctx, ex.rs, tc.hostHeader(), upgrade, bodyLen)
	if err == nil && len(small) > 0 {
		_, err = bw.Write(small)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil || body == nil {
		putWriter(bw)
	}
	if err != nil {
		tc.stopTimers()
		_ = tc.ch.Close()
		var tooLarge *errBodyTooLarge
		if errors.As(err, &tooLarge) || errors.Is(err, errCallerGone) {
			return nil, err
		}
		if tc.written.Load() == 0 {
			return nil, fmt.Errorf("%w: %w", errHeadersNotSent, err)
		}
		return nil, fmt.Errorf("write request through the tunnel: %w", err)
	}
	if body != nil {
		// Write the body while the response is read: an upstream may answer (or stream its
		// answer) before it has read the whole body.
		ex.bodyDone = make(chan error, 1)
		go func() {
			err := ex.copyBody(bw, body, bodyLen)
			if err == nil {
				err = bw.Flush()
			}
			putWriter(bw)
			if err != nil {
				_ = tc.ch.Close() // the upstream must not wait for the rest of a body that will not come
			}
			ex.bodyDone <- err
		}()
	}

	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	resp.SkipBody = isHead
	br := getReader(tc)
	err = resp.Read(br)
	tc.stopTimers()
	if err != nil {
		_ = tc.ch.Close()
		fasthttp.ReleaseResponse(resp)
		putReader(br)
		werr := ex.stopBody()
		var tooLarge *errBodyTooLarge
		switch {
		case tc.timedOut.Load():
			return nil, errHeaderTimeout
		case werr != nil && (errors.As(werr, &tooLarge) || errors.Is(werr, errCallerGone)):
			return nil, werr
		case werr != nil:
			return nil, fmt.Errorf("write request through the tunnel: %w", werr)
		}
		return nil, &readError{err: err, nothingRead: tc.read.Load() == 0}
	}
	ex.resp, ex.br = resp, br
	ex.rs.ttfb.Store(int64(time.Since(ex.rs.start)))
	return resp, nil
}

// copyBody writes the caller's body to the tunnel, chunked when its length is unknown, and
// stops it at MaxRequestBody.
func (ex *exchange) copyBody(bw *bufio.Writer, body io.Reader, bodyLen int) error {
	limit := ex.n.cfg.MaxRequestBody
	var w io.Writer = bw
	var cw io.WriteCloser
	if bodyLen < 0 {
		cw = httputil.NewChunkedWriter(bw)
		w = cw
	}
	bp := copySmall.Get().(*[]byte)
	defer copySmall.Put(bp)
	buf := *bp
	var total int64
	for {
		nr, rerr := body.Read(buf)
		if nr > 0 {
			total += int64(nr)
			ex.rs.bytesIn.Add(int64(nr))
			if total > limit {
				return &errBodyTooLarge{limit: limit}
			}
			if _, err := w.Write(buf[:nr]); err != nil {
				return err
			}
			// A streamed body (an echo, a bidirectional API) moves as it arrives.
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, fasthttp.ErrBodyTooLarge) {
				return &errBodyTooLarge{limit: limit}
			}
			return fmt.Errorf("%w: read request body: %w", errCallerGone, rerr)
		}
	}
	if cw != nil {
		if err := cw.Close(); err != nil {
			return err
		}
		_, err := bw.WriteString("\r\n")
		return err
	}
	return nil
}

// stopBody stops the request body's writer, if one runs, and returns its error. The writer
// may be waiting for the caller, who may be waiting for the answer; its reads are cut short,
// so the caller's connection closes after the answer.
func (ex *exchange) stopBody() error {
	if ex.bodyDone == nil {
		return nil
	}
	var err error
	select {
	case err = <-ex.bodyDone:
	default:
		_ = ex.tc.ch.Close()
		_ = ex.ctx.SetReadDeadline(time.Now())
		ex.ctx.SetConnectionClose()
		err = <-ex.bodyDone
		if err == nil {
			err = errors.New("the upstream answered before it read the whole request body")
		}
	}
	ex.bodyDone = nil
	return err
}

// respond answers the caller from the upstream's response header and attaches the body. It
// reports whether the body is still streaming.
func (ex *exchange) respond(resp *fasthttp.Response, upgrade []byte) bool {
	ctx, rs := ex.ctx, ex.rs
	code := resp.StatusCode()
	rs.status = code
	if code >= 500 {
		rs.class = ClassStatus5xx
	}
	if !checkResponseHeader(&resp.Header) {
		// Nothing of it reaches the caller, and the channel, whose framing is now in doubt, closes.
		ex.finish(false)
		ex.n.proxyError(ctx, rs, errInvalidResponse)
		return false
	}
	if rs.preflight {
		// Its caller has no credential: the status and header of the answer, nothing more.
		if code < 200 {
			ex.finish(false)
			ex.n.proxyError(ctx, rs, errInvalidResponse)
			return false
		}
		ctx.Response.SetStatusCode(code)
		copyResponseHeader(&ctx.Response.Header, &resp.Header, rs.prefix)
		ex.finish(false)
		return false
	}
	if code == http.StatusSwitchingProtocols {
		return ex.switchProtocols(resp, upgrade)
	}
	out := &ctx.Response
	out.SetStatusCode(code)
	if msg := resp.Header.StatusMessage(); len(msg) > 0 {
		out.Header.SetStatusMessage(msg)
	}
	copyResponseHeader(&out.Header, &resp.Header, rs.prefix)
	for k := range resp.Header.Trailers() {
		_ = out.Header.AddTrailerBytes(k) // forbidden trailer names are dropped
	}
	cl := resp.Header.ContentLength()
	if resp.BodyStream() == nil || ctx.IsHead() {
		if ctx.IsHead() && cl >= 0 {
			out.Header.SetContentLength(cl)
			out.SkipBody = true
		}
		ex.finish(true)
		return false
	}
	if cl < 0 {
		cl = -1 // chunked to the caller, whatever the upstream framed it with
	}
	// A stream whose first bytes have not arrived (a model still thinking) shows the caller its
	// header at once.
	out.ImmediateHeaderFlush = ex.br.Buffered() == 0
	rs.live.streaming(ctx.Conn()) // a cut closes it
	out.SetBodyStream(&streamBody{ex: ex, r: resp.BodyStream()}, cl)
	return true
}

// copyResponseHeader copies the upstream's header without its hop-by-hop fields and framing,
// with its cookies kept to the tunnel (scopeCookie; prefix is rs.prefix).
func copyResponseHeader(dst, src *fasthttp.ResponseHeader, prefix string) {
	toks := connectionTokens(src.All())
	for k, v := range src.All() {
		switch {
		case isHopHeader(k) || listed(toks, k):
		case string(k) == "Content-Type":
			dst.SetContentTypeBytes(v)
		case string(k) == "Set-Cookie":
			dst.AddBytesKV(k, scopeCookie(v, prefix))
		default:
			dst.AddBytesKV(k, v)
		}
	}
}

// finish ends the exchange: a clean end returns the channel to the pool.
func (ex *exchange) finish(eof bool) {
	tc, br := ex.tc, ex.br
	reuse := eof && !ex.resp.ConnectionClose() && br.Buffered() == 0 && !tc.traced
	if ex.rs.live.detach() {
		reuse = false // cut: its channel was closed
	}
	if ex.stopBody() != nil {
		reuse = false
	}
	fasthttp.ReleaseResponse(ex.resp)
	ex.resp = nil
	if reuse {
		putReader(br)
		tc.s.putIdle(tc)
		return
	}
	_ = tc.ch.Close()
}

var (
	smallBodies = sync.Pool{New: func() any { b := make([]byte, syncBodyMax); return &b }}
	copySmall   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	copyLarge   = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
)

// streamBody is the response body as fasthttp writes it to the caller: each read goes out at
// once (chunked responses flush per chunk), trailers are passed on at the end, and its Close,
// which fasthttp calls when the response is written or abandoned, ends the exchange.
type streamBody struct {
	ex     *exchange
	r      io.Reader
	eof    bool
	closed bool
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.ex.rs.bytesOut.Add(int64(n))
	if err == io.EOF && !b.eof {
		b.eof = true
		resp, out := b.ex.resp, &b.ex.ctx.Response.Header
		for k := range resp.Header.Trailers() {
			if v := resp.Header.PeekBytes(k); len(v) > 0 {
				out.SetBytesKV(k, v)
			}
		}
	}
	if err != nil && err != io.EOF && b.ex.rs.class == "" {
		b.ex.rs.class = ClassUpstream
	}
	return n, err
}

func (b *streamBody) SupportsBodyWriteTo() bool { return true }

// WriteTo copies with a buffer that grows when reads fill it.
func (b *streamBody) WriteTo(w io.Writer) (int64, error) {
	pool := &copySmall
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	var total int64
	for {
		buf := *bp
		n, rerr := b.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				if b.ex.rs.class == "" {
					b.ex.rs.class = ClassCanceled
				}
				return total, fmt.Errorf("%w: %w", errCallerGone, err)
			}
			total += int64(n)
			if n == len(buf) && pool == &copySmall {
				pool.Put(bp)
				pool = &copyLarge
				bp = pool.Get().(*[]byte)
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, fmt.Errorf("read response through the tunnel: %w", rerr)
		}
	}
}

// Close before the end abandons the exchange: the channel closes, which makes the agent close
// the upstream connection (a model stops generating for nobody).
func (b *streamBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.ex.finish(b.eof)
	b.ex.n.endRequest(b.ex.rs)
	return nil
}

// switchProtocols completes an upgrade (WebSocket): the 101 goes to the caller, then the
// caller's connection and the tunnel channel are joined and copied both ways until either side
// ends.
func (ex *exchange) switchProtocols(resp *fasthttp.Response, upgrade []byte) bool {
	ctx, rs, tc := ex.ctx, ex.rs, ex.tc
	got := append([]byte(nil), resp.Header.Peek("Upgrade")...)
	if len(upgrade) == 0 || !bytes.EqualFold(upgrade, got) {
		ex.finish(false)
		ex.n.proxyError(ctx, rs, fmt.Errorf("upstream switched to protocol %q, the caller asked for %q", got, upgrade))
		return false
	}
	var h fasthttp.ResponseHeader
	h.SetStatusCode(http.StatusSwitchingProtocols)
	h.SetNoDefaultContentType(true)
	copyResponseHeader(&h, &resp.Header, rs.prefix)
	h.Set("Connection", "Upgrade")
	h.SetBytesV("Upgrade", got)
	head := h.Header()
	fasthttp.ReleaseResponse(resp)
	ex.resp = nil
	br := ex.br
	// The 101 is written by the hijack handler itself: fasthttp skips that handler when its own
	// write fails, and the handler is where the request ends.
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer ex.n.endRequest(rs)
		defer c.Close()
		defer tc.ch.Close()
		if _, err := c.Write(head); err != nil {
			return
		}
		fw := &frameWriter{w: c}
		if rs.live.joined(c) {
			rs.live.wsFarewell(c, fw) // cut while the upgrade was answered
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			// c holds any bytes the caller sent after its upgrade request.
			_, _ = io.Copy(&countingWriter{w: tc, n: &rs.bytesIn}, struct{ io.Reader }{c})
			_ = tc.ch.CloseWrite()
		}()
		// br may hold bytes the upstream sent right after its 101.
		_, _ = io.Copy(&countingWriter{w: fw, n: &rs.bytesOut}, br)
		rs.live.wsFarewell(c, fw)
		_ = c.Close()
		_ = tc.ch.Close()
		<-done
	})
	return true
}

type countingWriter struct {
	w io.Writer
	n interface{ Add(int64) int64 }
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
