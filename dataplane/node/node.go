package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Node is a data-plane node. Create it with New and serve it with NewServer: the ingress, plus
// AgentHandler and any other net/http handlers at the paths the caller chooses.
type Node struct {
	cfg      Config
	log      *slog.Logger
	sshCfg   *ssh.ServerConfig
	upgrader websocket.Upgrader
	// Forwarding between nodes (peers.go, peerserve.go).
	peerSSH      *ssh.ServerConfig
	peerUpgrader websocket.Upgrader
	peerTurn     atomic.Uint32 // rotates the routes a call tries first
	heldChanged  chan struct{} // HeldChanged
	metrics      *metrics
	usage        *usage
	calls        *callLog
	auth         *authCache
	live         *liveCalls
	tracer       trace.Tracer // nil: calls are not traced

	mu        sync.RWMutex
	sessions  map[*session]struct{}     // every authenticated session
	pending   map[*wsconn.Conn]struct{} // connections still in the SSH handshake
	tunnels   map[string]*session       // tunnel id → the session holding it
	queues    map[string]*waitQueue     // tunnel id → the calls waiting for an agent of it (failover.go)
	routes    map[string][]peerRoute    // tunnel id → the peers holding an agent of it (peers.go)
	nroutes   int
	routeGen  uint64                 // counts routes added: a call that looked at the routes sees one added since
	peers     map[string]*peerLink   // peer node id → the connection to it
	peerConns map[*peerConn]struct{} // peers' connections to this node
	draining  bool
	stopped   bool
	noWaits   bool // EndWaits: calls no longer wait for an agent

	wg             sync.WaitGroup // session goroutines
	closedBytesIn  atomic.Int64
	closedBytesOut atomic.Int64

	stopOnce sync.Once
	life     lifecycle.Lifecycle // the usage windows' goroutine
}

// notReady is Config.Ready's answer (nil without one).
func (n *Node) notReady() error {
	if n.cfg.Ready == nil {
		return nil
	}
	return n.cfg.Ready()
}

// startingProblem answers agents and callers while the node is not ready.
func startingProblem(err error) problem {
	return problem{Status: http.StatusServiceUnavailable, Slug: "node-starting", Title: "This node is starting", Detail: err.Error() + "; retry shortly"}
}

// SessionInfo describes one agent session.
type SessionInfo struct {
	SessionID, OrgID, TunnelID, TokenID string
	Protocol, AgentVersion, RemoteAddr  string
	KeyExchange, Cipher, HostKeyAlgo    string
	ConnectedAt                         time.Time
	HoldsTunnel                         bool // false until the agent asked for its tunnel, or after it was replaced
	BytesIn, BytesOut                   int64
}

// New validates cfg, applies defaults and returns a running node (its usage windows tick).
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	n := &Node{
		cfg:         cfg,
		log:         cfg.Logger.With("node_id", cfg.NodeID),
		sessions:    map[*session]struct{}{},
		pending:     map[*wsconn.Conn]struct{}{},
		tunnels:     map[string]*session{},
		queues:      map[string]*waitQueue{},
		routes:      map[string][]peerRoute{},
		peers:       map[string]*peerLink{},
		peerConns:   map[*peerConn]struct{}{},
		heldChanged: make(chan struct{}, 1),
		auth:        newAuthCache(cfg.AuthCacheTTL),
	}
	if cfg.TracerProvider != nil {
		n.tracer = cfg.TracerProvider.Tracer("github.com/tunnelplane/tunnelplane/dataplane/node")
	}
	n.live = newLiveCalls(maxLiveCalls, n.reauthorizeDue)
	n.metrics = newMetrics(n)
	n.usage = newUsage(cfg.Now(), cfg.UsageMaxCallers, n.metrics.usageOverflow)
	n.calls = newCallLog(cfg.CallQueueMax, cfg.CallBatchMax)
	if err := errors.Join(n.metrics.register(cfg.Registerer), n.calls.register(cfg.Registerer)); err != nil {
		return nil, fmt.Errorf("new node: %w", err)
	}
	n.sshCfg = n.newSSHConfig()
	if n.forwarding() {
		n.peerSSH = n.newPeerSSHConfig()
	}
	n.peerUpgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   wsconn.ReadBufferSize,
		WriteBufferPool:  wsconn.WriteBufferPool,
		Subprotocols:     []string{PeerProtocol},
		CheckOrigin:      func(*http.Request) bool { return true }, // servePeer refuses an Origin
	}
	n.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   wsconn.ReadBufferSize,
		WriteBufferPool:  wsconn.WriteBufferPool,
		Subprotocols:     SupportedProtocols,
		// Agents are not browsers; serveAgent refuses requests that carry an Origin.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	if err := n.life.Start(context.Background(), "node", func(context.Context) error {
		n.life.Go(n.usageLoop)
		n.life.Go(n.callsLoop)
		return nil
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// Sessions lists the current agent sessions.
func (n *Node) Sessions() []SessionInfo {
	n.mu.RLock()
	list := make([]*session, 0, len(n.sessions))
	for s := range n.sessions {
		list = append(list, s)
	}
	holders := make(map[*session]bool, len(n.tunnels))
	for _, s := range n.tunnels {
		holders[s] = true
	}
	n.mu.RUnlock()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, s.info(holders[s]))
	}
	return out
}

// DisconnectTunnel ends every session of the tunnel with reason and returns how many there were.
// It returns once their AgentDisconnected facts have been emitted.
func (n *Node) DisconnectTunnel(tunnelID, reason string) int {
	return n.disconnectWhere(func(s *session) bool { return s.ident.TunnelID == tunnelID }, reason)
}

// DisconnectToken ends every session authenticated with the token (a revocation).
func (n *Node) DisconnectToken(tokenID, reason string) int {
	return n.disconnectWhere(func(s *session) bool { return s.ident.TokenID == tokenID }, reason)
}

func (n *Node) disconnectWhere(match func(*session) bool, reason string) int {
	if reason == "" {
		reason = "disconnected by the control plane"
	}
	var list []*session
	n.mu.RLock()
	for s := range n.sessions {
		if match(s) {
			list = append(list, s)
		}
	}
	n.mu.RUnlock()
	closeAll(list, reason)
	return len(list)
}

// closeAll closes sessions concurrently (each may wait briefly for a slow peer) and waits for
// their cleanup.
func closeAll(list []*session, reason string) {
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Go(func() {
			s.close(reason)
			<-s.done
		})
	}
	wg.Wait()
}

// Drain refuses new agents, stops routing requests to the current ones, tells them to go, lets
// their requests in flight finish (until ctx ends), then disconnects them with reason
// "node draining". It returns how many sessions it ended.
func (n *Node) Drain(ctx context.Context) int {
	const reason = DrainReason
	n.mu.Lock()
	n.draining = true
	list := make([]*session, 0, len(n.sessions))
	for s := range n.sessions {
		list = append(list, s)
	}
	clear(n.tunnels)
	n.noteHeldLocked()
	n.metrics.agents.Set(0)
	n.wakeAllLocked() // waiting calls are answered at once: no agent comes back to a draining node
	n.mu.Unlock()
	n.log.Info("draining", "sessions", len(list))
	for _, s := range list {
		s.notify(reason) // the agent may connect elsewhere while requests here finish
	}
	for _, s := range list {
		s.waitIdle(ctx)
	}
	closeAll(list, reason)
	return len(list)
}

// Draining reports whether Drain (or Stop) has begun: the node takes no new agents and routes
// no new calls to the ones it holds.
func (n *Node) Draining() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.draining || n.stopped
}

// Stop disconnects every agent, refuses new ones, stops the usage windows after emitting the
// last one and waits for the node's goroutines. Calling it again does nothing.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		n.mu.Lock()
		n.stopped = true
		n.wakeAllLocked()
		list := make([]*session, 0, len(n.sessions))
		for s := range n.sessions {
			list = append(list, s)
		}
		for c := range n.pending {
			go c.CloseWithReason(CloseCodeNode, "node stopping")
		}
		n.noteHeldLocked()
		n.mu.Unlock()
		n.stopPeers()
		closeAll(list, "node stopping")
		n.wg.Wait()
		n.live.stop()
		n.life.Stop() // the last usage window and call records go out
	})
}

func (n *Node) usageLoop(ctx context.Context) {
	w := n.cfg.UsageWindow
	t := time.NewTimer(untilNextWindow(n.cfg.Now(), w))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.emitUsage()
			return
		case <-t.C:
			n.emitUsage()
			n.pruneIdle()
			t.Reset(untilNextWindow(n.cfg.Now(), w))
		}
	}
}

// untilNextWindow aligns windows to multiples of w, so that windows of different nodes line up.
func untilNextWindow(now time.Time, w time.Duration) time.Duration {
	d := now.Truncate(w).Add(w).Sub(now)
	if d <= 0 {
		d = w
	}
	return d
}

func (n *Node) emitUsage() {
	for _, u := range n.usage.flush(n.cfg.NodeID, n.cfg.Now()) {
		if n.cfg.Sink != nil {
			n.cfg.Sink.UsageRecorded(u)
		}
	}
}

func (n *Node) pruneIdle() {
	n.mu.RLock()
	list := make([]*session, 0, len(n.tunnels))
	for _, s := range n.tunnels {
		list = append(list, s)
	}
	n.mu.RUnlock()
	list = append(list, n.peerSessions()...)
	now := n.cfg.Now()
	for _, s := range list {
		s.pruneIdle(now)
	}
}

func (n *Node) emitConnected(e domain.AgentConnected) {
	if n.cfg.Sink != nil {
		n.cfg.Sink.AgentConnected(e)
	}
}

func (n *Node) emitReplaced(e domain.AgentReplaced) {
	if n.cfg.Sink != nil {
		n.cfg.Sink.AgentReplaced(e)
	}
}

// emitDisconnected reports e; correlationID, when set, is the trace id of the call that caused it.
func (n *Node) emitDisconnected(e domain.AgentDisconnected, correlationID string) {
	if cs, ok := n.cfg.Sink.(CorrelatedSink); ok && correlationID != "" {
		cs.Correlated(e, correlationID)
		return
	}
	if n.cfg.Sink != nil {
		n.cfg.Sink.AgentDisconnected(e)
	}
}

// tunnelSession is the session holding tunnelID, or nil.
func (n *Node) tunnelSession(tunnelID string) *session {
	n.mu.RLock()
	s := n.tunnels[tunnelID]
	n.mu.RUnlock()
	return s
}
