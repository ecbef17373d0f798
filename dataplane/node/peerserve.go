package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// The receiving side of forwarding (peers.go): a node that holds a tunnel's agent takes calls
// other nodes forward to it, only from a node whose enrolled key is in force in its view (it
// never authorises the caller again: the ingress node did, and only a node may ask). It hands
// each to its local agent, waiting for one as its own callers do (failover.go), and copies the
// bytes; the ingress node holds the call (its usage, record, live-call registry and trace).

// Bounds on what peers can hold here: tunnel ids in their channel opens are not checked against
// the view (the agent sessions are), so each connection's calls under way are bounded, and the
// connections.
const (
	maxPeerConns        = 4096
	maxPeerCallsPerConn = 4096
)

// peerConn is one peer node's connection to this node.
type peerConn struct {
	calls  atomic.Int32 // ChannelPeerCalls being served
	nodeID string
	key    ssh.PublicKey
	sc     *ssh.ServerConn
	log    *slog.Logger
	done   chan struct{} // closed when the connection ended
}

func (pc *peerConn) gone() bool {
	select {
	case <-pc.done:
		return true
	default:
		return false
	}
}

// peerKeyExt is the ssh.Permissions extension holding the peer's node id; peerKeyData the key
// in ExtraData (checked again at every call: a node removed since it connected is refused).
const peerKeyExt = "tunnelplane-node-id"

type peerKeyData struct{}

func (n *Node) newPeerSSHConfig() *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		Config:        ssh.Config{KeyExchanges: KeyExchanges, Ciphers: Ciphers, MACs: MACs},
		ServerVersion: "SSH-2.0-tunnelplane_node",
		MaxAuthTries:  2,
		PublicKeyCallback: func(cm ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			id := cm.User()
			if !domain.ValidID(id) || id == n.cfg.NodeID || !n.peerKeyInForce(id, key) {
				n.metrics.peerRefused.WithLabelValues("not_enrolled").Inc()
				return nil, errors.New("not an enrolled node")
			}
			return &ssh.Permissions{Extensions: map[string]string{peerKeyExt: id}, ExtraData: map[any]any{peerKeyData{}: key}}, nil
		},
	}
	c.AddHostKey(n.cfg.PeerKey)
	return c
}

// PeerHandler is the endpoint other nodes forward calls to (mount it at /v1/peer, next to
// AgentHandler): SSH over WebSocket, subprotocol PeerProtocol.
func (n *Node) PeerHandler() http.Handler { return http.HandlerFunc(n.servePeer) }

func (n *Node) servePeer(w http.ResponseWriter, r *http.Request) {
	if !n.forwarding() {
		writeHTTPProblem(w, problem{Status: http.StatusNotFound, Slug: "no-forwarding", Title: "This node takes no forwarded calls"})
		return
	}
	n.mu.RLock()
	leaving := n.draining || n.stopped
	n.mu.RUnlock()
	if leaving {
		w.Header().Set("Retry-After", "5")
		writeHTTPProblem(w, problem{Status: http.StatusServiceUnavailable, Slug: "node-draining", Title: "This node is draining"})
		return
	}
	if err := n.notReady(); err != nil {
		w.Header().Set("Retry-After", "1")
		writeHTTPProblem(w, startingProblem(err))
		return
	}
	if r.Header.Get("Origin") != "" || !websocket.IsWebSocketUpgrade(r) || !slices.Contains(websocket.Subprotocols(r), PeerProtocol) {
		writeHTTPProblem(w, problem{Status: http.StatusBadRequest, Slug: "unsupported-protocol", Title: "Not a node's connection",
			Supported: []string{PeerProtocol}})
		return
	}
	ws, err := n.peerUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	conn := wsconn.New(ws, wsconn.Options{})
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		_ = conn.CloseWithReason(CloseCodeNode, "node stopping")
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go n.runPeer(conn, r.RemoteAddr)
}

func (n *Node) runPeer(conn *wsconn.Conn, remote string) {
	defer n.wg.Done()
	_ = conn.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(conn, n.peerSSH)
	if err != nil {
		n.log.Info("peer node refused", "remote_addr", remote, "error", err)
		_ = conn.CloseWithReason(CloseCodeNode, "ssh handshake failed")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	id := sc.Permissions.Extensions[peerKeyExt]
	pc := &peerConn{nodeID: id, sc: sc, log: n.log.With("peer_node_id", id, "remote_addr", remote), done: make(chan struct{})}
	pc.key, _ = sc.Permissions.ExtraData[peerKeyData{}].(ssh.PublicKey)
	n.mu.Lock()
	if n.stopped || len(n.peerConns) >= maxPeerConns {
		n.mu.Unlock()
		n.metrics.peerRefused.WithLabelValues("too_many").Inc()
		_ = sc.Close()
		return
	}
	n.peerConns[pc] = struct{}{}
	n.mu.Unlock()
	pc.log.Info("peer node connected")
	go func() {
		_ = sc.Wait()
		close(pc.done)
	}()
	for chans != nil || reqs != nil {
		select {
		case nc, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			if nc.ChannelType() != ChannelPeerCall {
				_ = nc.Reject(ssh.UnknownChannelType, "unknown channel type")
				continue
			}
			if pc.calls.Add(1) > maxPeerCallsPerConn {
				pc.calls.Add(-1)
				n.metrics.peerCalls.WithLabelValues(peerRefused).Inc()
				_ = nc.Reject(ssh.ResourceShortage, "too many calls under way from this node")
				continue
			}
			n.wg.Go(func() {
				defer pc.calls.Add(-1)
				n.servePeerCall(pc, nc)
			})
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			if r.WantReply {
				_ = r.Reply(r.Type == RequestKeepalive, nil)
			}
		}
	}
	<-pc.done
	n.mu.Lock()
	delete(n.peerConns, pc)
	n.mu.Unlock()
	pc.log.Info("peer node disconnected")
}

// Outcomes of a forwarded call at the receiving node, the label of
// tunnelplane_node_peer_calls_total.
const (
	peerServed     = "served"      // handed to the local agent
	peerNoAgent    = "no_agent"    // no agent of the tunnel here within the wait
	peerRefused    = "refused"     // the peer's key is no longer in force, or a malformed open
	peerUnreached  = "unreachable" // the agent could not reach its upstream
	peerMaxOrigin  = 256
	peerRetriesMax = 3
)

// servePeerCall hands one ChannelPeerCall to an agent of its tunnel on this node.
func (n *Node) servePeerCall(pc *peerConn, nc ssh.NewChannel) {
	pcall, ok := parsePeerCall(nc.ExtraData())
	if !ok {
		n.metrics.peerCalls.WithLabelValues(peerRefused).Inc()
		_ = nc.Reject(ssh.ConnectionFailed, "malformed peer call")
		return
	}
	if pc.key == nil || !n.peerKeyInForce(pc.nodeID, pc.key) {
		n.metrics.peerCalls.WithLabelValues(peerRefused).Inc()
		_ = nc.Reject(ssh.Prohibited, "not an enrolled node")
		_ = pc.sc.Close()
		return
	}
	wait := min(time.Duration(pcall.WaitMillis)*time.Millisecond, max(n.cfg.FailoverWait, 0))
	rs := &reqState{route: Route{OrgID: pcall.OrgID, TunnelID: pcall.TunnelID}, forwarded: true, gone: pc.gone,
		waitUntil: time.Now().Add(wait), start: time.Now()}
	origin := pcall.OriginAddr
	if pcall.OriginPort != 0 {
		origin = net.JoinHostPort(origin, strconv.FormatUint(uint64(pcall.OriginPort), 10))
	}
	rs.remote = origin
	if pcall.Traceparent != "" && n.tracer != nil {
		rs.trace = n.peerTrace(pc, pcall)
		defer func() { rs.trace.end(0, rs.class) }()
	}
	var tc *tunnelConn
	var avoid *session
	for tries := 0; ; tries++ {
		if err := n.holdSession(nil, rs, avoid); err != nil {
			n.metrics.peerCalls.WithLabelValues(peerNoAgent).Inc()
			_ = nc.Reject(ssh.ResourceShortage, "no agent of the tunnel on this node")
			return
		}
		s := rs.sess
		var err error
		if rs.trace != nil && rs.tracedChannel() {
			tc, err = s.tracedConn(rs, pc.gone)
		} else {
			tc, _, err = s.getConn(origin, pc.gone, rs.traceID(), 0)
		}
		if err == nil {
			break
		}
		rs.sess = nil
		s.release()
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) && oce.Reason == ssh.ConnectionFailed {
			n.metrics.peerCalls.WithLabelValues(peerUnreached).Inc()
			rs.class = ClassUpstream
			_ = nc.Reject(ssh.ConnectionFailed, oce.Message)
			return
		}
		if tries >= peerRetriesMax || !beforeAgent(err, false) {
			n.metrics.peerCalls.WithLabelValues(peerNoAgent).Inc()
			_ = nc.Reject(ssh.ResourceShortage, "the tunnel's agent did not take the call")
			return
		}
		if s.leaving(err) {
			avoid = s
		}
	}
	s := rs.sess
	ch, reqs, err := nc.Accept()
	if err != nil {
		s.release()
		_ = tc.ch.Close()
		return
	}
	s.mu.Lock()
	host := s.hostHeader
	s.mu.Unlock()
	info := PeerInfo{HostHeader: host}
	if rs.trace != nil {
		if info.AgentTraces = tc.traced; !tc.traced {
			info.Traceparent = string(rs.trace.tp[:])
		}
	}
	if _, err := ch.SendRequest(RequestPeerInfo, false, ssh.Marshal(info)); err != nil {
		s.release()
		go ssh.DiscardRequests(reqs)
		_ = ch.Close()
		_ = tc.ch.Close()
		return
	}
	n.metrics.peerCalls.WithLabelValues(peerServed).Inc()
	p := &peerPipe{s: s, ch: ch, tc: tc, busy: true}
	go p.requests(reqs)
	p.run()
}

// peerPipe joins a peer's channel and an agent's channel: bytes are copied both ways until the
// agent's side ends (or a write fails); the peer's end of writing is passed on as the agent's.
// While the forwarding node keeps the channel idle in its pool (RequestPeerIdle) it is not one of
// the agent session's calls in flight, so a drain does not wait for it; the next bytes from the
// peer count it again.
type peerPipe struct {
	s  *session
	ch ssh.Channel
	tc *tunnelConn

	mu   sync.Mutex
	got  uint64 // bytes read from the peer
	busy bool   // counted in s's calls in flight
}

func (p *peerPipe) requests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		var idle PeerIdle
		if r.Type == RequestPeerIdle && ssh.Unmarshal(r.Payload, &idle) == nil {
			p.mu.Lock()
			if p.busy && p.got == idle.Written {
				p.busy = false
				p.s.release()
			}
			p.mu.Unlock()
		}
		if r.WantReply {
			_ = r.Reply(false, nil)
		}
	}
	// x/crypto ends a channel's requests when the other side closed it (not at its end of
	// writing): nothing more can pass, so the agent's channel closes now rather than when its
	// upstream closes the half-closed connection.
	_ = p.tc.ch.Close()
}

// fromPeer is the peer's side read: an idle channel that receives bytes counts again (or, its
// session gone, ends).
func (p *peerPipe) fromPeer(b []byte) (int, error) {
	n, err := p.ch.Read(b)
	if n > 0 {
		p.mu.Lock()
		p.got += uint64(n)
		if !p.busy {
			if aerr := p.s.acquire(); aerr != nil {
				p.mu.Unlock()
				return 0, aerr
			}
			p.busy = true
		}
		p.mu.Unlock()
	}
	return n, err
}

func (p *peerPipe) run() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		bp := copySmall.Get().(*[]byte)
		defer copySmall.Put(bp)
		_, _ = io.CopyBuffer(p.tc, readerFunc(p.fromPeer), *bp)
		_ = p.tc.ch.CloseWrite()
	}()
	bp := copySmall.Get().(*[]byte)
	_, _ = io.CopyBuffer(p.ch, struct{ io.Reader }{p.tc}, *bp)
	copySmall.Put(bp)
	_ = p.ch.Close()
	_ = p.tc.ch.Close()
	<-done
	p.mu.Lock()
	if p.busy {
		p.busy = false
		p.s.release()
	}
	p.mu.Unlock()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// parsePeerCall decodes a ChannelPeerCall's payload: ids and the caller's address bounded and
// printable (they are looked up and handed to the agent, never trusted); a traceparent is parsed
// strictly where it is used.
func parsePeerCall(b []byte) (PeerCall, bool) {
	var pcall PeerCall
	if ssh.Unmarshal(b, &pcall) != nil || !peerIDOK(pcall.TunnelID) || !peerIDOK(pcall.OrgID) ||
		len(pcall.OriginAddr) > peerMaxOrigin || !isVisibleASCII(pcall.OriginAddr) || len(pcall.Traceparent) > 128 {
		return PeerCall{}, false
	}
	return pcall, true
}

// peerTrace is the receiving node's span of a traced forwarded call: a child of the forwarding
// node's span when its traceparent parses strictly (else a trace of its own).
func (n *Node) peerTrace(pc *peerConn, pcall PeerCall) *callTrace {
	parent := context.Background()
	if sc, ok := tracing.ParseTraceparent([]byte(pcall.Traceparent)); ok {
		parent = trace.ContextWithRemoteSpanContext(parent, sc)
	}
	c, span := n.tracer.Start(parent, "tunnel peer", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tunnelplane.node_id", n.cfg.NodeID), attribute.String("tunnelplane.peer_node_id", pc.nodeID),
			attribute.String("tunnelplane.tunnel_id", pcall.TunnelID)))
	tr := &callTrace{ctx: c, span: span, owned: true}
	tracing.AppendTraceparent(tr.tp[:0], span.SpanContext())
	return tr
}

// peerIDOK bounds a tunnel or organization id a peer names (it is looked up, never trusted).
func peerIDOK(id string) bool { return id != "" && len(id) <= 64 && isVisibleASCII(id) }
