package node

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// The proxy is httputil.ReverseProxy's behaviour (hop-by-hop headers, X-Forwarded-*, upgrades,
// trailers, flush per write, abort on a broken body) on a narrower path: it calls the tunnel
// transport directly and copies with a buffer that grows from 32 KiB to 256 KiB once a read
// fills it. Bulk transfers then cross the node in large writes (a loopback write costs about
// half as much per byte at 256 KiB as at 32 KiB), while the many slow streams of a busy node
// (model tokens) each keep only 32 KiB.

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1, plus their old relatives.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// outgoing builds the request the upstream sees.
func (n *Node) outgoing(r *http.Request, rs *reqState) *http.Request {
	out := new(http.Request)
	*out = *r
	out.Header = make(http.Header, len(r.Header)+4)
	for k, v := range r.Header {
		out.Header[k] = v
	}
	// Forwarding headers describe this hop only; what the caller claimed is not trusted.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Prefix"} {
		out.Header.Del(k)
	}
	u := &url.URL{Scheme: "http", Host: rs.route.Name, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if rs.prefix != "" {
		raw := strings.TrimPrefix(r.URL.EscapedPath(), rs.prefix)
		if !strings.HasPrefix(raw, "/") {
			raw = "/" + raw
		}
		if p, err := url.PathUnescape(raw); err == nil {
			u.Path, u.RawPath = p, ""
			if u.EscapedPath() != raw {
				u.RawPath = raw
			}
		}
		out.Header.Set("X-Forwarded-Prefix", rs.prefix)
	}
	out.URL = u
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil // no body: no "Transfer-Encoding: chunked" for an empty one
	}

	up := upgradeType(r.Header)
	removeHopHeaders(out.Header)
	if httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers") {
		out.Header.Set("Te", "trailers")
	}
	if up != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", up)
	}
	// The caller's credential is for the tunnel, never for the upstream.
	out.Header.Del("Authorization")
	// The body is sent at once anyway; an interim 100 Continue would only cost a round trip.
	out.Header.Del("Expect")
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		out.Header.Set("X-Forwarded-For", host)
	}
	out.Header.Set("X-Forwarded-Host", r.Host)
	if r.TLS != nil {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // no Go default User-Agent on the caller's behalf
	}
	out.Host = r.Host
	rs.sess.mu.Lock()
	if rs.sess.hostHeader != "" {
		out.Host = rs.sess.hostHeader
	}
	rs.sess.mu.Unlock()
	return out
}

// forward carries one request through the tunnel and streams the response back.
func (n *Node) forward(w http.ResponseWriter, r *http.Request, rs *reqState) {
	out := n.outgoing(r, rs)
	resp, err := n.transport.roundTrip(out, rs)
	if err != nil {
		n.proxyError(w, r, rs, err)
		return
	}
	rs.status = resp.StatusCode
	if resp.StatusCode >= 500 {
		rs.class = ClassStatus5xx
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		n.switchProtocols(w, r, out, resp, rs)
		return
	}
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Set("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if err := copyStreaming(w, rc, resp.Body); err != nil {
		resp.Body.Close()
		// Ending the handler normally would complete a chunked body: the caller would take a
		// truncated answer for a whole one. Abort the connection instead.
		panic(http.ErrAbortHandler)
	}
	resp.Body.Close()
	if len(resp.Trailer) > 0 {
		for k, v := range resp.Trailer {
			h[k] = v
		}
	}
}

var (
	copySmall = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	copyLarge = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
)

// copyStreaming writes every read at once (a token stream must not wait in a buffer) and grows
// its buffer when reads fill it.
func copyStreaming(w io.Writer, rc *http.ResponseController, body io.Reader) error {
	pool := &copySmall
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for {
		buf := *bp
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("write response: %w", err)
			}
			if err := rc.Flush(); err != nil {
				return fmt.Errorf("flush response: %w", err)
			}
			if n == len(buf) && pool == &copySmall {
				pool.Put(bp)
				pool = &copyLarge
				bp = pool.Get().(*[]byte)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("read response: %w", rerr)
		}
	}
}

// switchProtocols completes an upgrade (WebSocket): the caller's connection and the tunnel
// channel are joined and copied both ways until either side ends.
func (n *Node) switchProtocols(w http.ResponseWriter, r *http.Request, out *http.Request, resp *http.Response, rs *reqState) {
	back := resp.Body.(io.ReadWriteCloser)
	defer back.Close()
	want, got := upgradeType(out.Header), upgradeType(resp.Header)
	if !strings.EqualFold(want, got) {
		n.proxyError(w, r, rs, fmt.Errorf("upstream switched to protocol %q, the caller asked for %q", got, want))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		n.proxyError(w, r, rs, fmt.Errorf("hijack the caller's connection: %w", err))
		return
	}
	defer conn.Close()
	removeHopHeaders(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", got)
	resp.Body = nil // only the status line and headers
	if err := resp.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Bytes the caller sent after its upgrade request may already sit in brw.
		_, _ = io.Copy(back, struct{ io.Reader }{brw.Reader})
		_ = back.Close()
	}()
	_, _ = io.Copy(struct{ io.Writer }{conn}, struct{ io.Reader }{back})
	_ = conn.Close()
	<-done
}
