package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tunnelplane/tunnelplane/dataplane/rawconn"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// Server is the node's HTTP listener: the ingress, served natively by fasthttp, and a few
// net/http handlers at exact paths (the agent endpoint, /metrics), served through an adaptor.
//
// The ingress does not use net/http's server: per request it starts a goroutine to watch the
// caller's connection, re-arms deadlines and allocates its header maps, which made the node's
// HTTP server cost more CPU than the SSH tunnel and the agent together (docs/performance.md).
type Server struct {
	n        *Node
	fs       *fasthttp.Server
	routes   map[string]fasthttp.RequestHandler
	upgrades map[string]http.Handler

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	perIP  map[string]int // open, not taken-over connections by source address
	lns    []net.Listener
	closed bool
}

// NewServer returns the node's server. routes maps exact paths to net/http handlers, e.g.
// "/v1/agent" to AgentHandler(); every other path is the ingress.
func (n *Node) NewServer(routes map[string]http.Handler) *Server {
	s := &Server{n: n, routes: make(map[string]fasthttp.RequestHandler, len(routes)), upgrades: routes, conns: map[net.Conn]struct{}{},
		perIP: map[string]int{}}
	for p, h := range routes {
		s.routes[p] = fasthttpadaptor.NewFastHTTPHandler(h)
	}
	s.fs = &fasthttp.Server{
		Handler:      s.serve,
		ErrorHandler: n.serveParseError,
		Name:         "",
		// A proxy passes the upstream's headers: no Server or Content-Type of its own.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// The read buffer bounds the request line and headers.
		ReadBufferSize:     n.cfg.MaxHeaderBytes,
		WriteBufferSize:    16 << 10,
		ReadTimeout:        n.cfg.HeaderTimeout, // lifted once the headers are in (see clearReadDeadline)
		IdleTimeout:        2 * time.Minute,
		MaxRequestBodySize: int(min(n.cfg.MaxRequestBody, int64(^uint(0)>>1))),
		// Bodies stream through the tunnel; they are never held whole.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// Upgraded connections are closed by their owners (serveUpgrade, the ingress's
		// WebSocket pass-through), not when the hijack handler returns.
		KeepHijackedConns: true,
		Logger:            fasthttpLogger{n},
	}
	return s
}

type fasthttpLogger struct{ n *Node }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.n.log.Debug("ingress server", "message", fmt.Sprintf(format, args...))
}

// serve dispatches a request. The node's own endpoints answer only at their exact raw path (not
// a normalised one: /t/web/../../metrics is a tunnel's path) and only on a host that is not a
// tunnel's: on web.acme.<base domain>, /metrics and /v1/agent belong to the tunnel.
func (s *Server) serve(ctx *fasthttp.RequestCtx) {
	own := false
	var path string
	if _, tunnelHost := s.n.hostRef(ctx.Host()); !tunnelHost {
		path = string(ctx.URI().PathOriginal())
		_, own = s.routes[path]
	}
	switch {
	case !own:
		s.n.ingress(ctx)
	case s.upgrades[path] != nil && ctx.Request.Header.ConnectionUpgrade():
		s.serveUpgrade(ctx, s.upgrades[path])
	default:
		s.routes[path](ctx)
	}
	if ctx.Hijacked() {
		// As with net/http, a connection taken over belongs to its new owner: the node ends
		// agent sessions itself, saying why.
		if tc, ok := ctx.Conn().(*trackedConn); ok {
			tc.untrack()
		}
	}
}

// Serve accepts connections on ln until Shutdown or Close (also when those come first).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = ln.Close()
		return http.ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	err := s.fs.Serve(&trackingListener{Listener: ln, s: s})
	if errors.Is(err, net.ErrClosed) {
		return http.ErrServerClosed
	}
	return err
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends, then closes the
// connections left, as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.fs.ShutdownWithContext(ctx)
	s.Close()
	return err
}

// Close closes the listeners and every connection at once, except those taken over by an
// upgrade (agents, WebSockets): their owners end them.
func (s *Server) Close() error {
	s.mu.Lock()
	lns, conns := s.lns, s.conns
	s.lns, s.conns, s.closed = nil, map[net.Conn]struct{}{}, true
	s.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
	return nil
}

// trackingListener remembers open connections, so that Close can end them all.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := sourceIP(c)
		s := l.s
		s.mu.Lock()
		if s.perIP[ip] >= s.n.cfg.MaxConnsPerSource {
			s.mu.Unlock()
			s.n.metrics.refused.WithLabelValues("too_many_connections").Inc()
			go refuseConn(c)
			continue
		}
		s.perIP[ip]++
		tc := &trackedConn{Conn: rawconn.Wrap(c), s: s, ip: ip}
		s.conns[tc] = struct{}{}
		s.mu.Unlock()
		return tc, nil
	}
}

// refuseConn answers a connection over its source's limit and closes it, without reading it.
func refuseConn(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = io.WriteString(c, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 43\r\nRetry-After: 5\r\nConnection: close\r\n\r\ntoo many open connections from this address")
	_ = c.Close()
}

func sourceIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

type trackedConn struct {
	net.Conn
	s    *Server
	ip   string
	once sync.Once
}

// untrack forgets the connection: it closed, or an upgrade took it over (an agent's, or a
// caller's WebSocket, which its tunnel's call limit bounds).
func (c *trackedConn) untrack() {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		if c.s.perIP[c.ip]--; c.s.perIP[c.ip] <= 0 {
			delete(c.s.perIP, c.ip)
		}
		c.s.mu.Unlock()
	})
}

func (c *trackedConn) Close() error {
	c.untrack()
	return c.Conn.Close()
}

// callerGone reports whether the caller of ctx closed or reset its connection.
func callerGone(ctx *fasthttp.RequestCtx) bool {
	if tc, ok := ctx.Conn().(*trackedConn); ok {
		return rawconn.PeerClosed(tc.Conn)
	}
	return false
}

func clearReadDeadline(ctx *fasthttp.RequestCtx) {
	_ = ctx.SetReadDeadline(time.Time{})
}

// serveParseError answers a request fasthttp could not read. Its error quotes the request's
// bytes (credentials included), so only the kind of failure is told.
func (n *Node) serveParseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	n.metrics.refused.WithLabelValues("bad_request").Inc()
	p := problem{Status: http.StatusBadRequest, Slug: "bad-request", Title: "Malformed request",
		Detail: "the request line, a header or the body's framing is not valid HTTP/1.1"}
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p = problem{Status: http.StatusRequestEntityTooLarge, Slug: "body-too-large", Title: "Request body too large",
			Detail: "the limit is " + strconv.FormatInt(n.cfg.MaxRequestBody, 10) + " bytes"}
	case errors.As(err, &small):
		p = problem{Status: http.StatusRequestHeaderFieldsTooLarge, Slug: "headers-too-large", Title: "Request headers too large",
			Detail: "the limit is " + strconv.Itoa(n.cfg.MaxHeaderBytes) + " bytes"}
	case errors.As(err, &ne) && ne.Timeout():
		p = problem{Status: http.StatusRequestTimeout, Slug: "request-timeout", Title: "The request was not received in time"}
	}
	ctx.SetConnectionClose()
	writeProblem(ctx, p)
}

// serveUpgrade runs a net/http handler that takes the connection over (the agent's WebSocket
// endpoint) once fasthttp has let go of it. The handler may keep the connection after it returns
// without holding anything of fasthttp's: no goroutine, no request buffers.
func (s *Server) serveUpgrade(ctx *fasthttp.RequestCtx, h http.Handler) {
	req := httpRequest(ctx)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		// An upgrading client sends nothing before the server's answer (gorilla refuses one
		// that does), so nothing is lost by leaving fasthttp's read buffer behind.
		if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
			c = u.UnsafeConn()
		}
		w := &connResponseWriter{c: c, h: http.Header{}}
		h.ServeHTTP(w, req)
		if !w.hijacked {
			_ = w.flush()
			_ = c.Close()
		}
	})
}

// httpRequest copies what a net/http handler reads of a request; the copy outlives ctx.
func httpRequest(ctx *fasthttp.RequestCtx) *http.Request {
	h := http.Header{}
	for k, v := range ctx.Request.Header.All() {
		if string(k) != "Host" {
			h.Add(string(k), string(v))
		}
	}
	uri := string(ctx.RequestURI())
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		u = &url.URL{Path: string(ctx.Path())}
	}
	r := &http.Request{Method: string(ctx.Method()), URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: http.NoBody, Host: string(ctx.Host()), RemoteAddr: ctx.RemoteAddr().String(), RequestURI: uri}
	return r.WithContext(context.Background())
}

// connResponseWriter answers on a hijacked connection: either the handler hijacks it in turn, or
// what it writes is sent as a response after which the connection closes.
type connResponseWriter struct {
	c           net.Conn
	h           http.Header
	bw          *bufio.Writer
	wroteHeader bool
	hijacked    bool
}

func (w *connResponseWriter) Header() http.Header { return w.h }

func (w *connResponseWriter) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	w.wroteHeader = true
	w.bw = bufio.NewWriter(w.c)
	fmt.Fprintf(w.bw, "HTTP/1.1 %03d %s\r\n", code, http.StatusText(code))
	w.h.Del("Connection")
	_ = w.h.Write(w.bw)
	_, _ = w.bw.WriteString("Connection: close\r\n\r\n")
}

func (w *connResponseWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	return w.bw.Write(p)
}

func (w *connResponseWriter) flush() error {
	w.WriteHeader(http.StatusOK)
	return w.bw.Flush()
}

func (w *connResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked || w.wroteHeader {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	return w.c, bufio.NewReadWriter(bufio.NewReader(w.c), bufio.NewWriter(w.c)), nil
}
