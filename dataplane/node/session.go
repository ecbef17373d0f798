package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/compliance/pii/sealbox"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/domain"
)

// session is one authenticated agent connection.
type session struct {
	n     *Node
	id    string
	conn  *wsconn.Conn
	sc    *ssh.ServerConn
	mux   ssh.Conn  // what channels are opened and probes sent on: sc, or a peer's connection
	peer  *peerLink // set for a peer session: calls forwarded to another node (peers.go)
	ident AgentIdentity
	meta  connMeta
	algs  ssh.NegotiatedAlgorithms
	log   *slog.Logger
	done  chan struct{} // closed when cleanup is over and the facts are out

	mu           sync.Mutex
	agentVersion string
	hostHeader   string          // v2: Host header the upstream wants; "" keeps the caller's
	replace      bool            // v2: take the tunnel over from another token's agent
	tracing      bool            // v2: the agent takes ChannelTraced (AgentInfo.Tracing)
	forward      *ForwardRequest // nil until the agent asked for its tunnel
	connectedAt  time.Time       // when it took its tunnel (AgentConnected emitted)
	idle         []*tunnelConn   // pooled channels, most recently used last
	inflight     int
	idleWait     chan struct{} // closed when inflight drops to zero, while someone waits
	closing      bool
	reason       string
	peerReason   string // what the agent said in a RequestDisconnect
	// overrideWarned: the agent's own upstream was logged (agentInfoReply)
	overrideWarned bool
	events         int // agent events taken (agentEvent bounds them per session)

	kaTimer, expTimer, fwdTimer *time.Timer

	// Liveness (under mu): one keepalive probe is out at a time, periodic or on demand.
	probing    bool
	answeredAt time.Time // when the agent last answered a probe
	probeCause string    // the trace id of the call whose wait sent the probe out ("" untraced)
	goneErr    error     // why calls fail once closing: errAgentGone or errAgentUnresponsive
}

func (s *session) start() {
	cfg := s.n.cfg
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kaTimer = time.AfterFunc(cfg.KeepaliveInterval, s.keepalive)
	s.fwdTimer = time.AfterFunc(cfg.HandshakeTimeout, func() {
		s.mu.Lock()
		fwd := s.forward
		s.mu.Unlock()
		if fwd == nil {
			s.close("no tunnel requested within " + cfg.HandshakeTimeout.String())
		}
	})
	if !s.ident.ExpiresAt.IsZero() {
		s.expTimer = time.AfterFunc(s.ident.ExpiresAt.Sub(cfg.Now()), func() { s.close("agent token expired") })
	}
}

// serve answers the agent's global requests and refuses its channel opens until the
// connection ends. It is the session's one long-lived goroutine of its own.
func (s *session) serve(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	for chans != nil || reqs != nil {
		select {
		case nc, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			_ = nc.Reject(ssh.Prohibited, "agents may not open channels")
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			s.handleRequest(r)
		}
	}
}

func (s *session) handleRequest(r *ssh.Request) {
	reply := func(ok bool, payload []byte) {
		if r.WantReply {
			_ = r.Reply(ok, payload)
		}
	}
	switch r.Type {
	case RequestKeepalive, "keepalive@openssh.com":
		reply(true, nil)
	case RequestAgentInfo:
		var p JSONPayload
		var info AgentInfo
		if s.meta.protocol != ProtocolV2 || ssh.Unmarshal(r.Payload, &p) != nil || json.Unmarshal([]byte(p.JSON), &info) != nil {
			reply(false, nil)
			return
		}
		// The Host header goes into every request to the upstream, the version into facts and
		// logs: an agent's word is checked like a caller's.
		if len(info.HostHeader) > 255 || !isHostValue([]byte(info.HostHeader)) || len(info.Version) > 64 || !isVisibleASCII(info.Version) ||
			len(info.UpstreamOverride) > maxUpstreamLen || !isVisibleASCII(info.UpstreamOverride) {
			reply(false, nil)
			return
		}
		s.mu.Lock()
		if info.Version != "" {
			s.agentVersion = info.Version
		}
		s.hostHeader = info.HostHeader
		s.replace = info.Replace
		s.tracing = info.Tracing
		s.mu.Unlock()
		reply(true, s.agentInfoReply(info))
	case RequestForward:
		var fr ForwardRequest
		if err := ssh.Unmarshal(r.Payload, &fr); err != nil {
			reply(false, nil)
			return
		}
		if err := s.n.claim(s, fr); err != nil {
			s.log.Info("tunnel refused", "error", err)
			reply(false, nil)
			s.close(err.Error())
			return
		}
		reply(true, nil)
	case RequestCancelForward:
		reply(true, nil)
		s.close("agent released the tunnel")
	case RequestDrain:
		if s.meta.protocol != ProtocolV2 {
			reply(false, nil)
			return
		}
		reason := "draining"
		var d DisconnectNotice
		if ssh.Unmarshal(r.Payload, &d) == nil && d.Reason != "" {
			reason = d.Reason
		}
		reply(true, nil)
		s.agentDraining("agent: " + reason)
	case RequestAgentEvent:
		ev, err := s.agentEvent(r.Payload)
		if err != nil {
			s.log.Info("agent event refused", "error", err)
			reply(false, nil)
			return
		}
		if sink := s.n.cfg.Sink; sink != nil {
			sink.AgentReported(ev)
		}
		reply(true, nil)
	case RequestDisconnect:
		var d DisconnectNotice
		if ssh.Unmarshal(r.Payload, &d) == nil {
			s.mu.Lock()
			s.peerReason = "agent: " + d.Reason
			s.mu.Unlock()
		}
		reply(true, nil)
	default:
		reply(false, nil)
	}
}

// claim makes s the holder of its tunnel. An agent with the token of the session holding the
// tunnel replaces it (the same agent reconnecting after a network change must not wait for its
// old session to time out). An agent with another token is refused, unless it asked to replace
// the holder (connect --replace), which is then recorded as an AgentReplaced fact: whoever holds
// a tunnel's agent receives its callers' requests, so taking it over is never silent.
func (n *Node) claim(s *session, fr ForwardRequest) error {
	n.mu.Lock()
	if n.draining || n.stopped {
		n.mu.Unlock()
		return errors.New("node draining")
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		n.mu.Unlock()
		return errors.New("session closing")
	}
	first := s.forward == nil
	replace := s.replace
	old := n.tunnels[s.ident.TunnelID]
	takeover := first && old != nil && old != s && old.ident.TokenID != s.ident.TokenID
	if takeover && !replace {
		s.mu.Unlock()
		n.mu.Unlock()
		return fmt.Errorf("tunnel held by another agent (session %s, token %s); connect with --replace to take it over", old.id, old.ident.TokenID)
	}
	s.forward = &fr
	if first {
		s.connectedAt = n.cfg.Now()
	}
	s.mu.Unlock()
	n.tunnels[s.ident.TunnelID] = s
	n.noteHeldLocked()
	n.metrics.agents.Set(float64(len(n.tunnels)))
	n.wakeLocked(s.ident.TunnelID) // calls waiting for an agent of the tunnel go to s
	n.mu.Unlock()
	if !first {
		return nil
	}
	if old != nil && old != s {
		reason := "replaced"
		if takeover {
			reason = fmt.Sprintf("replaced by session %s (token %s, --replace)", s.id, s.ident.TokenID)
		}
		old.log.Info("agent replaced by a newer connection", "new_session_id", s.id, "new_token_id", s.ident.TokenID)
		go old.close(reason)
	}
	s.fwdTimer.Stop()
	s.mu.Lock()
	version := s.agentVersion
	s.mu.Unlock()
	s.log.Info("agent connected", "protocol", s.meta.protocol, "agent_version", version, "remote_addr", s.meta.remote,
		"kex", s.algs.KeyExchange, "cipher", s.algs.Write.Cipher)
	if takeover {
		n.emitReplaced(domain.AgentReplaced{NodeID: n.cfg.NodeID, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID,
			OldSessionID: old.id, OldTokenID: old.ident.TokenID, NewSessionID: s.id, NewTokenID: s.ident.TokenID})
	}
	n.emitConnected(domain.AgentConnected{
		NodeID: n.cfg.NodeID, SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID, TokenID: s.ident.TokenID,
		AgentVersion: version, ProtocolVersion: s.meta.protocol, RemoteAddr: s.sealedRemote(),
		KeyExchange: s.algs.KeyExchange, Cipher: s.algs.Write.Cipher, HostKeyAlgo: s.algs.HostKey,
	})
	return nil
}

// sealedRemote is the agent's address as agent.connected holds it: sealed to the sealing key of
// the token's issuer (compliance/pii/sealbox), so that erasing the issuer reaches it although this
// node signs the fact. A token without a key (issued before keys existed) gets "": the address
// is personal data, and the log must not hold it in plaintext.
func (s *session) sealedRemote() string {
	k := s.ident.Seal
	if len(k.Public) == 0 || s.meta.remote == "" {
		return ""
	}
	v, err := sealbox.Seal(k.Public, k.Subject, k.Generation, "remote_addr", s.meta.remote)
	if err != nil {
		s.log.Warn("agent address not sealed, left out of agent.connected", "error", err)
		return ""
	}
	return v
}

// isVisibleASCII reports a string of printable ASCII without spaces (or an empty one).
func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// keepalive is the periodic probe; it runs on kaTimer's goroutine.
func (s *session) keepalive() {
	if s.claimProbe(0) && s.probe() != nil {
		return // the connection is gone; serve returns and finish cleans up
	}
	s.mu.Lock()
	if !s.closing {
		s.kaTimer.Reset(s.n.cfg.KeepaliveInterval)
	}
	s.mu.Unlock()
}

// probeAfter is how long a caller waits for the agent (a channel open, a response header)
// before the node asks the agent whether it is alive at all. A frozen agent keeps its TCP
// connection open and answers nothing: without the probe its callers would wait for their own
// timeouts, or for the next periodic keepalive to go unanswered.
const probeAfter = 500 * time.Millisecond

// probeSoon sends a keepalive probe now unless one is out already or the agent answered one
// within probeAfter. A caller calls it when it has waited probeAfter for the agent; cause is its
// trace id, the correlation id of the disconnection when the agent does not answer.
func (s *session) probeSoon(cause string) {
	if s.claimProbe(probeAfter) {
		s.mu.Lock()
		s.probeCause = cause
		s.mu.Unlock()
		go func() { _ = s.probe() }()
	}
}

// claimProbe reserves the one probe in flight, unless the session is closing or the agent
// answered a probe within fresh.
func (s *session) claimProbe(fresh time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.probing || (fresh > 0 && !s.answeredAt.IsZero() && time.Since(s.answeredAt) < fresh) {
		return false
	}
	s.probing = true
	return true
}

// probe sends a keepalive and closes the session as unresponsive when it is not answered within
// KeepaliveTimeout; closing the connection fails every channel open and exchange waiting on the
// agent, so its callers are answered then. The caller must hold the claim (claimProbe). The
// error is the connection's: it ended before an answer came.
func (s *session) probe() error {
	timeout := s.n.cfg.KeepaliveTimeout
	t := time.AfterFunc(timeout, func() {
		s.end(fmt.Sprintf("agent unresponsive: no keepalive answer within %v", timeout), errAgentUnresponsive)
	})
	_, _, err := s.mux.SendRequest(RequestKeepalive, true, nil)
	t.Stop()
	s.mu.Lock()
	s.probing = false
	if err == nil {
		s.answeredAt = time.Now()
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	return nil
}

// notify tells the agent why it is about to be disconnected.
func (s *session) notify(reason string) {
	_, _, _ = s.sc.SendRequest(RequestDisconnect, false, ssh.Marshal(DisconnectNotice{Reason: reason}))
}

// close ends the session with reason (the first reason given wins). It does not wait for cleanup.
func (s *session) close(reason string) { s.end(reason, errAgentGone) }

// end is close with the error that calls waiting on the agent fail with (goneErr).
func (s *session) end(reason string, gone error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.reason = reason
	s.goneErr = gone
	s.mu.Unlock()
	if s.peer != nil {
		s.peer.ended(s, gone)
		return
	}
	s.n.unroute(s)
	// Bound the goodbye: a peer that stopped reading must not hold us.
	_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.notify(reason)
	_ = s.conn.CloseWithReason(CloseCodeNode, reason)
}

// unroute stops new requests from reaching s.
func (n *Node) unroute(s *session) {
	n.mu.Lock()
	if n.tunnels[s.ident.TunnelID] == s {
		delete(n.tunnels, s.ident.TunnelID)
		n.noteHeldLocked()
		n.metrics.agents.Set(float64(len(n.tunnels)))
	}
	n.mu.Unlock()
}

// finish runs when the connection has ended: it forgets the session and emits AgentDisconnected.
func (s *session) finish(waitErr error) {
	n := s.n
	n.mu.Lock()
	delete(n.sessions, s)
	n.mu.Unlock()
	n.unroute(s)
	s.mu.Lock()
	for _, t := range []*time.Timer{s.kaTimer, s.expTimer, s.fwdTimer} {
		if t != nil {
			t.Stop()
		}
	}
	idle := s.idle
	s.idle = nil
	reason := s.reason
	if reason == "" {
		reason = s.peerReason
	}
	if reason == "" {
		reason = lostReason(waitErr)
	}
	s.reason = reason
	connectedAt := s.connectedAt
	if s.idleWait != nil {
		close(s.idleWait)
		s.idleWait = nil
	}
	s.mu.Unlock()
	for _, tc := range idle {
		_ = tc.ch.Close()
	}
	_ = s.conn.Close()
	in, out := s.conn.BytesRead(), s.conn.BytesWritten()
	n.closedBytesIn.Add(in)
	n.closedBytesOut.Add(out)
	n.metrics.disconnects.Inc()
	if !connectedAt.IsZero() {
		dur := n.cfg.Now().Sub(connectedAt)
		s.log.Info("agent disconnected", "reason", reason, "duration_ms", dur.Milliseconds(), "bytes_in", in, "bytes_out", out)
		s.mu.Lock()
		cause := ""
		if errors.Is(s.goneErr, errAgentUnresponsive) {
			cause = s.probeCause
		}
		s.mu.Unlock()
		n.emitDisconnected(domain.AgentDisconnected{
			NodeID: n.cfg.NodeID, SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID, TokenID: s.ident.TokenID,
			BytesIn: in, BytesOut: out, DurationMS: dur.Milliseconds(), Reason: reason,
		}, cause)
	} else {
		s.log.Info("agent left before holding its tunnel", "reason", reason)
	}
	close(s.done)
}

func lostReason(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "agent closed the connection"
	default:
		msg := err.Error()
		if i := strings.Index(msg, "closed by peer: "); i >= 0 {
			return "agent closed the connection: " + msg[i+len("closed by peer: "):]
		}
		return "connection lost: " + msg
	}
}

// gone is the error for a call that failed because the connection to the agent ended:
// errAgentUnresponsive when the node closed it for unanswered keepalives, else errAgentGone.
func (s *session) gone() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.goneErr != nil {
		return s.goneErr
	}
	return errAgentGone
}

// acquire counts a call in flight: errAgentGone once the session is closing, errTunnelBusy when
// MaxCallsPerTunnel are in flight.
func (s *session) acquire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
		return errAgentGone
	case s.inflight >= s.n.cfg.MaxCallsPerTunnel:
		return errTunnelBusy
	}
	s.inflight++
	return nil
}

// holdSlot counts a call slot that outlives its caller (a channel open the agent has not
// answered yet); release frees it.
func (s *session) holdSlot() {
	s.mu.Lock()
	s.inflight++
	s.mu.Unlock()
}

func (s *session) release() {
	s.mu.Lock()
	s.inflight--
	if s.inflight == 0 && s.idleWait != nil {
		close(s.idleWait)
		s.idleWait = nil
	}
	s.mu.Unlock()
}

// waitIdle waits until no request is in flight, the session ends or ctx ends.
func (s *session) waitIdle(ctx context.Context) {
	s.mu.Lock()
	if s.inflight == 0 || s.closing {
		s.mu.Unlock()
		return
	}
	if s.idleWait == nil {
		s.idleWait = make(chan struct{})
	}
	ch := s.idleWait
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-s.done:
	}
}

func (s *session) info(holds bool) SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SessionInfo{
		SessionID: s.id, OrgID: s.ident.OrgID, TunnelID: s.ident.TunnelID, TokenID: s.ident.TokenID,
		Protocol: s.meta.protocol, AgentVersion: s.agentVersion, RemoteAddr: s.meta.remote,
		KeyExchange: s.algs.KeyExchange, Cipher: s.algs.Write.Cipher, HostKeyAlgo: s.algs.HostKey,
		ConnectedAt: s.meta.started, HoldsTunnel: holds,
		BytesIn: s.conn.BytesRead(), BytesOut: s.conn.BytesWritten(),
	}
}
