package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// Errors of the tunnel transport; the ingress maps them to responses and error classes.
var (
	errAgentGone      = errors.New("the agent disconnected")
	errHeaderTimeout  = errors.New("timed out waiting for the upstream's response headers")
	errHeadersNotSent = errors.New("the tunnel connection closed before the request was sent")
)

// tunnelConn is one SSH channel carrying HTTP/1.1 to the agent's upstream. Idle ones are pooled
// per session with no goroutine and no buffer of their own: an idle channel costs a few hundred
// bytes on the node.
type tunnelConn struct {
	s        *session
	ch       ssh.Channel
	idleAt   time.Time
	written  atomic.Int64 // bytes sent in the current exchange
	read     atomic.Int64 // bytes received in the current exchange
	hdrTimer *time.Timer  // response-header timeout, reused by every exchange on this channel
	timedOut atomic.Bool
}

func (tc *tunnelConn) Read(p []byte) (int, error) {
	n, err := tc.ch.Read(p)
	tc.read.Add(int64(n))
	return n, err
}

func (tc *tunnelConn) Write(p []byte) (int, error) {
	n, err := tc.ch.Write(p)
	tc.written.Add(int64(n))
	return n, err
}

// getConn takes the most recently used idle channel or opens a new one.
func (s *session) getConn(origin string) (tc *tunnelConn, reused bool, err error) {
	var stale []*tunnelConn
	defer func() {
		for _, c := range stale {
			_ = c.ch.Close()
		}
	}()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, false, errAgentGone
	}
	now := s.n.cfg.Now()
	for len(s.idle) > 0 {
		c := s.idle[len(s.idle)-1]
		s.idle[len(s.idle)-1] = nil
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(c.idleAt) > s.n.cfg.IdleConnTimeout {
			stale = append(stale, c)
			continue
		}
		s.mu.Unlock()
		return c, true, nil
	}
	fwd := *s.forward
	s.mu.Unlock()
	host, port := originOf(origin)
	ch, _, err := s.sc.OpenChannel(ChannelForwarded, ssh.Marshal(ForwardedChannel{
		Addr: fwd.BindAddr, Port: fwd.BindPort, OriginAddr: host, OriginPort: port,
	}))
	// The agent sends no channel requests; x/crypto drops them once the channel closes, so no
	// goroutine is spent draining them.
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, false, fmt.Errorf("open tunnel channel: %w", err)
		}
		return nil, false, fmt.Errorf("open tunnel channel: %w: %w", errAgentGone, err)
	}
	return &tunnelConn{s: s, ch: ch}, false, nil
}

// putIdle returns a channel whose exchange ended cleanly to the pool.
func (s *session) putIdle(tc *tunnelConn) {
	s.mu.Lock()
	if s.closing || len(s.idle) >= s.n.cfg.MaxIdleConnsPerTunnel {
		s.mu.Unlock()
		_ = tc.ch.Close()
		return
	}
	tc.idleAt = s.n.cfg.Now()
	s.idle = append(s.idle, tc)
	s.mu.Unlock()
}

// pruneIdle closes channels idle longer than IdleConnTimeout (the oldest are first).
func (s *session) pruneIdle(now time.Time) {
	s.mu.Lock()
	i := 0
	for i < len(s.idle) && now.Sub(s.idle[i].idleAt) > s.n.cfg.IdleConnTimeout {
		i++
	}
	stale := append([]*tunnelConn(nil), s.idle[:i]...)
	s.idle = append(s.idle[:0], s.idle[i:]...)
	s.mu.Unlock()
	for _, c := range stale {
		_ = c.ch.Close()
	}
}

// transport is HTTP/1.1 over the session's channels. It is leaner than http.Transport over a
// custom dialer: no reader and writer goroutine per pooled connection, no buffers held while
// idle, and a request without a body is written and its response read on the caller's
// goroutine.
type transport struct{ n *Node }

func (t *transport) roundTrip(req *http.Request, rs *reqState) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		tc, reused, err := rs.sess.getConn(rs.remote)
		if err != nil {
			return nil, err
		}
		resp, err := tc.roundTrip(req, rs)
		if err == nil {
			return resp, nil
		}
		// A pooled channel may have been closed by the agent (its upstream dropped an idle
		// keep-alive connection) just before we used it. Retry when nothing was sent, or when
		// nothing came back and the request can be replayed.
		var re *readError
		retry := errors.Is(err, errHeadersNotSent) ||
			(errors.As(err, &re) && re.nothingRead && isReplayable(req))
		if !reused || !retry || attempt >= 3 {
			return nil, err
		}
	}
}

// readError is a failure to read the response.
type readError struct {
	err         error
	nothingRead bool
}

func (e *readError) Error() string { return "read response through the tunnel: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func isReplayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

var (
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
)

func getWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); writerPool.Put(bw) }

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) { br.Reset(nil); readerPool.Put(br) }

func (tc *tunnelConn) roundTrip(req *http.Request, rs *reqState) (*http.Response, error) {
	tc.written.Store(0)
	tc.read.Store(0)
	tc.timedOut.Store(false)
	if tc.hdrTimer == nil {
		tc.hdrTimer = time.AfterFunc(tc.s.n.cfg.ResponseHeaderTimeout, func() {
			tc.timedOut.Store(true)
			_ = tc.ch.Close()
		})
	} else {
		tc.hdrTimer.Reset(tc.s.n.cfg.ResponseHeaderTimeout)
	}
	hdrTimer := tc.hdrTimer
	// A caller that goes away aborts the exchange: the agent then closes the upstream connection,
	// which stops a model generating for nobody.
	stopCtx := context.AfterFunc(req.Context(), func() { _ = tc.ch.Close() })

	bw := getWriter(tc)
	var writeDone chan error
	if req.Body == nil || req.Body == http.NoBody {
		err := req.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		putWriter(bw)
		if err != nil {
			hdrTimer.Stop()
			stopCtx()
			_ = tc.ch.Close()
			if tc.written.Load() == 0 {
				return nil, fmt.Errorf("%w: %w", errHeadersNotSent, err)
			}
			return nil, fmt.Errorf("write request through the tunnel: %w", err)
		}
	} else {
		// Write the body while the response is read: an upstream may answer (or stream its
		// answer) before it has read the whole body.
		// Request.Write flushes the headers before it reads a streamed body, so if nothing was
		// written the body is untouched and the request may be retried on another channel.
		writeDone = make(chan error, 1)
		go func() {
			err := req.Write(bw)
			if err == nil {
				err = bw.Flush()
			}
			putWriter(bw)
			if err != nil {
				_ = tc.ch.Close() // the upstream must not wait for the rest of a body that will not come
				if tc.written.Load() == 0 {
					err = fmt.Errorf("%w: %w", errHeadersNotSent, err)
				}
			}
			writeDone <- err
		}()
	}

	br := getReader(tc)
	resp, err := readResponse(br, req)
	hdrTimer.Stop()
	if err != nil {
		stopCtx()
		_ = tc.ch.Close()
		var werr error
		if writeDone != nil {
			werr = <-writeDone
		}
		putReader(br)
		switch {
		case tc.timedOut.Load():
			return nil, errHeaderTimeout
		case werr != nil && errors.Is(werr, errHeadersNotSent):
			return nil, werr
		case werr != nil && req.Context().Err() == nil:
			return nil, fmt.Errorf("write request through the tunnel: %w", werr)
		case req.Context().Err() != nil:
			return nil, req.Context().Err()
		}
		return nil, &readError{err: err, nothingRead: tc.read.Load() == 0}
	}
	rs.ttfb.Store(int64(time.Since(rs.start)))
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The caller and the upstream now talk directly; switchProtocols copies both ways.
		resp.Body = &upgradeBody{tc: tc, br: br, rs: rs, stop: stopCtx}
		return resp, nil
	}
	b := &respBody{tc: tc, r: resp.Body, br: br, writeDone: writeDone, stop: stopCtx, rs: rs,
		reusable: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// readResponse reads the final response, skipping informational ones (100 Continue, 103).
func readResponse(br *bufio.Reader, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return resp, nil
	}
}

// respBody streams a response body and returns the channel to the pool after a clean end.
type respBody struct {
	tc        *tunnelConn
	r         io.ReadCloser
	br        *bufio.Reader
	writeDone chan error
	stop      func() bool
	rs        *reqState
	reusable  bool
	once      sync.Once
}

func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.rs.bytesOut.Add(int64(n))
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// Close before the end abandons the exchange: the channel closes (the body's own Close would
// try to read a possibly endless stream to its end).
func (b *respBody) Close() error {
	b.finish(false)
	return nil
}

func (b *respBody) finish(eof bool) {
	b.once.Do(func() {
		reuse := b.stop() && eof && b.reusable && b.br.Buffered() == 0
		if reuse && b.writeDone != nil {
			select {
			case err := <-b.writeDone:
				reuse = err == nil
			default:
				reuse = false // the upstream answered without reading the whole body
			}
		}
		if reuse {
			putReader(b.br)
			b.tc.s.putIdle(b.tc)
			return
		}
		_ = b.tc.ch.Close()
	})
}

// upgradeBody is the upstream side of an upgraded connection (WebSocket).
type upgradeBody struct {
	tc   *tunnelConn
	br   *bufio.Reader // may hold bytes the upstream sent right after its 101
	rs   *reqState
	stop func() bool
	once sync.Once
}

func (u *upgradeBody) Read(p []byte) (int, error) {
	n, err := u.br.Read(p)
	u.rs.bytesOut.Add(int64(n))
	return n, err
}

func (u *upgradeBody) Write(p []byte) (int, error) {
	n, err := u.tc.Write(p)
	u.rs.bytesIn.Add(int64(n))
	return n, err
}

func (u *upgradeBody) Close() error {
	u.once.Do(func() {
		u.stop()
		_ = u.tc.ch.Close()
	})
	return nil
}
