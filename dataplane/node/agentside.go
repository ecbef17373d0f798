package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
)

type identityKey struct{}

func (n *Node) newSSHConfig() *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: KeyExchanges,
			Ciphers:      Ciphers,
			MACs:         MACs,
		},
		ServerVersion:    "SSH-2.0-tunnelplane_node",
		MaxAuthTries:     2,
		PasswordCallback: n.authenticateAgent,
	}
	c.AddHostKey(n.cfg.HostKey)
	return c
}

// authenticateAgent runs after key exchange, so the agent has already checked the host key
// before it sends its token. Failures reach the agent as an SSH banner: the reason, plainly, and
// its code (RefusalBanner), which tells the agent whether to retry.
func (n *Node) authenticateAgent(cm ssh.ConnMetadata, password []byte) (*ssh.Permissions, error) {
	reject := func(err error, code, msg string) (*ssh.Permissions, error) {
		n.metrics.handshakeFails.WithLabelValues("auth").Inc()
		return nil, &ssh.BannerError{Err: err, Message: RefusalBanner(code, msg)}
	}
	if cm.User() != AgentUser {
		return reject(fmt.Errorf("authenticate agent: %w: user %q", ErrUnauthenticated, cm.User()), ReasonTokenInvalid,
			fmt.Sprintf("log in as user %q with an agent token", AgentUser))
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HandshakeTimeout)
	defer cancel()
	id, err := n.cfg.Authenticator.AuthenticateAgent(ctx, string(password))
	if err != nil {
		code, msg := refusalOf(err)
		return reject(fmt.Errorf("authenticate agent: %w", err), code, msg)
	}
	if id.TunnelID == "" || id.OrgID == "" {
		return reject(fmt.Errorf("authenticate agent: %w: identity without tunnel or organization", ErrUnauthenticated),
			ReasonTokenInvalid, "agent token rejected: it names no tunnel")
	}
	if !id.ExpiresAt.IsZero() && !n.cfg.Now().Before(id.ExpiresAt) {
		at := id.ExpiresAt.UTC().Format(time.RFC3339)
		return reject(fmt.Errorf("authenticate agent: %w: token expired at %s", ErrUnauthenticated, at),
			ReasonTokenExpired, "agent token expired at "+at)
	}
	return &ssh.Permissions{ExtraData: map[any]any{identityKey{}: id}}, nil
}

// refusalOf turns an Authenticator's error into a refusal code and the line the agent shows.
func refusalOf(err error) (code, msg string) {
	detail := err.Error()
	if i := strings.LastIndex(detail, ": "); i >= 0 {
		detail = detail[i+2:] // the token or tunnel id the sentinels are followed by
	}
	switch {
	case errors.Is(err, ErrTokenRevoked):
		return ReasonTokenRevoked, "agent token revoked (" + detail + ")"
	case errors.Is(err, ErrTunnelDeleted):
		return ReasonTunnelDeleted, "tunnel deleted (" + detail + ")"
	case errors.Is(err, token.ErrExpired):
		return ReasonTokenExpired, "agent token rejected: " + err.Error()
	case errors.Is(err, token.ErrUnknownKey):
		return ReasonTokenUnknown, "agent token rejected: " + err.Error()
	case errors.Is(err, token.ErrInvalid):
		return ReasonTokenInvalid, "agent token rejected: " + err.Error()
	}
	return ReasonTokenUnknown, "agent token rejected: " + err.Error()
}

// AgentHandler is the WebSocket endpoint agents dial (mount it at /v1/agent). It answers 400
// with application/problem+json, naming the supported versions, when the agent offers none of
// them, and 503 while the node drains or after Stop.
func (n *Node) AgentHandler() http.Handler { return http.HandlerFunc(n.serveAgent) }

func (n *Node) serveAgent(w http.ResponseWriter, r *http.Request) {
	n.mu.RLock()
	draining, stopped := n.draining, n.stopped
	n.mu.RUnlock()
	if draining || stopped {
		w.Header().Set("Retry-After", "5")
		n.metrics.handshakeFails.WithLabelValues("draining").Inc()
		writeHTTPProblem(w, problem{Status: http.StatusServiceUnavailable, Slug: "node-draining",
			Title: "This node is not accepting agents", Detail: "the node is draining or stopping; connect to another node"})
		return
	}
	if err := n.notReady(); err != nil {
		w.Header().Set("Retry-After", "1")
		n.metrics.handshakeFails.WithLabelValues("starting").Inc()
		writeHTTPProblem(w, startingProblem(err))
		return
	}
	if r.Header.Get("Origin") != "" {
		writeHTTPProblem(w, problem{Status: http.StatusForbidden, Slug: "browser-origin",
			Title: "Agents do not send Origin", Detail: "the agent endpoint refuses browser-originated WebSocket connections"})
		return
	}
	offered := websocket.Subprotocols(r)
	if !websocket.IsWebSocketUpgrade(r) || !slices.ContainsFunc(offered, func(p string) bool { return slices.Contains(SupportedProtocols, p) }) {
		n.metrics.handshakeFails.WithLabelValues("protocol").Inc()
		detail := "offered: none"
		if len(offered) > 0 {
			detail = "offered: " + strings.Join(offered, ", ")
		}
		if !websocket.IsWebSocketUpgrade(r) {
			detail = "not a WebSocket upgrade"
		}
		writeHTTPProblem(w, problem{Status: http.StatusBadRequest, Slug: "unsupported-protocol",
			Title:     "Unsupported agent protocol version",
			Detail:    detail + "; this node supports " + strings.Join(SupportedProtocols, ", "),
			Supported: SupportedProtocols})
		return
	}
	ws, err := n.upgrader.Upgrade(w, r, nil)
	if err != nil {
		n.log.Debug("agent upgrade failed", "remote_addr", r.RemoteAddr, "error", err)
		return // the upgrader has answered
	}
	conn := wsconn.New(ws, wsconn.Options{})
	meta := connMeta{remote: r.RemoteAddr, protocol: ws.Subprotocol(), started: n.cfg.Now()}
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		_ = conn.CloseWithReason(CloseCodeNode, "node stopping")
		return
	}
	n.pending[conn] = struct{}{}
	n.wg.Add(1)
	n.mu.Unlock()
	// The connection lives on in its own goroutine; this handler returns, so the HTTP server's
	// goroutine and buffers for it are gone.
	go n.runSession(conn, meta)
}

type connMeta struct {
	remote, protocol string
	started          time.Time
}

func (n *Node) runSession(conn *wsconn.Conn, meta connMeta) {
	defer n.wg.Done()
	_ = conn.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(conn, n.sshCfg)
	n.mu.Lock()
	delete(n.pending, conn)
	n.mu.Unlock()
	if err != nil {
		var be *ssh.BannerError
		if errors.As(err, &be) || strings.Contains(err.Error(), "no auth passed yet") {
			n.log.Info("agent refused", "remote_addr", meta.remote, "error", err)
		} else {
			n.metrics.handshakeFails.WithLabelValues("ssh").Inc()
			n.log.Info("agent ssh handshake failed", "remote_addr", meta.remote, "error", err)
		}
		_ = conn.CloseWithReason(CloseCodeNode, "ssh handshake failed")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	id, _ := sc.Permissions.ExtraData[identityKey{}].(AgentIdentity)
	s := &session{
		n: n, id: uuid.Must(uuid.NewV7()).String(), conn: conn, sc: sc, mux: sc, ident: id, meta: meta,
		algs: sc.Conn.(ssh.AlgorithmsConnMetadata).Algorithms(),
		done: make(chan struct{}),
	}
	s.agentVersion = agentVersionFrom(sc.ClientVersion())
	s.log = n.log.With("session_id", s.id, "tunnel_id", id.TunnelID, "org_id", id.OrgID, "token_id", id.TokenID)

	n.mu.Lock()
	refuse := n.draining || n.stopped
	if !refuse {
		n.sessions[s] = struct{}{}
	}
	n.mu.Unlock()
	if refuse {
		s.close("node draining")
		go ssh.DiscardRequests(reqs)
		drainChannels(chans)
		_ = sc.Wait()
		close(s.done)
		return
	}
	s.start()
	s.serve(chans, reqs)
	s.finish(sc.Wait())
}

func drainChannels(chans <-chan ssh.NewChannel) {
	for nc := range chans {
		_ = nc.Reject(ssh.Prohibited, "node draining")
	}
}

// maxUpstreamLen bounds the upstream URL an agent reports (it goes into the log).
const maxUpstreamLen = 2048

// agentInfoReply tells the agent its tunnel's upstream, and warns when the agent brought another
// one (connect --to): callers of the tunnel then reach something the tunnel does not name. An
// agent may answer RequestAgentInfo more than once; the warning comes once per session.
func (s *session) agentInfoReply(info AgentInfo) []byte {
	tunnel := s.ident.Upstream
	if o := info.UpstreamOverride; o != "" && tunnel != "" && strings.TrimRight(o, "/") != strings.TrimRight(tunnel, "/") {
		s.mu.Lock()
		warned := s.overrideWarned
		s.overrideWarned = true
		s.mu.Unlock()
		if !warned {
			s.log.Warn("agent overrides the tunnel's upstream", "tunnel_upstream", redactedURL(tunnel), "agent_upstream", redactedURL(o))
		}
	}
	// Without an upstream the agent needs its own, as with older nodes that answer nothing.
	js, _ := json.Marshal(AgentInfoReply{Upstream: tunnel, NodeID: s.n.cfg.NodeID})
	return ssh.Marshal(JSONPayload{JSON: string(js)})
}

// redactedURL is a URL fit for the log: without a password.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// agentDraining: the agent is stopping (RequestDrain). No new call is routed to it; the calls in
// flight finish (the agent bounds how long it waits), then the session ends with reason.
func (s *session) agentDraining(reason string) {
	s.log.Info("agent draining", "reason", reason)
	s.n.unroute(s)
	// The session goroutine holds a count of n.wg, so Add cannot race Stop's Wait.
	s.n.wg.Go(func() {
		s.waitIdle(context.Background()) // returns when the session ends too
		select {
		case <-s.done: // it ended first (the agent's shutdown timeout, the network)
		default:
			s.close(reason)
		}
	})
}

// agentVersionFrom reads "SSH-2.0-tunnelplane_agent_<version>".
func agentVersionFrom(v []byte) string {
	const prefix = "SSH-2.0-tunnelplane_agent_"
	s := string(v)
	if strings.HasPrefix(s, prefix) {
		return s[len(prefix):]
	}
	return s
}

// originOf splits a caller's address for the forwarded-tcpip payload.
func originOf(remote string) (string, uint32) {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		return remote, 0
	}
	var p uint32
	fmt.Sscanf(port, "%d", &p)
	return host, p
}
