package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUnauthenticated: a caller or agent presented no credential or an invalid one.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the credential is valid but does not allow this tunnel.
	ErrForbidden = errors.New("forbidden")
	// ErrUnknownTunnel: the caller may not learn that the tunnel exists (it holds no role in the
	// tunnel's organization); answered as a tunnel that does not exist.
	ErrUnknownTunnel = errors.New("unknown tunnel")
	// ErrInvalidConfig is returned by Config.Validate (joined, one per problem).
	ErrInvalidConfig = errors.New("node: invalid config")
	// ErrStopped: the node was stopped.
	ErrStopped = errors.New("node: stopped")
	// ErrTokenRevoked and ErrTunnelDeleted come with ErrUnauthenticated from an Authenticator
	// when the agent token was revoked or its tunnel deleted: the node then tells the agent that
	// a retry cannot help (ReasonTokenRevoked, ReasonTunnelDeleted).
	ErrTokenRevoked  = errors.New("agent token revoked")
	ErrTunnelDeleted = errors.New("tunnel deleted")
)

// AgentIdentity is who an agent token says the agent is.
type AgentIdentity struct {
	OrgID, TunnelID, TokenID string
	ExpiresAt                time.Time // zero: does not expire; else the session ends then
	// Upstream is the tunnel's upstream as the log says when the agent logs in, told to the agent
	// in the agent-info reply ("": unknown here; the agent then needs its own, connect --to).
	Upstream string
	// Seal is the sealing key of the token's issuer: the agent's address is sealed to it in
	// agent.connected (zero: the token carries none, and the address is left out).
	Seal SealKey
}

// SealKey is a subject's public sealing key (compliance/pii/sealbox) and its generation.
type SealKey struct {
	Subject    string
	Generation int
	Public     []byte
}

// Authenticator checks an agent token (offline, against the token keys and revocations).
// Errors should wrap ErrUnauthenticated (and ErrTokenRevoked or ErrTunnelDeleted when that is
// why); their text is shown to the agent.
type Authenticator interface {
	AuthenticateAgent(ctx context.Context, token string) (AgentIdentity, error)
}

// Route is a tunnel as the ingress addresses it. Calls tells that the tunnel's access log is
// domain.AccessLogCalls: the node records each of its calls (calls.go).
type Route struct {
	OrgID, TunnelID, Name string
	Calls                 bool
	// CORS is the tunnel's cross-origin setting (nil: none; the ingress adds nothing). It is
	// shared by every route of the tunnel: never change it.
	CORS *CORS
}

// CORS is a tunnel's cross-origin setting as the ingress applies it (domain.TunnelCORS).
type CORS struct {
	// Passthrough: preflights go to the upstream without a credential, which answers them.
	Passthrough bool
	// Origins are the allowed origins as browsers send them (domain.CanonicalOrigin): their
	// preflights are answered by the node, and responses to them carry the node's grant.
	Origins []string
}

// Router resolves the tunnel a request names for an authenticated caller: ref is the host label of
// <ref>.<BaseDomain> or the first path segment after /t/. A bare tunnel name must resolve the
// same way whatever other tenants create (e.g. only within the caller's own organizations).
type Router interface {
	Resolve(ref string, caller Principal) (Route, bool)
}

// Principal is the caller a credential identifies: a user (a user token) or a tunnel access key.
type Principal struct {
	// UserID is the user a user token names ("" for an access key).
	UserID string
	// AccessKeyID is the tunnel access key presented ("" for a user token).
	AccessKeyID string
	// RemoteIP is the caller's address, set by the ingress on every request (authentication
	// results are cached; the address is not part of them): an access key may be bound to
	// source prefixes.
	RemoteIP netip.Addr
	// Expires is when a user token stops authenticating by the clock (its expiry plus the
	// accepted leeway); zero: not by the clock (an access key's expiry is the Authorizer's to
	// know). A call open when it passes is decided again and cut, as at any withdrawal.
	Expires time.Time
	// Host is the one host a user token is valid on (a browser login's; token.UserClaims.Host):
	// the ingress refuses it on any other. Empty: any host.
	Host string
	// IssuedAt is when a user token was issued (zero: it says not): nodes refuse a token issued
	// before its user's deletion.
	IssuedAt time.Time
}

// IngressAuthorizer decides who calls the ingress and which tunnels they may call. The ingress
// authenticates first, resolves the tunnel for the caller, then authorizes: nobody without a
// valid credential learns which tunnels exist.
type IngressAuthorizer interface {
	// AuthenticateCaller checks a bearer token. Errors wrap ErrUnauthenticated (401); any other
	// error is answered 503. Successful results are cached for AuthCacheTTL.
	AuthenticateCaller(ctx context.Context, bearer string) (Principal, error)
	// AuthorizeIngress decides whether p may call r: nil, or an error wrapping ErrForbidden (403),
	// ErrUnknownTunnel (404, as for a tunnel that does not exist) or ErrUnauthenticated (401: the
	// credential stopped being valid since it was authenticated, a revoked access key); any
	// other error is 503.
	// It is asked on every request (cheap lookups): a withdrawn role takes effect at once.
	AuthorizeIngress(ctx context.Context, p Principal, r Route) error
}

// PeerKeys tells which keys the log holds in force for a node: its enrolled event keys, none
// once it was removed or when it never enrolled (dataplane/view: View.NodeKeys).
type PeerKeys interface {
	NodeKeys(nodeID string) []ed25519.PublicKey
}

// Sink receives the node's data-plane facts. It is called synchronously from the node's
// goroutines and must not block (queue and return).
type Sink interface {
	AgentConnected(domain.AgentConnected)
	AgentDisconnected(domain.AgentDisconnected)
	AgentReplaced(domain.AgentReplaced)
	UsageRecorded(domain.UsageRecorded)
	// AgentReported takes what an agent reported through RequestAgentEvent (failover facts),
	// checked and completed with the session's identity.
	AgentReported(domain.Event)
}

// CorrelatedSink is a Sink that also takes a fact with the correlation id of what caused it: the
// trace id of the traced call whose wait probed an agent found unresponsive (its
// agent.disconnected). A Sink without it gets such facts through its plain methods.
type CorrelatedSink interface {
	Correlated(e domain.Event, correlationID string)
}

// DefaultFailoverWait is Config.FailoverWait's default.
const DefaultFailoverWait = 5 * time.Second

// Config configures a Node. Zero durations and sizes take the documented defaults; negative
// values are errors unless documented otherwise.
type Config struct {
	NodeID  string
	HostKey ssh.Signer // the node's SSH host key (ed25519), what agents pin
	Authenticator
	Router
	Authorizer IngressAuthorizer
	Sink       Sink // nil: facts are dropped
	// BaseDomain enables host routing: <ref>.<BaseDomain>. Empty: path routing only (/t/<ref>/).
	BaseDomain string
	// LoginURL is the control plane's origin as browsers reach it (its --public-url). With it
	// and BaseDomain, a browser that navigates to a tunnel host without a credential is sent
	// there to log in, and comes back with a session cookie for that host (browser.go). Empty:
	// such a browser gets 401 like any caller.
	LoginURL string
	// Ready, when set, is asked before an agent is admitted or an ingress request is routed; an
	// error is answered 503 with its text and Retry-After: 1 (the assembly refuses while the
	// node's view of the control plane is still replaying the event log after a start).
	Ready func() error

	UsageWindow time.Duration // one UsageRecorded per tunnel and caller per window (default 10s)
	// UsageMaxCallers bounds the distinct (tunnel, caller) accounts of one usage window (default
	// 10,000): calls of further callers count in their tunnel's overflow account
	// (domain.CallerOverflow) and in tunnelplane_node_usage_overflow_calls_total.
	UsageMaxCallers int
	// CallQueueMax bounds the call records waiting for the sink (default 50,000; calls.go); more
	// are dropped and counted. CallBatchMax bounds one access.calls_recorded batch (default 500,
	// at most domain.MaxCallsPerBatch); CallFlushInterval is how often a batch that is not full
	// goes out (default 1s).
	CallQueueMax      int
	CallBatchMax      int
	CallFlushInterval time.Duration
	KeepaliveInterval time.Duration // how often the node pings each agent (default 15s)
	// KeepaliveTimeout is how long the node waits for a keepalive's answer before it closes the
	// session as unresponsive (default 5s). Besides the periodic ones, a probe goes out as soon
	// as a caller has waited probeAfter for the agent, so callers of a frozen agent are answered
	// 503 agent-unresponsive within about probeAfter + KeepaliveTimeout.
	KeepaliveTimeout time.Duration
	HandshakeTimeout time.Duration // WebSocket to tunnel held: SSH, auth and forward (default 10s)
	// MaxRequestBody bounds one ingress request body (default 1 GiB; larger is answered 413).
	MaxRequestBody int64
	// HeaderTimeout bounds reading an ingress request's headers (servers from NewHTTPServer).
	HeaderTimeout  time.Duration // default 10s
	MaxHeaderBytes int           // default 64 KiB
	// ResponseHeaderTimeout bounds the wait for the upstream's response headers (default 5m:
	// a local model may load for a while before its first token).
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes pooled upstream connections unused this long (default 90s).
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerTunnel bounds the pool of idle upstream connections per tunnel (default 64).
	MaxIdleConnsPerTunnel int
	// MaxCallsPerTunnel bounds the calls in flight per tunnel on this node: requests, streams,
	// WebSockets and channel opens the agent has not answered yet (default 512). Beyond it
	// callers get 503 with Retry-After; so a tunnel (or its agent) holds at most this many
	// callers' connections and goroutines.
	MaxCallsPerTunnel int
	// ChannelOpenTimeout bounds the wait for the agent to accept a tunnel channel (default 15s;
	// the agent dials its upstream first, for at most 10s by default). The caller gets 504.
	ChannelOpenTimeout time.Duration
	// MaxConnsPerSource bounds the open ingress connections of one client IP address (default
	// 256; agents' connections are not counted once they hold their WebSocket). Connections
	// beyond it are answered 429 and closed.
	MaxConnsPerSource int
	// AuthCacheTTL caches successful caller authentications per token, so that a busy caller
	// does not pay a signature check per request (default 5s; negative disables).
	// Node.ForgetAuthorizations ends them early when a token key is revoked.
	AuthCacheTTL time.Duration
	// FailoverWait is how long a call for a tunnel that no agent holds on this node waits for
	// one (failover.go): an agent reconnecting (its restart, this node's, a move between nodes)
	// gets the calls made meanwhile. Zero: DefaultFailoverWait; negative: calls do not wait
	// (503 agent-absent at once). A call that failed before any byte of it reached an agent,
	// because the agent's session went away, waits for the next one within what is left of it.
	FailoverWait time.Duration
	// MaxQueuedPerTunnel bounds the calls waiting for an agent of one tunnel (default 256);
	// beyond it callers get 503 failover-queue-full with Retry-After at once.
	MaxQueuedPerTunnel int

	// Peers and PeerKey turn forwarding between nodes on (peers.go): a call for a tunnel whose
	// agent is on another node goes there, over an SSH connection authenticated both ways by
	// the nodes' enrolled keys. Peers tells which keys the log holds in force for a node (none:
	// not enrolled, or removed); PeerKey is this node's own enrolled key (ed25519). Routes come
	// from PutRoute. Both nil: no forwarding, and /v1/peer refuses.
	Peers   PeerKeys
	PeerKey ssh.Signer

	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	// TracerProvider traces calls (trace.go); nil: tracing.Provider(), which is nil (no tracing,
	// no cost) unless the process set tracing up from its OTEL_* environment.
	TracerProvider trace.TracerProvider
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

func (c *Config) applyDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.UsageWindow, 10*time.Second)
	def(&c.KeepaliveInterval, 15*time.Second)
	def(&c.KeepaliveTimeout, 5*time.Second)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.HeaderTimeout, 10*time.Second)
	def(&c.ResponseHeaderTimeout, 5*time.Minute)
	def(&c.IdleConnTimeout, 90*time.Second)
	def(&c.AuthCacheTTL, 5*time.Second)
	def(&c.ChannelOpenTimeout, 15*time.Second)
	def(&c.CallFlushInterval, time.Second)
	def(&c.FailoverWait, DefaultFailoverWait)
	if c.MaxQueuedPerTunnel == 0 {
		c.MaxQueuedPerTunnel = 256
	}
	if c.CallQueueMax == 0 {
		c.CallQueueMax = 50_000
	}
	if c.CallBatchMax == 0 {
		c.CallBatchMax = 500
	}
	if c.MaxCallsPerTunnel == 0 {
		c.MaxCallsPerTunnel = 512
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = 256
	}
	if c.UsageMaxCallers == 0 {
		c.UsageMaxCallers = 10000
	}
	if c.MaxRequestBody == 0 {
		c.MaxRequestBody = 1 << 30
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxIdleConnsPerTunnel == 0 {
		c.MaxIdleConnsPerTunnel = 64
	}
	if c.TracerProvider == nil {
		c.TracerProvider = tracing.Provider()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem at once; zero values count as their defaults.
func (c Config) Validate() error {
	c.applyDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if strings.TrimSpace(c.NodeID) == "" {
		bad("NodeID is required")
	}
	if c.HostKey == nil {
		bad("HostKey is required")
	} else if t := c.HostKey.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		bad("HostKey must be ed25519, got %s", t)
	}
	if (c.Peers == nil) != (c.PeerKey == nil) {
		bad("Peers and PeerKey go together")
	}
	if c.PeerKey != nil && c.PeerKey.PublicKey().Type() != ssh.KeyAlgoED25519 {
		bad("PeerKey must be ed25519, got %s", c.PeerKey.PublicKey().Type())
	}
	if c.Authenticator == nil {
		bad("Authenticator is required")
	}
	if c.Router == nil {
		bad("Router is required")
	}
	if c.Authorizer == nil {
		bad("Authorizer is required")
	}
	if c.BaseDomain != "" && (strings.HasPrefix(c.BaseDomain, ".") || strings.ContainsAny(c.BaseDomain, "/: ")) {
		bad("BaseDomain %q must be a bare domain name such as tunnels.example.com", c.BaseDomain)
	}
	if c.LoginURL != "" {
		if o, err := domain.CanonicalOrigin(c.LoginURL); err != nil || o != c.LoginURL {
			bad("LoginURL %q must be the control plane's origin, such as https://tunnelplane.example", c.LoginURL)
		} else if c.BaseDomain == "" {
			bad("LoginURL needs BaseDomain: a browser session is bound to a tunnel's host")
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"UsageWindow", c.UsageWindow}, {"KeepaliveInterval", c.KeepaliveInterval}, {"KeepaliveTimeout", c.KeepaliveTimeout},
		{"HandshakeTimeout", c.HandshakeTimeout}, {"HeaderTimeout", c.HeaderTimeout},
		{"ResponseHeaderTimeout", c.ResponseHeaderTimeout}, {"IdleConnTimeout", c.IdleConnTimeout},
		{"ChannelOpenTimeout", c.ChannelOpenTimeout},
	} {
		if d.v <= 0 {
			bad("%s must be positive, got %v", d.name, d.v)
		}
	}
	if c.MaxRequestBody <= 0 {
		bad("MaxRequestBody must be positive, got %d", c.MaxRequestBody)
	}
	if c.MaxHeaderBytes <= 0 {
		bad("MaxHeaderBytes must be positive, got %d", c.MaxHeaderBytes)
	}
	if c.MaxIdleConnsPerTunnel < 0 {
		bad("MaxIdleConnsPerTunnel must not be negative, got %d", c.MaxIdleConnsPerTunnel)
	}
	if c.MaxCallsPerTunnel < 0 {
		bad("MaxCallsPerTunnel must be positive, got %d", c.MaxCallsPerTunnel)
	}
	if c.MaxQueuedPerTunnel < 0 {
		bad("MaxQueuedPerTunnel must be positive, got %d", c.MaxQueuedPerTunnel)
	}
	if c.UsageMaxCallers < 0 {
		bad("UsageMaxCallers must be positive, got %d", c.UsageMaxCallers)
	}
	if c.MaxConnsPerSource < 0 {
		bad("MaxConnsPerSource must be positive, got %d", c.MaxConnsPerSource)
	}
	if err := c.validateCalls(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
