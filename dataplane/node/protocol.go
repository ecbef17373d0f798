package node

import (
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// The node–agent wire protocol. The agent package speaks it too; change both together and keep
// older agents working (a new protocol version, never a changed meaning of an old name).
const (
	// ProtocolV1 is the plain tunnel: SSH over WebSocket, one reverse forward, keepalives.
	ProtocolV1 = "tunnelplane.v1"
	// ProtocolV2 adds the agent-info request (agent version, the Host header its upstream
	// expects). Later features (failover, pooling, agent forwarding) negotiate here.
	ProtocolV2 = "tunnelplane.v2"

	// AgentUser is the SSH user name an agent logs in with; its password is its agent token,
	// sent only after the agent has checked the node's host key.
	AgentUser = "agent"

	// RequestForward asks for the agent's tunnel (RFC 4254 tcpip-forward; the bind address and
	// port are echoed back in every forwarded channel, the tunnel comes from the token).
	RequestForward = "tcpip-forward"
	// RequestCancelForward releases the tunnel; the node then ends the session.
	RequestCancelForward = "cancel-tcpip-forward"
	// RequestAgentInfo (v2) carries an AgentInfo as JSON before RequestForward.
	RequestAgentInfo = "agent-info@tunnelplane.dev"
	// RequestKeepalive is sent by both sides with want-reply; any reply proves liveness.
	RequestKeepalive = "keepalive@tunnelplane.dev"
	// RequestDisconnect carries a DisconnectNotice just before the sender closes the connection,
	// so the other side can say why.
	RequestDisconnect = "disconnect@tunnelplane.dev"
	// RequestDrain (v2, want-reply, a DisconnectNotice) says the agent is stopping: the node stops
	// routing new calls to it, lets the calls in flight finish and then ends the session for the
	// notice's reason, as if the agent had sent RequestDisconnect. A node that does not know it
	// answers false; the agent then refuses new channels itself.
	RequestDrain = "drain@tunnelplane.dev"
	// RequestAgentEvent (v2, want-reply, an AgentEvent as JSON) reports a decision of an agent
	// that holds several nodes (failover, failback). The node records it as its own fact with
	// this session's tunnel, token and session; one that does not know it answers false and the
	// agent drops the event.
	RequestAgentEvent = "agent-event@tunnelplane.dev"
	// ChannelForwarded is the channel type the node opens for each ingress connection.
	ChannelForwarded = "forwarded-tcpip"
	// ChannelTraced (v2, only to an agent whose AgentInfo said Tracing) carries one traced call:
	// its payload is a TracedChannel. The node writes no traceparent into the request; the agent
	// adds its own (its upstream span's) after the request line, and the channel is never pooled,
	// so the agent's spans end with the call.
	ChannelTraced = "traced-tcpip@tunnelplane.dev"

	// PeerProtocol is the WebSocket subprotocol of the node-to-node endpoint (/v1/peer): SSH in
	// which the client logs in as its node id with its enrolled key, and the server's host key is
	// its own enrolled key (peers.go, peerserve.go).
	PeerProtocol = "tunnelplane-peer.v1"
	// ChannelPeerCall carries one connection of forwarded calls to the tunnel a PeerCall names:
	// the receiving node accepts it once a channel to its agent is open, sends RequestPeerInfo on
	// it, then copies bytes both ways until either side ends.
	ChannelPeerCall = "peer-call@tunnelplane.dev"
	// RequestPeerInfo (a channel request, no reply) is the receiving node's PeerInfo for the
	// channel, sent before any byte of the agent's.
	RequestPeerInfo = "peer-info@tunnelplane.dev"
	// RequestPeerIdle (a channel request, no reply, a PeerIdle) says the forwarding node put the
	// channel in its pool after a call's answer: the receiving node stops counting it among
	// its agent's calls in flight (a drain does not wait for idle channels) until bytes come.
	RequestPeerIdle = "peer-idle@tunnelplane.dev"

	// DrainReason is the DisconnectNotice a draining node sends its agents first: it routes them
	// no new call and ends their sessions once their calls are done, so an agent that holds
	// other nodes moves this connection elsewhere at once.
	DrainReason = "node draining"

	// CloseCodeNode is the WebSocket close code the node uses when it ends a session on purpose;
	// the close text is the reason.
	CloseCodeNode = 4000
)

// SupportedProtocols lists the subprotocols a node accepts, most preferred first.
var SupportedProtocols = []string{ProtocolV2, ProtocolV1}

// SSH algorithms. In SSH the client's order decides, so the agent lists them in this order and
// the node accepts any of them. AES-GCM comes first: x/crypto has assembly for it on amd64 and
// arm64 but not for chacha20-poly1305, which runs at about half the speed there.
var (
	KeyExchanges = []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519}
	Ciphers      = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305}
	// MACs only matter if a non-AEAD cipher were ever negotiated; none of Ciphers is one.
	MACs = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM}
)

// ForwardRequest is the payload of RequestForward.
type ForwardRequest struct {
	BindAddr string
	BindPort uint32
}

// ForwardedChannel is the payload of a ChannelForwarded open: the forward it belongs to and the
// caller's address.
type ForwardedChannel struct {
	Addr       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

// TracedChannel is the payload of a ChannelTraced open: a ForwardedChannel's fields and the
// W3C traceparent of the node's ingress span (the agent's parent).
type TracedChannel struct {
	Addr        string
	Port        uint32
	OriginAddr  string
	OriginPort  uint32
	Traceparent string
}

// PeerCall is the payload of a ChannelPeerCall open: the tunnel (and its organization), the
// caller's address, and how long the receiving node may wait for an agent of the tunnel (what
// is left of the call's failover wait at the ingress node).
type PeerCall struct {
	TunnelID, OrgID string
	OriginAddr      string
	OriginPort      uint32
	WaitMillis      uint32
	// Traceparent, when set, is the ingress node's span of a sampled call: the channel carries
	// that one call (never pooled), and the receiving node's span is its child.
	Traceparent string
}

// PeerInfo is what the receiving node says of a ChannelPeerCall: the Host header its agent
// wants ("" keeps the caller's).
type PeerInfo struct {
	HostHeader string
	// For a traced call (PeerCall.Traceparent): AgentTraces says the receiving node's agent
	// writes the upstream's traceparent itself (the forwarding node writes none); else
	// Traceparent is the receiving node's span, which the forwarding node writes for the upstream.
	AgentTraces bool
	Traceparent string
}

// PeerIdle is the payload of RequestPeerIdle: the bytes the forwarding node has written on the
// channel in all. Channel requests and data travel apart, so the receiving node takes the
// channel for idle only when it has read exactly that many: more, and a next call has begun.
type PeerIdle struct {
	Written uint64
}

// AgentInfo is what a v2 agent says about itself (JSON inside a JSONPayload).
type AgentInfo struct {
	Version string `json:"version"`
	// UpstreamScheme is "http" or "tcp".
	UpstreamScheme string `json:"upstream_scheme,omitempty"`
	// HostHeader, when set, replaces the caller's Host header on requests to the upstream
	// (local servers such as Ollama refuse Host names they do not know).
	HostHeader string `json:"host_header,omitempty"`
	// Replace asks to take the tunnel over from an agent with another token that holds it on the
	// node (connect --replace); without it such an agent is refused. An agent reconnecting with
	// the token of the session that holds the tunnel replaces that session either way.
	Replace bool `json:"replace,omitempty"`
	// UpstreamOverride is the upstream the agent was given itself (connect --to), when it was;
	// the node warns when it is not the tunnel's.
	UpstreamOverride string `json:"upstream_override,omitempty"`
	// Tracing says the agent traces calls and takes ChannelTraced opens (older nodes ignore it,
	// and older agents never send it: the node then opens only ChannelForwarded).
	Tracing bool `json:"tracing,omitempty"`
}

// AgentInfoReply is the payload of the node's answer to RequestAgentInfo (JSON inside a
// JSONPayload). Older nodes answer with no payload.
type AgentInfoReply struct {
	// Upstream is the tunnel's upstream (AgentIdentity.Upstream); the agent uses it unless it was
	// given its own. Empty when the node does not know it.
	Upstream string `json:"upstream,omitempty"`
	// NodeID names the node, so that an agent on several nodes can say which one it left.
	NodeID string `json:"node_id,omitempty"`
}

// AgentEvent is what an agent reports with RequestAgentEvent.
type AgentEvent struct {
	Type         string    `json:"type"`  // domain.TypeFailoverStarted, TypeFailoverCompleted or TypeFailbackCompleted
	Cause        string    `json:"cause"` // a domain.Cause… (failover only)
	FromNodeID   string    `json:"from_node_id"`
	DetectedAt   time.Time `json:"detected_at,omitzero"`
	DurationMS   int64     `json:"duration_ms,omitempty"`
	HealthyForMS int64     `json:"healthy_for_ms,omitempty"`
}

// JSONPayload wraps a JSON document as an SSH string.
type JSONPayload struct{ JSON string }

// DisconnectNotice is the payload of RequestDisconnect.
type DisconnectNotice struct{ Reason string }

// Why the node refused an agent's login. The reason goes at the end of the login banner, as
// " [reason=<code>]", so that an agent can tell a refusal a retry cannot change from one it can;
// older agents show the banner as it is. New codes may come: an agent treats a code it does not
// know as temporary.
const (
	ReasonTokenRevoked  = "token-revoked"  // permanent
	ReasonTokenExpired  = "token-expired"  // permanent
	ReasonTokenInvalid  = "token-invalid"  // permanent: malformed, forged or another audience's
	ReasonTunnelDeleted = "tunnel-deleted" // permanent
	// ReasonTokenUnknown: the node does not know the token's key or tunnel yet (its view of the
	// log may be a moment behind a rotation or a new tunnel); temporary.
	ReasonTokenUnknown = "token-unknown"
)

// PermanentReason tells the codes after which the same token will never be accepted.
func PermanentReason(code string) bool {
	switch code {
	case ReasonTokenRevoked, ReasonTokenExpired, ReasonTokenInvalid, ReasonTunnelDeleted:
		return true
	}
	return false
}

const bannerPrefix, reasonOpen = "tunnelplane: ", " [reason="

// RefusalBanner is the login banner of a refusal: one line saying why, and its code.
func RefusalBanner(code, msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if code == "" {
		return bannerPrefix + msg + "\n"
	}
	return bannerPrefix + msg + reasonOpen + code + "]\n"
}

// ParseRefusalBanner reads a banner from RefusalBanner (code "" when it carries none, as from
// older nodes).
func ParseRefusalBanner(banner string) (code, msg string) {
	msg = strings.TrimSpace(banner)
	msg = strings.TrimSpace(strings.TrimPrefix(msg, strings.TrimSpace(bannerPrefix)))
	if i := strings.LastIndex(msg, reasonOpen); i >= 0 && strings.HasSuffix(msg, "]") {
		c := msg[i+len(reasonOpen) : len(msg)-1]
		if c != "" && !strings.ContainsAny(c, " []") {
			return c, strings.TrimSpace(msg[:i])
		}
	}
	return "", msg
}
