package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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

// readError is a failure to read the response.
type readError struct {
	err         error
	nothingRead bool
}

func (e *readError) Error() string { return "read response through the tunnel: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

var (
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
	// The reader bounds the upstream's response header (fasthttp parses it in place).
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
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

// startExchange resets the channel's per-exchange state and arms the response-header timeout.
func (tc *tunnelConn) startExchange() {
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
}
