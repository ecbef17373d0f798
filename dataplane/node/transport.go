package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Errors of the tunnel transport; the ingress maps them to responses and error classes.
var (
	errAgentGone      = errors.New("the agent disconnected")
	errHeaderTimeout  = errors.New("timed out waiting for the upstream's response headers")
	errHeadersNotSent = errors.New("the tunnel connection closed before the request was sent")
	errOpenTimeout    = errors.New("the agent did not accept a tunnel connection in time")
	errTunnelBusy     = errors.New("too many calls in flight on the tunnel")

	// errAgentUnresponsive: the node closed the session because the agent left a keepalive
	// unanswered for KeepaliveTimeout (a frozen or stalled agent).
	errAgentUnresponsive = errors.New("the agent stopped answering keepalives")
)

// tunnelConn is one SSH channel carrying HTTP/1.1 to the agent's upstream. Idle ones are pooled
// per session.
//
// A pooled channel is provably idle: while it sits in the pool a watcher goroutine reads it, and
// a byte (or an end) arriving then retires the channel: a response nobody asked for (an upstream
// that answered twice, or late) would otherwise be read as the answer to the next caller's
// request, and shift every later caller by one response. The watcher hands a byte that arrives
// after the channel was taken to the exchange that took it (the first byte of its answer).
type tunnelConn struct {
	s    *session
	ch   ssh.Channel
	host string // a ChannelPeerCall's: the Host header the peer's agent wants (PeerInfo)
	// A traced ChannelPeerCall's: the peer's agent writes the upstream's traceparent itself, or
	// peerTP is the peer's span, which goes to the upstream (PeerInfo).
	peerAgentTraces bool
	peerTP          string
	idleAt          time.Time
	pooled          bool         // in s.idle (under s.mu)
	watched         chan watch   // the watcher's result, while one runs
	written         atomic.Int64 // bytes sent in the current exchange
	total           atomic.Int64 // bytes sent in all (a peer's channel tells it: RequestPeerIdle)
	read            atomic.Int64 // bytes received in the current exchange
	traced          bool         // one call, never pooled: a ChannelTraced, or a traced ChannelPeerCall
	cause           atomic.Value // string: the trace id of the exchange under way, for a probe it sends
	hdrTimer        *time.Timer  // response-header timeout, reused by every exchange on this channel
	kaTimer         *time.Timer  // probes the agent when the response header is slow (probeAfter), reused
	timedOut        atomic.Bool
}

// watch is what an idle channel's watcher read: one byte, or the error that ended its read.
type watch struct {
	b   byte
	err error
}

func (tc *tunnelConn) Read(p []byte) (int, error) {
	if tc.watched != nil && len(p) > 0 {
		w := <-tc.watched
		tc.watched = nil
		if w.err != nil {
			return 0, w.err
		}
		p[0] = w.b
		tc.read.Add(1)
		return 1, nil
	}
	n, err := tc.ch.Read(p)
	tc.read.Add(int64(n))
	return n, err
}

func (tc *tunnelConn) Write(p []byte) (int, error) {
	n, err := tc.ch.Write(p)
	tc.written.Add(int64(n))
	tc.total.Add(int64(n))
	return n, err
}

// hostHeader is the Host header the upstream wants ("" keeps the caller's).
func (tc *tunnelConn) hostHeader() string {
	if tc.s.peer != nil {
		return tc.host
	}
	tc.s.mu.Lock()
	defer tc.s.mu.Unlock()
	return tc.s.hostHeader
}

// getConn takes the most recently used idle channel or opens a new one. gone reports whether the
// caller has left; a caller that leaves while the agent has not accepted the channel yet stops
// waiting for it. wait is how long a peer may wait for an agent (a peer session's channel).
func (s *session) getConn(origin string, gone func() bool, cause string, wait time.Duration) (tc *tunnelConn, reused bool, err error) {
	return s.getConnFor(origin, gone, cause, wait, "")
}

// getConnFor is getConn; traceparent, on a peer session, asks for a channel of one traced call
// (never pooled) carrying it.
func (s *session) getConnFor(origin string, gone func() bool, cause string, wait time.Duration, traceparent string) (tc *tunnelConn, reused bool, err error) {
	var stale []*tunnelConn
	defer func() {
		for _, c := range stale {
			_ = c.ch.Close()
		}
	}()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, false, s.gone()
	}
	now := s.n.cfg.Now()
	for len(s.idle) > 0 && traceparent == "" {
		c := s.idle[len(s.idle)-1]
		s.idle[len(s.idle)-1] = nil
		s.idle = s.idle[:len(s.idle)-1]
		c.pooled = false
		if now.Sub(c.idleAt) > s.n.cfg.IdleConnTimeout {
			stale = append(stale, c)
			continue
		}
		s.mu.Unlock()
		return c, true, nil
	}
	host, port := originOf(origin)
	typ, extra := ChannelPeerCall, []byte(nil)
	if s.peer != nil {
		wait = min(max(wait, 0), time.Duration(math.MaxUint32)*time.Millisecond)
		extra = ssh.Marshal(PeerCall{TunnelID: s.ident.TunnelID, OrgID: s.ident.OrgID, OriginAddr: host, OriginPort: port,
			WaitMillis: uint32(wait.Milliseconds()), Traceparent: traceparent})
	} else {
		fwd := *s.forward
		typ, wait = ChannelForwarded, 0
		extra = ssh.Marshal(ForwardedChannel{Addr: fwd.BindAddr, Port: fwd.BindPort, OriginAddr: host, OriginPort: port})
	}
	s.mu.Unlock()
	ch, info, err := s.openChannelType(typ, extra, gone, cause, wait, traceparent != "")
	if err != nil {
		return nil, false, wrapOpenErr(s, err)
	}
	return &tunnelConn{s: s, ch: ch, host: info.HostHeader, traced: traceparent != "", peerAgentTraces: info.AgentTraces, peerTP: info.Traceparent}, false, nil
}

// wrapOpenErr is a failed channel open as the ingress maps it.
func wrapOpenErr(s *session, err error) error {
	var oce *ssh.OpenChannelError
	if errors.As(err, &oce) || errors.Is(err, errOpenTimeout) || errors.Is(err, errCallerGone) {
		return fmt.Errorf("open tunnel channel: %w", err)
	}
	return fmt.Errorf("open tunnel channel: %w: %w", s.gone(), err)
}

// pendingOpen is a channel open the agent has not answered yet.
type pendingOpen struct {
	mu        sync.Mutex
	ch        ssh.Channel
	info      PeerInfo
	err       error
	done      bool
	abandoned bool
	ready     chan struct{}
}

// openChannel asks the agent for a channel and waits at most ChannelOpenTimeout, or until the
// caller leaves. x/crypto/ssh's OpenChannel cannot be cancelled, so it runs on its own goroutine:
// a caller that stops waiting leaves it behind, holding one of the tunnel's call slots until the
// agent answers (a channel that opens late joins the pool). An agent that never answers opens
// thus fills its tunnel's slots and its callers are answered 503 at once, instead of piling up.
// oneCall: the channel carries one call and is never pooled (a traced one). info is what a peer
// said of a ChannelPeerCall.
func (s *session) openChannelType(typ string, extra []byte, gone func() bool, cause string, wait time.Duration, oneCall bool) (ssh.Channel, PeerInfo, error) {
	po := &pendingOpen{ready: make(chan struct{})}
	go func() {
		// The agent sends no channel requests; x/crypto drops them once the channel closes, so
		// no goroutine is spent draining them. A peer sends one, PeerInfo, first.
		ch, reqs, err := s.mux.OpenChannel(typ, extra)
		var info PeerInfo
		if err == nil && typ == ChannelPeerCall {
			if info, err = readPeerInfo(reqs, s.n.cfg.ChannelOpenTimeout); err != nil {
				_ = ch.Close()
			}
		}
		po.mu.Lock()
		if po.abandoned {
			po.mu.Unlock()
			if err == nil && oneCall {
				_ = ch.Close() // one call's channel: its call is gone
			} else if err == nil {
				s.putIdle(&tunnelConn{s: s, ch: ch, host: info.HostHeader})
			}
			s.release()
			return
		}
		po.ch, po.info, po.err, po.done = ch, info, err, true
		po.mu.Unlock()
		close(po.ready)
	}()
	timeout := time.NewTimer(s.n.cfg.ChannelOpenTimeout + wait)
	defer timeout.Stop()
	poll := time.NewTicker(callerPollInterval)
	defer poll.Stop()
	started := time.Now()
	var why error
	for why == nil {
		select {
		case <-po.ready:
			return po.ch, po.info, po.err
		case <-timeout.C:
			why = errOpenTimeout
		case <-poll.C:
			if gone != nil && gone() {
				why = fmt.Errorf("%w: it left while the agent accepted the connection", errCallerGone)
			} else if time.Since(started) >= probeAfter {
				s.probeSoon(cause) // a frozen agent is closed within KeepaliveTimeout, failing this open
			}
		}
	}
	po.mu.Lock()
	if po.done {
		po.mu.Unlock()
		return po.ch, po.info, po.err
	}
	po.abandoned = true
	po.mu.Unlock()
	s.holdSlot()
	if errors.Is(why, errOpenTimeout) {
		s.log.Warn("the agent did not accept a tunnel connection in time", "timeout", s.n.cfg.ChannelOpenTimeout)
	}
	return nil, PeerInfo{}, why
}

// callerPollInterval is how often a caller waiting for a channel open is checked for having left.
const callerPollInterval = 100 * time.Millisecond

// putIdle returns a channel whose exchange ended cleanly to the pool, watched.
func (s *session) putIdle(tc *tunnelConn) {
	if s.peer != nil {
		// Before it is watched: nothing else writes to the channel until it is taken again.
		if _, err := tc.ch.SendRequest(RequestPeerIdle, false, ssh.Marshal(PeerIdle{Written: uint64(tc.total.Load())})); err != nil {
			_ = tc.ch.Close()
			return
		}
	}
	s.mu.Lock()
	if s.closing || len(s.idle) >= s.n.cfg.MaxIdleConnsPerTunnel {
		s.mu.Unlock()
		_ = tc.ch.Close()
		return
	}
	tc.idleAt = s.n.cfg.Now()
	tc.pooled = true
	w := make(chan watch, 1)
	tc.watched = w
	s.idle = append(s.idle, tc)
	s.mu.Unlock()
	go s.watchIdle(tc, w)
}

// watchIdle reads the first byte that arrives on a pooled channel. If the channel is still in
// the pool then, nobody asked for it: the channel is retired. Otherwise the exchange that took
// the channel gets it.
func (s *session) watchIdle(tc *tunnelConn, w chan<- watch) {
	var b [1]byte
	n, err := tc.ch.Read(b[:])
	if n == 0 && err == nil {
		err = io.ErrNoProgress
	}
	s.mu.Lock()
	if tc.pooled {
		tc.pooled = false
		if i := slices.Index(s.idle, tc); i >= 0 {
			s.idle = slices.Delete(s.idle, i, i+1)
		}
		s.mu.Unlock()
		_ = tc.ch.Close()
		if err == nil {
			s.n.metrics.unsolicited.Inc()
			s.log.Debug("an idle tunnel connection received bytes nobody asked for; retired")
		}
		return
	}
	s.mu.Unlock()
	w <- watch{b: b[0], err: err}
}

// pruneIdle closes channels idle longer than IdleConnTimeout (the oldest are first).
func (s *session) pruneIdle(now time.Time) {
	s.mu.Lock()
	i := 0
	for i < len(s.idle) && now.Sub(s.idle[i].idleAt) > s.n.cfg.IdleConnTimeout {
		i++
	}
	stale := append([]*tunnelConn(nil), s.idle[:i]...)
	for _, c := range stale {
		c.pooled = false
	}
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
	if tc.kaTimer == nil {
		tc.kaTimer = time.AfterFunc(probeAfter, func() {
			cause, _ := tc.cause.Load().(string)
			tc.s.probeSoon(cause)
		})
	} else {
		tc.kaTimer.Reset(probeAfter)
	}
}

// stopTimers disarms the exchange's timers once the response header arrived or the exchange failed.
func (tc *tunnelConn) stopTimers() {
	tc.hdrTimer.Stop()
	tc.kaTimer.Stop()
}

// parsePeerInfo decodes a RequestPeerInfo's payload: the Host header is checked as an agent's own
// word is, and a traceparent that does not parse strictly is dropped (it would go upstream).
func parsePeerInfo(b []byte) (PeerInfo, bool) {
	var info PeerInfo
	if ssh.Unmarshal(b, &info) != nil || len(info.HostHeader) > 255 || !isHostValue([]byte(info.HostHeader)) {
		return PeerInfo{}, false
	}
	if info.Traceparent != "" {
		if _, ok := tracing.ParseTraceparent([]byte(info.Traceparent)); !ok {
			info.Traceparent = ""
		}
	}
	return info, true
}

// readPeerInfo reads the PeerInfo a peer sends first on a ChannelPeerCall (within timeout): the
// Host header its agent wants, checked as an agent's own word is, and a traceparent that must
// parse strictly (it goes to the upstream).
func readPeerInfo(reqs <-chan *ssh.Request, timeout time.Duration) (PeerInfo, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r, ok := <-reqs:
		if !ok || r.Type != RequestPeerInfo {
			return PeerInfo{}, fmt.Errorf("%w: the peer sent no peer info", errHeadersNotSent)
		}
		info, ok := parsePeerInfo(r.Payload)
		if !ok {
			return PeerInfo{}, fmt.Errorf("%w: the peer sent no valid peer info", errHeadersNotSent)
		}
		return info, nil
	case <-t.C:
		return PeerInfo{}, fmt.Errorf("%w: the peer sent no peer info in time", errHeadersNotSent)
	}
}
