package node

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Live calls: every call the ingress let through is held here, keyed by what authorised it (the
// principal, its credential, the tunnel), from its authorization until it ends, so that a
// withdrawal of access ends the calls in flight too, not only the next ones. When the view
// applies an event that can withdraw access (Node.Reauthorize), or a grant or access key expires
// by the node's clock (a timer to the earliest such deadline), each affected call is decided
// again by the Authorizer that let it in, and the ones it now refuses are cut: their tunnel
// channel closes (the agent closes the upstream connection) and so does the caller's connection.

// maxLiveCalls bounds the registry. A call that cannot be held could not be cut: beyond it calls
// are refused (503). Calls are bounded by connections long before (MaxCallsPerTunnel, the
// server's concurrency); this is the registry's own guarantee.
const maxLiveCalls = 1 << 18

// wsCutGrace is how long a WebSocket that is being cut may take to write what it is writing and
// its close frame before its connection closes regardless.
const wsCutGrace = 250 * time.Millisecond

var (
	// errAccessWithdrawn: the caller's access ended while its call was in flight.
	errAccessWithdrawn = errors.New("the caller's access to the tunnel was withdrawn while the call was in flight")
	// errTooManyLiveCalls: the registry is full (maxLiveCalls).
	errTooManyLiveCalls = errors.New("the node holds as many calls in flight as it can follow")
)

// Kinds of cut calls, the label of tunnelplane_node_ingress_calls_cut_total.
const (
	cutWaiting   = "waiting"   // before the response header arrived: answered 403 access-withdrawn
	cutStream    = "stream"    // a response body streaming (SSE, chunked, a long download)
	cutWebSocket = "websocket" // an upgraded connection
)

// AccessDeadliner is implemented by an IngressAuthorizer whose decisions can end by the clock
// alone (a grant's or an access key's expiry): AccessUntil is when the access that allowed p to
// call r ends (zero: not by the clock). The node then decides a live call again at that time.
type AccessDeadliner interface {
	AccessUntil(p Principal, r Route) time.Time
}

// liveCall is one call in the registry.
type liveCall struct {
	p      Principal
	bearer string // the credential, for a re-authentication when token keys are revoked; never logged
	route  Route

	// Under shard.mu.
	shard      *liveShard
	deadline   time.Time
	prev, next *liveCall
	listed     bool

	mu      sync.Mutex
	cutDone bool
	over    bool        // its exchange finished (detach): nothing of it is left to cut
	tc      *tunnelConn // the call's tunnel channel, while it has one
	conn    net.Conn    // the caller's connection, once the response streams
	ws      net.Conn    // the caller's connection, once it is a WebSocket
}

// liveShards spread the registry over locks: every call registers and leaves, from as many
// goroutines as there are calls.
const liveShards = 16

// liveShard is a part of the registry: an intrusive list (no allocation, nothing kept after a
// call ends).
type liveShard struct {
	mu   sync.Mutex
	root liveCall
}

// liveCalls is the registry.
type liveCalls struct {
	max    int64
	total  atomic.Int64
	epoch  atomic.Uint64 // advanced by every re-decision, before it looks at the list
	next   atomic.Uint32 // the shard of the next call
	shards [liveShards]liveShard

	tmu   sync.Mutex
	timer *time.Timer // at the earliest deadline
	at    time.Time   // the timer's deadline (zero: not set)
	fire  func()      // what the timer runs
	done  bool        // stopped: no more timers

	recheck sync.Mutex // one re-decision at a time (the view's and the timer's)
}

func newLiveCalls(max int, fire func()) *liveCalls {
	r := &liveCalls{max: int64(max), fire: fire}
	for i := range r.shards {
		root := &r.shards[i].root
		root.next, root.prev = root, root
	}
	return r
}

// add registers lc; epoch is what the registry's epoch read before the call was authorized.
// It reports whether the registry had room, and whether a re-decision began since epoch was read
// (the call must then be decided again: that re-decision may have missed it).
func (r *liveCalls) add(lc *liveCall, epoch uint64) (ok, stale bool) {
	if r.total.Add(1) > r.max {
		r.total.Add(-1)
		return false, false
	}
	d := lc.deadline // once listed, the deadline is the shard's
	s := &r.shards[r.next.Add(1)%liveShards]
	s.mu.Lock()
	lc.shard = s
	lc.prev, lc.next = s.root.prev, &s.root
	s.root.prev.next = lc
	s.root.prev = lc
	lc.listed = true
	s.mu.Unlock()
	if !d.IsZero() {
		r.tmu.Lock()
		r.armLocked(d)
		r.tmu.Unlock()
	}
	return true, r.epoch.Load() != epoch
}

// remove forgets lc (a call that ended); safe for nil and twice.
func (r *liveCalls) remove(lc *liveCall) {
	if lc == nil || lc.shard == nil {
		return
	}
	s := lc.shard
	s.mu.Lock()
	if lc.listed {
		lc.prev.next, lc.next.prev = lc.next, lc.prev
		lc.prev, lc.next, lc.listed = nil, nil, false
		r.total.Add(-1)
	}
	s.mu.Unlock()
}

// len is the number of calls held.
func (r *liveCalls) len() int { return int(r.total.Load()) }

// list is the calls held for which match is true (all for nil).
func (r *liveCalls) list(match func(*liveCall) bool) []*liveCall {
	out := make([]*liveCall, 0, r.len())
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for lc := s.root.next; lc != &s.root; lc = lc.next {
			if match == nil || match(lc) {
				out = append(out, lc)
			}
		}
		s.mu.Unlock()
	}
	return out
}

// setDeadline sets a held call's deadline.
func (r *liveCalls) setDeadline(lc *liveCall, d time.Time) {
	if lc.shard == nil {
		return
	}
	lc.shard.mu.Lock()
	lc.deadline = d
	lc.shard.mu.Unlock()
}

// armLocked sets the timer to d when d is earlier than it (under r.tmu).
func (r *liveCalls) armLocked(d time.Time) {
	if d.IsZero() || r.done || (!r.at.IsZero() && !d.Before(r.at)) {
		return
	}
	r.at = d
	wait := time.Until(d)
	if r.timer == nil {
		r.timer = time.AfterFunc(wait, r.fire)
		return
	}
	r.timer.Reset(wait)
}

// rearm sets the timer to the earliest deadline of the calls held (after a re-decision).
func (r *liveCalls) rearm() {
	var first time.Time
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for lc := s.root.next; lc != &s.root; lc = lc.next {
			if !lc.deadline.IsZero() && (first.IsZero() || lc.deadline.Before(first)) {
				first = lc.deadline
			}
		}
		s.mu.Unlock()
	}
	r.tmu.Lock()
	defer r.tmu.Unlock()
	r.at = time.Time{}
	if first.IsZero() && r.timer != nil {
		r.timer.Stop()
	}
	r.armLocked(first)
}

// stop stops the timer and waits for a re-decision under way; safe to call twice.
func (r *liveCalls) stop() {
	r.tmu.Lock()
	r.done = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.tmu.Unlock()
	r.recheck.Lock()
	r.recheck.Unlock() //nolint:staticcheck // waits for a re-decision under way
}

// attach gives the call its tunnel channel; false when the call was cut already (tc is then
// the caller's to close).
func (lc *liveCall) attach(tc *tunnelConn) bool {
	if lc == nil {
		return true
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.tc = tc
	return !lc.cutDone
}

// detach ends the call's exchange before its channel returns to the pool and its connection
// to the caller's next request: a cut must never close a channel another call holds next, nor a
// keep-alive connection that moved on. It reports whether the call was cut (then the channel is
// not reused).
func (lc *liveCall) detach() (cut bool) {
	if lc == nil {
		return false
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.tc, lc.conn, lc.over = nil, nil, true
	return lc.cutDone
}

// wasCut reports whether the call was cut.
func (lc *liveCall) wasCut() bool {
	if lc == nil {
		return false
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.cutDone
}

// streaming records the caller's connection once the response body streams; a call cut already
// loses it at once.
func (lc *liveCall) streaming(c net.Conn) {
	if lc == nil || c == nil {
		return
	}
	lc.mu.Lock()
	lc.conn = c
	cut := lc.cutDone
	lc.mu.Unlock()
	if cut {
		_ = c.Close()
	}
}

// joined records the caller's connection once it is a WebSocket; it reports whether the call was
// cut already.
func (lc *liveCall) joined(c net.Conn) (cut bool) {
	if lc == nil {
		return false
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.ws, lc.conn = c, nil
	return lc.cutDone
}

// cut marks the call cut (once) and returns its kind ("" if it was cut already) and what ends
// it: the tunnel channel closes, and the caller's connection, or for a WebSocket a write deadline
// lets the joining goroutine send the close frame first (wsFarewell). The kind is counted before
// the call ends, so that whoever sees it end sees it counted.
func (lc *liveCall) cut() (kind string, end func()) {
	lc.mu.Lock()
	if lc.cutDone || lc.over {
		lc.mu.Unlock()
		return "", nil
	}
	lc.cutDone = true
	tc, conn, ws := lc.tc, lc.conn, lc.ws
	lc.mu.Unlock()
	kind = cutWaiting
	switch {
	case ws != nil:
		kind = cutWebSocket
	case conn != nil:
		kind = cutStream
	}
	return kind, func() {
		switch {
		case ws != nil:
			_ = ws.SetWriteDeadline(time.Now().Add(wsCutGrace))
		case conn != nil:
			_ = conn.Close()
		}
		if tc != nil {
			_ = tc.ch.Close()
		}
	}
}

// admitCall authorizes p's call to r and, when it is allowed, registers it (the returned
// liveCall; endRequest forgets it). A re-decision that began while the call was being authorized
// may have missed it: the call is then decided again.
func (n *Node) admitCall(ctx context.Context, p Principal, bearer string, r Route) (*liveCall, error) {
	epoch := n.live.epoch.Load()
	if err := n.cfg.Authorizer.AuthorizeIngress(ctx, p, r); err != nil {
		return nil, err
	}
	lc := &liveCall{p: p, bearer: bearer, route: r}
	if d, ok := n.cfg.Authorizer.(AccessDeadliner); ok {
		lc.deadline = d.AccessUntil(p, r)
	}
	ok, stale := n.live.add(lc, epoch)
	if !ok {
		return nil, errTooManyLiveCalls
	}
	if stale {
		if err := n.cfg.Authorizer.AuthorizeIngress(ctx, p, r); err != nil {
			n.live.remove(lc)
			return nil, err
		}
	}
	return lc, nil
}

// Reauthorize decides every live call again (after the view applied an event that may withdraw
// access: a grant revoked or expired, a role withdrawn, an access key revoked, a tunnel deleted)
// and cuts those the Authorizer now refuses. With credentials (token keys were revoked) each
// call's credential is authenticated again too. It returns how many calls it cut.
func (n *Node) Reauthorize(credentials bool) int {
	return n.reauthorize(credentials, nil)
}

// reauthorizeDue decides again the calls whose deadline has come (the registry's timer).
func (n *Node) reauthorizeDue() {
	now := time.Now()
	n.reauthorize(false, func(lc *liveCall) bool { return !lc.deadline.IsZero() && !now.Before(lc.deadline) })
}

func (n *Node) reauthorize(credentials bool, match func(*liveCall) bool) int {
	r := n.live
	r.recheck.Lock()
	defer r.recheck.Unlock()
	r.epoch.Add(1)
	ctx := context.Background()
	dl, _ := n.cfg.Authorizer.(AccessDeadliner)
	authn := map[string]error{} // per credential, for this round
	cut := 0
	for _, lc := range r.list(match) {
		err := n.decideAgain(ctx, lc, credentials, authn)
		if err == nil {
			if dl != nil {
				d := dl.AccessUntil(lc.p, lc.route)
				if !d.After(time.Now()) {
					d = time.Time{} // allowed past its deadline: the Authorizer knows better than a timer
				}
				r.setDeadline(lc, d)
			}
			continue
		}
		if !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrUnknownTunnel) && !errors.Is(err, ErrUnauthenticated) {
			// Not a refusal (the Authorizer could not decide): the call goes on.
			n.log.Warn("live call not decided again", "tunnel_id", lc.route.TunnelID, "error", err)
			continue
		}
		if kind, end := lc.cut(); kind != "" {
			cut++
			n.metrics.callsCut.WithLabelValues(kind).Inc()
			n.log.Info("live call cut: access withdrawn", "tunnel_id", lc.route.TunnelID, "org_id", lc.route.OrgID,
				"user_id", lc.p.UserID, "access_key_id", lc.p.AccessKeyID, "kind", kind)
			end()
		}
	}
	r.rearm()
	return cut
}

// decideAgain is the ingress's decision for a live call now: its credential (when token keys
// were revoked), then the Authorizer.
func (n *Node) decideAgain(ctx context.Context, lc *liveCall, credentials bool, authn map[string]error) error {
	if credentials && lc.p.AccessKeyID == "" {
		err, seen := authn[lc.bearer]
		if !seen {
			var p Principal
			p, err = n.cfg.Authorizer.AuthenticateCaller(ctx, lc.bearer)
			if err == nil && p.UserID != lc.p.UserID {
				err = ErrUnauthenticated
			}
			authn[lc.bearer] = err
		}
		if err != nil {
			return err
		}
	}
	return n.cfg.Authorizer.AuthorizeIngress(ctx, lc.p, lc.route)
}

// LiveCalls is the number of calls the node holds in its registry (tests, metrics).
func (n *Node) LiveCalls() int { return n.live.len() }

// wsFrames follows the frame boundaries of the WebSocket bytes an upstream sends a caller (RFC
// 6455 §5.2), so that a cut can end the connection with a close frame without splitting a frame.
type wsFrames struct {
	hdr     [14]byte
	hn      int   // header bytes held
	payload int64 // payload bytes of the current frame still to come
	closed  bool  // a close frame passed: the caller has had its close
}

func (f *wsFrames) feed(p []byte) {
	for len(p) > 0 {
		if f.payload > 0 {
			k := min(int64(len(p)), f.payload)
			f.payload -= k
			p = p[k:]
			continue
		}
		f.hdr[f.hn] = p[0]
		f.hn++
		p = p[1:]
		if f.hn < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if f.hdr[1]&0x80 != 0 {
			need += 4
		}
		if f.hn < need {
			continue
		}
		var size int64
		switch l := f.hdr[1] & 0x7f; l {
		case 126:
			size = int64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			size = int64(binary.BigEndian.Uint64(f.hdr[2:10]) & (1<<63 - 1))
		default:
			size = int64(l)
		}
		if f.hdr[0]&0x0f == 0x8 {
			f.closed = true
		}
		f.hn, f.payload = 0, size
	}
}

// atBoundary reports whether the bytes so far end with a whole frame.
func (f *wsFrames) atBoundary() bool { return f.hn == 0 && f.payload == 0 }

// frameWriter writes to the caller and follows the frames of what was written.
type frameWriter struct {
	w io.Writer
	f wsFrames
}

func (fw *frameWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	fw.f.feed(p[:n])
	return n, err
}

// wsClosePolicy is a close frame with status 1008 (policy violation), unmasked as a server's.
var wsClosePolicy = func() []byte {
	const reason = "access withdrawn"
	b := []byte{0x88, byte(2 + len(reason)), 0x03, 0xf0} // 0x03f0 = 1008
	return append(b, reason...)
}()

// wsFarewell ends a cut WebSocket with a close frame (1008) when the upstream's bytes so far end
// with a whole frame and none of them closed it; else the connection just closes.
func (lc *liveCall) wsFarewell(c net.Conn, fw *frameWriter) {
	if !lc.wasCut() || !fw.f.atBoundary() || fw.f.closed {
		return
	}
	_, _ = c.Write(wsClosePolicy)
}
