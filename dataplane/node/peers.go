package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/valyala/fasthttp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/rawconn"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
)

// Any node serves any tunnel. Each node says in the route table which tunnels it holds agents
// for (the assembly watches a NATS KV bucket into PutRoute, DeleteRoute and ExpireRoutes); a
// call for a tunnel with no agent on this node, authorised here as any call is, goes to a node
// the table names (ingress side: this file; the receiving side: peerserve.go).
//
// The table is hostile input: anyone who may write to the bucket can name any node. A call is
// forwarded only to a node whose enrolled key the verified view holds in force (Config.Peers:
// enrolled, not removed), over an SSH connection whose host key must be that key; this node
// logs in with its own enrolled key (Config.PeerKey), and the receiving node takes calls only
// from a node whose key is in force for it. So a removed or unknown node attracts nothing, and
// an entry pointing a known node's id at another address reaches nothing but a failed
// handshake.
//
// One SSH connection per peer carries every tunnel's calls; on it each tunnel has a peer
// session: a session (session.go) whose channels are ChannelPeerCalls, pooled and watched like
// an agent's, so the proxy, its never-sent-twice rule (a call that failed before any byte of it
// was written goes to another route or waits; after, it is answered as it failed), live-call
// cuts and keepalive probes work across the hop unchanged.

// Bounds of the route table and the peer links: entries come from NATS.
const (
	maxRoutes          = 1 << 16
	maxRoutesPerTunnel = 16
	maxPeers           = 1024
	// peerRetryAfter is how long a peer whose connection failed is passed over before it is
	// dialled again (a killed node's entries stay until the bucket's age expires them).
	peerRetryAfter = time.Second
)

var (
	errPeerDown = errors.New("the peer node is unreachable")
	errPeerKey  = errors.New("the peer's host key is not an enrolled key of the node the route names")
)

// peerRoute is one entry of the route table: nodeID holds an agent of the tunnel.
type peerRoute struct {
	nodeID, url string
	seen        time.Time // when the entry was last put (the reader's clock)
}

// forwarding reports whether the node forwards calls to peers and takes theirs.
func (n *Node) forwarding() bool { return n.cfg.Peers != nil && n.cfg.PeerKey != nil }

// PutRoute records that nodeID holds an agent of tunnelID and is reached at url (an entry the
// caller decoded and checked: wire.ParseRouteEntry). Entries of this node are ignored. It
// returns false when the table is full (maxRoutes, maxRoutesPerTunnel): the entry is dropped.
// A new route wakes the calls waiting for the tunnel's agent.
func (n *Node) PutRoute(tunnelID, nodeID, url string) bool {
	if nodeID == n.cfg.NodeID || !n.forwarding() {
		return true
	}
	now := n.cfg.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	routes := n.routes[tunnelID]
	for i := range routes {
		if routes[i].nodeID == nodeID {
			routes[i].seen, routes[i].url = now, url
			return true
		}
	}
	if n.nroutes >= maxRoutes || len(routes) >= maxRoutesPerTunnel {
		n.metrics.routesDropped.Inc()
		return false
	}
	n.routes[tunnelID] = append(routes, peerRoute{nodeID: nodeID, url: url, seen: now})
	n.nroutes++
	n.metrics.routes.Set(float64(n.nroutes))
	n.routeGen++
	n.wakeLocked(tunnelID)
	return true
}

// DeleteRoute forgets that nodeID holds an agent of tunnelID; idle connections to it for the
// tunnel close, calls in flight on them finish.
func (n *Node) DeleteRoute(tunnelID, nodeID string) {
	n.mu.Lock()
	n.deleteRouteLocked(tunnelID, nodeID)
	link := n.peers[nodeID]
	n.mu.Unlock()
	if link != nil {
		link.dropTunnel(tunnelID)
	}
}

func (n *Node) deleteRouteLocked(tunnelID, nodeID string) bool {
	routes := n.routes[tunnelID]
	i := slices.IndexFunc(routes, func(r peerRoute) bool { return r.nodeID == nodeID })
	if i < 0 {
		return false
	}
	routes = slices.Delete(routes, i, i+1)
	if len(routes) == 0 {
		delete(n.routes, tunnelID)
	} else {
		n.routes[tunnelID] = routes
	}
	n.nroutes--
	n.metrics.routes.Set(float64(n.nroutes))
	return true
}

// ExpireRoutes forgets the entries not put since before: a node that stopped refreshing them
// (the bucket's age removes them from NATS without telling watchers on servers before 2.11).
func (n *Node) ExpireRoutes(before time.Time) int {
	type gone struct{ tunnelID, nodeID string }
	var list []gone
	n.mu.Lock()
	for t, routes := range n.routes {
		for _, r := range routes {
			if r.seen.Before(before) {
				list = append(list, gone{t, r.nodeID})
			}
		}
	}
	links := make([]*peerLink, len(list))
	for i, g := range list {
		n.deleteRouteLocked(g.tunnelID, g.nodeID)
		links[i] = n.peers[g.nodeID]
	}
	n.mu.Unlock()
	for i, l := range links {
		if l != nil {
			l.dropTunnel(list[i].tunnelID)
		}
	}
	return len(list)
}

// HeldTunnels lists the tunnels an agent holds on this node: what this node puts in the route
// table. None while it drains or stops.
func (n *Node) HeldTunnels() []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.draining || n.stopped {
		return nil
	}
	out := make([]string, 0, len(n.tunnels))
	for id := range n.tunnels {
		out = append(out, id)
	}
	return out
}

// HeldChanged receives (at most one pending signal) whenever HeldTunnels may have changed.
func (n *Node) HeldChanged() <-chan struct{} { return n.heldChanged }

// noteHeldLocked signals HeldChanged (under n.mu).
func (n *Node) noteHeldLocked() {
	select {
	case n.heldChanged <- struct{}{}:
	default:
	}
}

// peerKeyInForce reports whether key is an enrolled key of nodeID in the verified view.
func (n *Node) peerKeyInForce(nodeID string, key ssh.PublicKey) bool {
	ck, ok := key.(ssh.CryptoPublicKey)
	if !ok {
		return false
	}
	pub, ok := ck.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return false
	}
	for _, k := range n.cfg.Peers.NodeKeys(nodeID) {
		if k.Equal(pub) {
			return true
		}
	}
	return false
}

// peerSession finds a peer that holds an agent of rs's tunnel (among routes, in turn, skipping
// rs.avoidPeers and nodes whose key is not in force) and holds the call on its peer session.
// Neither a session nor an error: no route is usable now.
func (n *Node) peerSession(rs *reqState, routes []peerRoute, gone func() bool) (*session, error) {
	start := int(n.peerTurn.Add(1))
	busy := false
	for i := range routes {
		r := routes[(start+i)%len(routes)]
		if slices.Contains(rs.avoidPeers, r.nodeID) || len(n.cfg.Peers.NodeKeys(r.nodeID)) == 0 {
			continue // a node not enrolled, or removed, is never forwarded to
		}
		l := n.peerLink(r.nodeID)
		if l == nil {
			continue
		}
		s, err := l.session(rs.route, r.url, gone)
		if errors.Is(err, errCallerGone) {
			return nil, err
		}
		if err == nil {
			if err = s.acquire(); err == nil {
				return s, nil
			}
			busy = busy || errors.Is(err, errTunnelBusy)
		}
		rs.avoidPeers = append(rs.avoidPeers, r.nodeID)
	}
	if busy {
		return nil, errTunnelBusy
	}
	return nil, nil
}

// peerLink is the connection to one peer node, shared by every tunnel's calls to it.
type peerLink struct {
	n      *Node
	nodeID string
	log    *slog.Logger

	mu       sync.Mutex
	conn     ssh.Conn // nil while not connected
	key      ssh.PublicKey
	dialing  chan struct{} // closed when the dial under way ends
	failedAt time.Time     // the last dial failed, or the connection was lost, then
	sessions map[string]*session
	stopped  bool
}

// peerLink returns the link to nodeID, made on first use (nil beyond maxPeers, or once stopped).
func (n *Node) peerLink(nodeID string) *peerLink {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.peers[nodeID]; l != nil {
		return l
	}
	if len(n.peers) >= maxPeers || n.stopped {
		return nil
	}
	l := &peerLink{n: n, nodeID: nodeID, log: n.log.With("peer_node_id", nodeID), sessions: map[string]*session{}}
	n.peers[nodeID] = l
	return l
}

// session is the peer session carrying calls of route's tunnel to the peer, connecting first
// if needed (callers wait for one dial together, or until gone says the caller left).
func (l *peerLink) session(route Route, url string, gone func() bool) (*session, error) {
	var poll *time.Ticker
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	for {
		l.mu.Lock()
		switch {
		case l.stopped:
			l.mu.Unlock()
			return nil, errPeerDown
		case l.conn != nil:
			s := l.sessions[route.TunnelID]
			if s == nil {
				s = &session{n: l.n, id: uuid.Must(uuid.NewV7()).String(), mux: l.conn, peer: l,
					ident: AgentIdentity{OrgID: route.OrgID, TunnelID: route.TunnelID}, done: make(chan struct{})}
				s.log = l.log.With("tunnel_id", route.TunnelID)
				l.sessions[route.TunnelID] = s
			}
			l.mu.Unlock()
			return s, nil
		case l.dialing == nil && !l.failedAt.IsZero() && time.Since(l.failedAt) < peerRetryAfter:
			l.mu.Unlock()
			return nil, errPeerDown
		case l.dialing == nil:
			l.dialing = make(chan struct{})
			go l.dial(url, l.dialing)
		}
		wait := l.dialing
		l.mu.Unlock()
		if poll == nil {
			poll = time.NewTicker(callerPollInterval)
		}
		select {
		case <-wait:
			l.mu.Lock()
			failed := l.conn == nil
			l.mu.Unlock()
			if failed {
				return nil, errPeerDown
			}
		case <-poll.C:
			if gone != nil && gone() {
				return nil, fmt.Errorf("%w: it left while the node connected to a peer", errCallerGone)
			}
		}
	}
}

// dial connects to the peer at url: WebSocket, then SSH as this node with its enrolled key,
// checking that the peer's host key is an enrolled key of the node the route names.
func (l *peerLink) dial(url string, done chan struct{}) {
	n := l.n
	conn, key, err := l.connect(url)
	l.mu.Lock()
	l.dialing = nil
	if err != nil || l.stopped {
		l.failedAt = time.Now()
		l.mu.Unlock()
		close(done)
		if err == nil {
			_ = conn.Close()
			return
		}
		n.metrics.peerDials.WithLabelValues("failed").Inc()
		l.log.Warn("peer connection failed", "error", err)
		return
	}
	l.conn, l.key, l.failedAt = conn, key, time.Time{}
	l.mu.Unlock()
	close(done)
	n.metrics.peerDials.WithLabelValues("connected").Inc()
	l.log.Info("peer connected")
	go func() {
		err := conn.Wait()
		l.lost(conn, err)
	}()
}

func (l *peerLink) connect(url string) (ssh.Conn, ssh.PublicKey, error) {
	n := l.n
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HandshakeTimeout)
	defer cancel()
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c = rawconn.Wrap(c)
			}
			return c, err
		},
		HandshakeTimeout: n.cfg.HandshakeTimeout,
		ReadBufferSize:   wsconn.ReadBufferSize,
		WriteBufferPool:  wsconn.WriteBufferPool,
		Subprotocols:     []string{PeerProtocol},
	}
	ws, resp, err := d.DialContext(ctx, url, http.Header{"User-Agent": {"tunnelplane-node"}})
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("dial peer: %w: HTTP %d", errPeerDown, resp.StatusCode)
		}
		return nil, nil, fmt.Errorf("dial peer: %w: %w", errPeerDown, err)
	}
	if ws.Subprotocol() != PeerProtocol {
		ws.Close()
		return nil, nil, fmt.Errorf("dial peer: %w: it selected protocol %q", errPeerDown, ws.Subprotocol())
	}
	wc := wsconn.New(ws, wsconn.Options{Client: true})
	_ = wc.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	var hostKey ssh.PublicKey
	cc, chans, reqs, err := ssh.NewClientConn(wc, ws.RemoteAddr().String(), &ssh.ClientConfig{
		Config:            ssh.Config{KeyExchanges: KeyExchanges, Ciphers: Ciphers, MACs: MACs},
		User:              n.cfg.NodeID,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(n.cfg.PeerKey)},
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		ClientVersion:     "SSH-2.0-tunnelplane_node",
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !n.peerKeyInForce(l.nodeID, key) {
				n.metrics.peerRefused.WithLabelValues("host_key").Inc()
				return errPeerKey
			}
			hostKey = key
			return nil
		},
	})
	if err != nil {
		_ = wc.Close()
		return nil, nil, fmt.Errorf("peer ssh: %w", err)
	}
	_ = wc.SetDeadline(time.Time{})
	go func() {
		// The peer opens no channels and sends no requests but keepalives of ours' answers.
		for nc := range chans {
			_ = nc.Reject(ssh.Prohibited, "nodes do not open channels to the node forwarding to them")
		}
	}()
	go ssh.DiscardRequests(reqs)
	return cc, hostKey, nil
}

// lost ends the link's connection conn: its peer sessions end (calls on them fail as their
// agent's would), and the peer is passed over for peerRetryAfter.
func (l *peerLink) lost(conn ssh.Conn, err error) {
	l.mu.Lock()
	if l.conn != conn {
		l.mu.Unlock()
		return
	}
	l.conn, l.key, l.failedAt = nil, nil, time.Now()
	list := make([]*session, 0, len(l.sessions))
	for _, s := range l.sessions {
		list = append(list, s)
	}
	clear(l.sessions)
	l.mu.Unlock()
	if err != nil && !l.stoppedNow() {
		l.log.Info("peer connection lost", "error", err)
	}
	for _, s := range list {
		s.close("peer connection lost")
	}
}

func (l *peerLink) stoppedNow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopped
}

// dropTunnel ends the tunnel's peer session: the route went, so its idle channels close (calls
// in flight on it finish) and no new call goes there.
func (l *peerLink) dropTunnel(tunnelID string) {
	l.mu.Lock()
	s := l.sessions[tunnelID]
	l.mu.Unlock()
	if s != nil {
		s.close("route withdrawn")
	}
}

// ended takes a peer session that is closing out of the link and closes its idle channels. A
// peer that left a keepalive unanswered loses its whole connection.
func (l *peerLink) ended(s *session, gone error) {
	l.mu.Lock()
	if l.sessions[s.ident.TunnelID] == s {
		delete(l.sessions, s.ident.TunnelID)
	}
	conn := l.conn
	l.mu.Unlock()
	s.mu.Lock()
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, tc := range idle {
		_ = tc.ch.Close()
	}
	close(s.done)
	if errors.Is(gone, errAgentUnresponsive) && conn == s.mux {
		_ = conn.Close()
	}
}

// close ends the link for good (the node stops), or its connection when its key is no longer in
// force (stop false).
func (l *peerLink) close(stop bool) {
	l.mu.Lock()
	if stop {
		l.stopped = true
	}
	conn := l.conn
	l.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
		l.lost(conn, nil)
	}
}

// stillTrusted reports whether the link's peer key is still in force (or it is not connected).
func (l *peerLink) stillTrusted() bool {
	l.mu.Lock()
	key := l.key
	l.mu.Unlock()
	return key == nil || l.n.peerKeyInForce(l.nodeID, key)
}

// peerParts lists the links to peers and the peers' connections here.
func (n *Node) peerParts() ([]*peerLink, []*peerConn) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	links := make([]*peerLink, 0, len(n.peers))
	for _, l := range n.peers {
		links = append(links, l)
	}
	conns := make([]*peerConn, 0, len(n.peerConns))
	for pc := range n.peerConns {
		conns = append(conns, pc)
	}
	return links, conns
}

// peerSessions lists every peer session (to prune their idle channels).
func (n *Node) peerSessions() []*session {
	links, _ := n.peerParts()
	var out []*session
	for _, l := range links {
		l.mu.Lock()
		for _, s := range l.sessions {
			out = append(out, s)
		}
		l.mu.Unlock()
	}
	return out
}

// RecheckPeers closes the connections, both ways, of peers whose key is no longer in force (a
// node removed): its calls in flight through this node end, and it gets no new one. Call it
// when the view's key history changed.
func (n *Node) RecheckPeers() {
	if !n.forwarding() {
		return
	}
	links, conns := n.peerParts()
	for _, l := range links {
		if !l.stillTrusted() {
			l.log.Warn("peer node's key is no longer in force; connection closed")
			l.close(false)
		}
	}
	for _, pc := range conns {
		if !n.peerKeyInForce(pc.nodeID, pc.key) {
			pc.log.Warn("peer node's key is no longer in force; connection closed")
			_ = pc.sc.Close()
		}
	}
}

// stopPeers closes every link to a peer and every peer's connection (Stop).
func (n *Node) stopPeers() {
	links, conns := n.peerParts()
	for _, l := range links {
		l.close(true)
	}
	for _, pc := range conns {
		_ = pc.sc.Close()
	}
}

// peerWait is how long a peer may wait for an agent of rs's tunnel: what is left of the call's
// failover wait (all of it when the call has not waited).
func (rs *reqState) peerWait(failoverWait time.Duration) time.Duration {
	if rs.waitUntil.IsZero() {
		return failoverWait
	}
	return time.Until(rs.waitUntil)
}

// callerLeft reports whether rs's caller left: its fasthttp connection at the ingress, the peer's
// connection for a call a peer forwarded.
func (rs *reqState) callerLeft(ctx *fasthttp.RequestCtx) bool {
	if rs.gone != nil {
		return rs.gone()
	}
	return callerGone(ctx)
}
