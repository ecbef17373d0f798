package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/rawconn"
	"github.com/tunnelplane/tunnelplane/dataplane/wsconn"
	"github.com/tunnelplane/tunnelplane/internal/tracing"
)

// Sentinel errors; match with errors.Is.
var (
	ErrInvalidConfig = errors.New("agent: invalid config")
	// ErrPermanent comes with every refusal a retry cannot change: Run returns it instead of
	// retrying. It comes with the kind of refusal (ErrHostKeyMismatch, ErrAuthFailed or
	// ErrRefused) and, for a login refusal, with its reason (ErrTokenRevoked, …).
	ErrPermanent = errors.New("permanent refusal")
	// ErrHostKeyMismatch: the node's host key is not the pinned one. The agent refuses to send
	// its token to it.
	ErrHostKeyMismatch = errors.New("host key mismatch")
	// ErrAuthFailed: the node refused the agent token (the node's reason follows).
	ErrAuthFailed = errors.New("authentication failed")
	// ErrTokenRevoked, ErrTokenExpired, ErrTokenInvalid and ErrTunnelDeleted say why the node
	// refused the token, when it said so (node.RefusalBanner); each comes with ErrPermanent.
	ErrTokenRevoked  = errors.New("agent token revoked")
	ErrTokenExpired  = errors.New("agent token expired")
	ErrTokenInvalid  = errors.New("agent token invalid")
	ErrTunnelDeleted = errors.New("tunnel deleted")
	// ErrRefused: the node refused the WebSocket connection (version, draining; reason follows).
	// A 4xx answer (other than 408 and 429) is permanent: the URL, the version or a proxy in
	// between is wrong, and asking again will not change it.
	ErrRefused = errors.New("node refused the connection")
	// ErrUnavailable comes with ErrRefused when the refusal is temporary (HTTP 503: the node is
	// starting or draining); the agent retries without alarm.
	ErrUnavailable = errors.New("node unavailable")
	// ErrTunnelRefused: the node refused to give the agent its tunnel.
	ErrTunnelRefused = errors.New("node refused the tunnel")
	// ErrNoUpstream: the agent was given no upstream and the node does not tell the tunnel's
	// (an older node, or one that does not know it); Run returns it.
	ErrNoUpstream = errors.New("this node does not tell the tunnel's upstream; pass --to (Config.Upstream)")
)

// reasonErrs name the login refusals a retry cannot change (node.PermanentReason), by code.
var reasonErrs = map[string]error{
	node.ReasonTokenRevoked:  ErrTokenRevoked,
	node.ReasonTokenExpired:  ErrTokenExpired,
	node.ReasonTokenInvalid:  ErrTokenInvalid,
	node.ReasonTunnelDeleted: ErrTunnelDeleted,
}

// permanentError is a refusal a retry cannot change. Its text is one line saying what happened,
// without the sentinels' names.
type permanentError struct {
	msg  string
	errs []error
}

func (e *permanentError) Error() string   { return e.msg }
func (e *permanentError) Unwrap() []error { return e.errs }

func permanent(msg string, kinds ...error) error {
	return &permanentError{msg: msg, errs: append([]error{ErrPermanent}, kinds...)}
}

// State is where the agent is in its connection cycle.
type State int

const (
	StateConnecting State = iota
	StateConnected
	StateDisconnected
	StateRetrying
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateRetrying:
		return "retrying"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Config configures an agent.
type Config struct {
	// NodeURL is the node's agent endpoint: wss://node.example.com/v1/agent (http and https are
	// read as ws and wss; an empty path means /v1/agent).
	NodeURL string
	// NodeURLs are more nodes, after NodeURL, in order of preference. The agent holds
	// Connections of them at once, each a full session, on distinct nodes: when one is lost it
	// moves that connection to the next free node (failover), and back to a preferred node once
	// that has been reachable for FailbackDelay (failback). It reports both through a node it
	// holds, which records them (failover.started, failover.completed, failback.completed).
	NodeURLs []string
	// Connections is how many nodes the agent holds at once (default 2, at most one per node).
	Connections int
	// FailbackDelay is how long a preferred node must stay reachable before the agent moves back
	// to it (default 30s).
	FailbackDelay time.Duration
	// Discover is the control plane's URL (https://control.example.com) or its node list for the
	// tunnel (…/api/v1/tunnels/{id}/nodes): the agent asks it, with its agent token, which nodes
	// to hold and their host keys, after the NodeURLs given, and asks again every
	// DiscoverInterval (default 1m).
	Discover         string
	DiscoverInterval time.Duration
	// Token is the agent token; it is sent only after the host key checked out.
	Token string
	// Upstream is the local service: http://127.0.0.1:11434, https://…, or tcp://host:port.
	// Empty: the tunnel's upstream, as the node tells it at each connection (so a changed tunnel
	// is followed from the next connection on). Set, it overrides the tunnel's, and the node logs
	// that it does.
	Upstream string
	// HostKeyFingerprint pins the node's SSH host key ("SHA256:…"). Required unless
	// InsecureSkipPin.
	HostKeyFingerprint string
	// HostKeyFingerprints pins more keys: a node's host key must match one of them (several
	// nodes have several keys).
	HostKeyFingerprints []string
	InsecureSkipPin     bool
	// Protocols are the WebSocket subprotocols offered, preferred first (default v2, v1).
	Protocols []string
	// Version is reported to the node.
	Version string
	// PreserveHost keeps the caller's Host header; by default HTTP upstreams get their own host
	// (local servers such as Ollama refuse unknown Host names). Needs protocol v2.
	PreserveHost bool
	// Replace takes the tunnel over from an agent with another token that holds it on the node
	// (the node records it as agent.replaced). Without it the node refuses this agent while the
	// other is connected, and this one retries (a standby). Needs protocol v2.
	Replace bool

	MinBackoff, MaxBackoff time.Duration // default 500ms, 30s
	// DialTimeout bounds one connection attempt: WebSocket, SSH, login and tunnel (default 15s).
	DialTimeout time.Duration
	// KeepaliveInterval and KeepaliveTimeout: how often the agent probes the node and how long
	// it waits for the answer before it gives the connection up (default 15s, 10s).
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// UpstreamDialTimeout bounds dialling the upstream for one forwarded connection (default 10s).
	UpstreamDialTimeout time.Duration
	// ShutdownTimeout bounds how long the agent, once ctx ends, lets the calls in flight finish
	// (streamed generations included) before it closes the connection (default 30s). Meanwhile
	// the node routes no new call to it (RequestDrain; with a node that does not know it, the
	// agent refuses new channels itself and may wait for idle pooled ones until the timeout).
	ShutdownTimeout time.Duration
	// TLSConfig is used for wss:// node URLs (nil: system roots).
	TLSConfig *tls.Config
	Logger    *slog.Logger
	// TracerProvider traces calls: a node that traces then sends each sampled call on a channel
	// of its own with its trace context, and the agent's spans (the call, the request to the
	// upstream) are its children; the upstream gets a traceparent. nil: tracing.Provider(), nil
	// unless the process set tracing up from its OTEL_* environment.
	TracerProvider trace.TracerProvider
	// OnState hears every state change with a plain-words detail (connected to …, disconnected:
	// reason, retrying in 2s). Calls never overlap (an agent on several nodes serialises them);
	// it must not block.
	OnState func(State, string)
}

func (c *Config) applyDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.MinBackoff, 500*time.Millisecond)
	def(&c.MaxBackoff, 30*time.Second)
	def(&c.DialTimeout, 15*time.Second)
	def(&c.KeepaliveInterval, 15*time.Second)
	def(&c.KeepaliveTimeout, 10*time.Second)
	def(&c.UpstreamDialTimeout, 10*time.Second)
	def(&c.ShutdownTimeout, 30*time.Second)
	def(&c.FailbackDelay, 30*time.Second)
	def(&c.DiscoverInterval, time.Minute)
	if c.Connections == 0 {
		c.Connections = 2
	}
	if len(c.Protocols) == 0 {
		c.Protocols = []string{node.ProtocolV2, node.ProtocolV1}
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = tracing.Provider()
	}
}

// Validate reports every problem at once; zero values count as their defaults.
func (c Config) Validate() error {
	c.applyDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if _, err := c.nodeURLs(); err != nil && (c.Discover == "" || c.NodeURL != "" || len(c.NodeURLs) > 0) {
		bad("%v", err)
	}
	if c.Discover != "" {
		if _, err := discoveryURL(c.Discover, c.Token); err != nil {
			bad("Discover: %v", err)
		}
	}
	if c.Connections < 0 {
		bad("Connections must be positive, got %d", c.Connections)
	}
	if c.Token == "" {
		bad("Token is required")
	}
	if c.Upstream != "" {
		if _, err := parseUpstream(c.Upstream); err != nil {
			bad("Upstream: %v", err)
		}
	}
	switch {
	case c.HostKeyFingerprint == "" && len(c.HostKeyFingerprints) == 0 && !c.InsecureSkipPin && (c.NodeURL != "" || len(c.NodeURLs) > 0):
		bad("HostKeyFingerprint is required (SHA256:… from the node) unless InsecureSkipPin is set")
	}
	for _, fp := range c.pins() {
		if !strings.HasPrefix(fp, "SHA256:") {
			bad("host key fingerprint %q must look like SHA256:…", fp)
		}
	}
	for _, p := range c.Protocols {
		if !slices.Contains(node.SupportedProtocols, p) {
			bad("protocol %q is not one of %v", p, node.SupportedProtocols)
		}
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.MinBackoff > c.MaxBackoff {
		bad("backoff must satisfy 0 < MinBackoff <= MaxBackoff, got %v and %v", c.MinBackoff, c.MaxBackoff)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"DialTimeout", c.DialTimeout}, {"KeepaliveInterval", c.KeepaliveInterval}, {"KeepaliveTimeout", c.KeepaliveTimeout}, {"UpstreamDialTimeout", c.UpstreamDialTimeout}, {"ShutdownTimeout", c.ShutdownTimeout}, {"FailbackDelay", c.FailbackDelay}, {"DiscoverInterval", c.DiscoverInterval}} {
		if d.v < 0 {
			bad("%s must be positive, got %v", d.name, d.v)
		}
	}
	return errors.Join(errs...)
}

// pins are the host key fingerprints a node's key may match.
func (c *Config) pins() []string {
	var out []string
	if c.HostKeyFingerprint != "" {
		out = append(out, c.HostKeyFingerprint)
	}
	return append(out, c.HostKeyFingerprints...)
}

// nodeURLs are NodeURL and NodeURLs, parsed, in order of preference.
func (c *Config) nodeURLs() ([]*url.URL, error) {
	raw := c.NodeURLs
	if c.NodeURL != "" {
		raw = append([]string{c.NodeURL}, raw...)
	}
	if len(raw) == 0 {
		return nil, errors.New("NodeURL: a node is required (or Discover)")
	}
	if len(raw) > maxNodes {
		return nil, fmt.Errorf("NodeURLs: at most %d nodes, got %d", maxNodes, len(raw))
	}
	out := make([]*url.URL, 0, len(raw))
	seen := map[string]bool{}
	for _, r := range raw {
		u, err := nodeURL(r)
		if err != nil {
			return nil, fmt.Errorf("NodeURL: %w", err)
		}
		if seen[u.String()] {
			return nil, fmt.Errorf("NodeURL: %s is given twice", u.Redacted())
		}
		seen[u.String()] = true
		out = append(out, u)
	}
	return out, nil
}

// maxNodes bounds the nodes one agent is given.
const maxNodes = 64

func nodeURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("%q: want ws://, wss://, http:// or https://", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%q has no host", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/agent"
	}
	return u, nil
}

type upstream struct {
	scheme string // http, https or tcp
	addr   string // host:port
	host   string // Host header for HTTP upstreams
}

func parseUpstream(raw string) (upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return upstream{}, err
	}
	if u.Host == "" {
		return upstream{}, fmt.Errorf("%q: want http://host:port, https://host:port or tcp://host:port", raw)
	}
	up := upstream{scheme: u.Scheme, addr: u.Host, host: u.Host}
	switch u.Scheme {
	case "http":
		if u.Port() == "" {
			up.addr = net.JoinHostPort(u.Hostname(), "80")
		}
	case "https":
		if u.Port() == "" {
			up.addr = net.JoinHostPort(u.Hostname(), "443")
		}
	case "tcp":
		if u.Port() == "" {
			return upstream{}, fmt.Errorf("%q: a tcp upstream needs a port", raw)
		}
		up.host = ""
	default:
		return upstream{}, fmt.Errorf("%q: want http://, https:// or tcp://", raw)
	}
	return up, nil
}

// Run connects and keeps the tunnel up, reconnecting with exponential backoff and jitter (the
// first connection retries too), until ctx ends; then it lets the calls in flight finish (up to
// ShutdownTimeout; the node sends it no new ones), closes cleanly and returns nil. It
// retries what a retry can mend (network errors, a node starting or draining, 5xx answers) and
// returns an error wrapping ErrPermanent for what it cannot (a revoked or expired token, a
// deleted tunnel, a host key that is not the pinned one, a 4xx answer), and ErrInvalidConfig
// for an invalid config.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.applyDefaults()
	nodes, _ := cfg.nodeURLs()
	a := &agent{cfg: cfg, nodes: nodes, log: cfg.Logger}
	if tp := cfg.TracerProvider; tp != nil {
		a.tracer = tp.Tracer("github.com/tunnelplane/tunnelplane/dataplane/agent")
	}
	if cfg.Discover != "" {
		a.discoverURL, _ = discoveryURL(cfg.Discover, cfg.Token)
	}
	if cfg.Upstream != "" {
		a.up, _ = parseUpstream(cfg.Upstream)
	}
	return a.run(ctx)
}

type agent struct {
	cfg   Config
	nodes []*url.URL // in order of preference
	up    upstream   // Config.Upstream; zero: the tunnel's, per connection
	log   *slog.Logger
	// tracer traces the calls the node sends on a ChannelTraced (nil: the agent does not trace).
	tracer trace.Tracer

	discoverURL *url.URL // nil: no discovery

	stateMu sync.Mutex     // OnState calls never overlap
	behind  sync.WaitGroup // connections left to finish their calls (a draining node, a failback)
}

func (a *agent) state(s State, detail string) {
	if a.cfg.OnState != nil {
		a.stateMu.Lock()
		defer a.stateMu.Unlock()
		a.cfg.OnState(s, detail)
	}
}

// report tells a state change to OnState, or, without one, to the log: not to both, so that a
// command line printing the states prints each event once.
func (a *agent) report(s State, detail string, level slog.Level, msg string, attrs ...any) {
	if a.cfg.OnState != nil {
		a.state(s, detail)
		return
	}
	a.log.Log(context.Background(), level, msg, attrs...)
}

// backoff is MinBackoff·2^n capped at MaxBackoff, with equal jitter (between half and all of it)
// so that agents cut off together do not come back together.
func (a *agent) backoff(n int) time.Duration {
	d := a.cfg.MinBackoff
	for i := 0; i < n && d < a.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, a.cfg.MaxBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// conn is one established connection to a node.
type conn struct {
	a        *agent
	url      *url.URL
	nodeID   string // as the node named itself ("" for older nodes)
	ws       *wsconn.Conn
	sc       ssh.Conn
	chans    <-chan ssh.NewChannel
	reqs     <-chan *ssh.Request
	protocol string
	algs     ssh.NegotiatedAlgorithms
	up       upstream // where this connection's forwards go
	upURL    string   // the same, for people: without a password

	mu         sync.Mutex
	nodeReason string // from the node's disconnect notice
	ownReason  string // why this side gave up (keepalive)
	kaTimer    *time.Timer
	closed     bool
	wg         sync.WaitGroup // forwarded connections
	active     int            // forwarded connections not finished yet
	idle       chan struct{}  // closed when active drops to zero, while someone waits
	refusing   bool           // stopping and the node does not drain: refuse new channels
	reqsDone   chan struct{}
	// draining is closed when the node says it drains (node.DrainReason): it routes no new call
	// here and ends the session once its calls are done.
	draining  chan struct{}
	drainOnce sync.Once
}

func (a *agent) connect(ctx context.Context, u *url.URL, pins []string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	// gorilla bounds the upgrade with a deadline but does not watch ctx: close the socket when
	// ctx ends so that Run returns at once even mid-handshake.
	var (
		rawMu sync.Mutex
		raw   []net.Conn
	)
	stopRaw := context.AfterFunc(ctx, func() {
		rawMu.Lock()
		defer rawMu.Unlock()
		for _, c := range raw {
			c.Close()
		}
	})
	defer stopRaw()
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c = rawconn.Wrap(c)
				rawMu.Lock()
				raw = append(raw, c)
				rawMu.Unlock()
			}
			return c, err
		},
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: a.cfg.DialTimeout,
		ReadBufferSize:   wsconn.ReadBufferSize,
		WriteBufferPool:  wsconn.WriteBufferPool,
		Subprotocols:     a.cfg.Protocols,
		TLSClientConfig:  a.cfg.TLSConfig,
	}
	ws, resp, err := d.DialContext(ctx, u.String(), http.Header{"User-Agent": {"tunnelplane-agent/" + a.cfg.Version}})
	// From here on the WebSocket's own stop (below) closes the socket, after saying goodbye.
	if !stopRaw() && err == nil {
		ws.Close()
		return nil, fmt.Errorf("dial %s: %w", u.Redacted(), ctx.Err())
	}
	if err != nil {
		if resp != nil {
			return nil, refusal(resp)
		}
		return nil, fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	if !slices.Contains(a.cfg.Protocols, ws.Subprotocol()) {
		ws.Close()
		return nil, fmt.Errorf("%w: it selected protocol %q, offered %v", ErrRefused, ws.Subprotocol(), a.cfg.Protocols)
	}
	wc := wsconn.New(ws, wsconn.Options{Client: true})
	// Once SSH is up, a stop mid-setup still says goodbye, so the node records why (it may have
	// granted the tunnel already).
	var scMu sync.Mutex
	var established ssh.Conn
	stop := context.AfterFunc(ctx, func() {
		scMu.Lock()
		sc := established
		scMu.Unlock()
		if sc != nil {
			_ = wc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _, _ = sc.SendRequest(node.RequestDisconnect, false, ssh.Marshal(node.DisconnectNotice{Reason: stopReason}))
		}
		wc.Close()
	})
	defer stop()
	_ = wc.SetDeadline(time.Now().Add(a.cfg.DialTimeout))

	var banner string
	sshCfg := &ssh.ClientConfig{
		User: node.AgentUser,
		// The token is offered only after HostKeyCallback accepted the node's key.
		Auth: []ssh.AuthMethod{ssh.Password(a.cfg.Token)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			got := ssh.FingerprintSHA256(key)
			if a.cfg.InsecureSkipPin || slices.Contains(pins, got) {
				return nil
			}
			return permanent(fmt.Sprintf("node host key %s does not match the pinned %s (the node's key changed, or this is not your node)",
				got, strings.Join(pins, ", ")), ErrHostKeyMismatch)
		},
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		BannerCallback: func(msg string) error {
			banner = msg
			return nil
		},
		ClientVersion: "SSH-2.0-tunnelplane_agent_" + sanitizeVersion(a.cfg.Version),
		Config:        ssh.Config{KeyExchanges: node.KeyExchanges, Ciphers: node.Ciphers, MACs: node.MACs},
	}
	sc, chans, reqs, err := ssh.NewClientConn(wc, u.Host, sshCfg)
	if err != nil {
		wc.Close()
		var pe *permanentError
		switch {
		case errors.As(err, &pe):
			return nil, pe // without x/crypto's "ssh: handshake failed" prefix
		case banner != "":
			code, msg := node.ParseRefusalBanner(banner)
			if node.PermanentReason(code) {
				return nil, permanent(msg, ErrAuthFailed, reasonErrs[code])
			}
			return nil, fmt.Errorf("%w: %s", ErrAuthFailed, msg)
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, fmt.Errorf("%w: the node refused the agent token", ErrAuthFailed)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("connect to %s: timed out after %v", u.Redacted(), a.cfg.DialTimeout)
		}
		return nil, fmt.Errorf("ssh handshake with %s: %w", u.Redacted(), err)
	}
	scMu.Lock()
	established = sc
	scMu.Unlock()
	c := &conn{a: a, url: u, ws: wc, sc: sc, chans: chans, reqs: reqs, protocol: ws.Subprotocol(),
		algs: sc.(ssh.AlgorithmsConnMetadata).Algorithms(), reqsDone: make(chan struct{}), draining: make(chan struct{})}
	// Global requests must be answered while we wait for the forward reply.
	go c.handleRequests()
	if err := c.requestTunnel(); err != nil {
		sc.Close()
		c.drain()
		// A node that stops while the tunnel is being set up says why before it closes; its
		// notice is handled once drain returns.
		c.mu.Lock()
		why := c.nodeReason
		c.mu.Unlock()
		if _, text, ok := wc.PeerCloseReason(); why == "" && ok {
			why = text
		}
		if why != "" && !errors.Is(err, ErrTunnelRefused) {
			err = fmt.Errorf("%s (%w)", why, err) // the node's reason first, as for an established session
		}
		return nil, err
	}
	_ = wc.SetDeadline(time.Time{})
	return c, nil
}

func (c *conn) requestTunnel() error {
	a := c.a
	c.up, c.upURL = a.up, redacted(a.cfg.Upstream)
	if c.protocol == node.ProtocolV2 {
		info := node.AgentInfo{Version: a.cfg.Version, Replace: a.cfg.Replace, UpstreamOverride: a.cfg.Upstream, Tracing: a.tracer != nil}
		withUpstream := func(up upstream) {
			info.UpstreamScheme = up.scheme // and the Host header it expects
			if !a.cfg.PreserveHost {
				info.HostHeader = up.host
			}
		}
		if a.cfg.Upstream != "" {
			withUpstream(c.up)
		}
		reply, err := c.sendInfo(info)
		if err != nil {
			return err
		}
		tunnelUp := reply.Upstream
		c.nodeID = reply.NodeID
		if a.cfg.Upstream == "" {
			if tunnelUp == "" {
				return ErrNoUpstream
			}
			up, err := parseUpstream(tunnelUp)
			if err != nil {
				return fmt.Errorf("%w: the tunnel's upstream: %w", ErrNoUpstream, err)
			}
			c.up, c.upURL = up, redacted(tunnelUp)
			// Now that the upstream is known, tell the node what it needs of it.
			withUpstream(up)
			if _, err := c.sendInfo(info); err != nil {
				return err
			}
		}
	} else if a.cfg.Upstream == "" {
		return fmt.Errorf("%w (it speaks %s)", ErrNoUpstream, c.protocol)
	}
	ok, _, err := c.sc.SendRequest(node.RequestForward, true, ssh.Marshal(node.ForwardRequest{}))
	if err != nil {
		return fmt.Errorf("request tunnel: %w", err)
	}
	if !ok {
		c.mu.Lock()
		why := c.nodeReason
		c.mu.Unlock()
		if why == "" {
			why = "no reason given"
		}
		return fmt.Errorf("%w: %s", ErrTunnelRefused, why)
	}
	return nil
}

// redacted is an upstream URL fit for logs and the terminal.
func redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// sendInfo sends an agent-info request and returns the node's answer (empty from older nodes:
// no tunnel upstream, no node id).
func (c *conn) sendInfo(info node.AgentInfo) (node.AgentInfoReply, error) {
	js, _ := json.Marshal(info)
	_, payload, err := c.sc.SendRequest(node.RequestAgentInfo, true, ssh.Marshal(node.JSONPayload{JSON: string(js)}))
	if err != nil {
		return node.AgentInfoReply{}, fmt.Errorf("send agent info: %w", err)
	}
	return infoReply(payload), nil
}

// infoReply reads the node's answer to agent-info (zero for an empty or unreadable one).
func infoReply(payload []byte) node.AgentInfoReply {
	var p node.JSONPayload
	var r node.AgentInfoReply
	if len(payload) == 0 || ssh.Unmarshal(payload, &p) != nil || json.Unmarshal([]byte(p.JSON), &r) != nil {
		return node.AgentInfoReply{}
	}
	if len(r.NodeID) > 64 || strings.ContainsFunc(r.NodeID, func(r rune) bool { return r <= ' ' || r > '~' }) {
		r.NodeID = "" // shown and reported: printable and short, or nothing
	}
	return r
}

// drain waits for the request handler after a failed setup, and refuses channels.
func (c *conn) drain() {
	for nc := range c.chans {
		_ = nc.Reject(ssh.Prohibited, "agent is not ready")
	}
	<-c.reqsDone
}

func (c *conn) handleRequests() {
	defer close(c.reqsDone)
	for r := range c.reqs {
		switch r.Type {
		case node.RequestKeepalive, "keepalive@openssh.com":
			_ = r.Reply(true, nil)
		case node.RequestDisconnect:
			var d node.DisconnectNotice
			if ssh.Unmarshal(r.Payload, &d) == nil {
				c.mu.Lock()
				c.nodeReason = d.Reason
				c.mu.Unlock()
				if d.Reason == node.DrainReason {
					c.drainOnce.Do(func() { close(c.draining) })
				}
			}
			if r.WantReply {
				_ = r.Reply(true, nil)
			}
		default:
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}
}

// start carries forwarded connections and keeps the connection alive; ended closes when the
// connection is gone (the node's channel opens have ended). finish then says why.
func (c *conn) start() (ended <-chan struct{}) {
	c.mu.Lock()
	c.kaTimer = time.AfterFunc(c.a.cfg.KeepaliveInterval, c.keepalive)
	c.mu.Unlock()
	e := make(chan struct{})
	go func() {
		defer close(e)
		c.accept()
	}()
	return e
}

// finish waits for the connection's end and its forwards, and says why it ended.
func (c *conn) finish() string {
	err := c.sc.Wait()
	c.mu.Lock()
	c.closed = true
	c.kaTimer.Stop()
	c.mu.Unlock()
	_ = c.ws.Close()
	c.wg.Wait()
	// The reason is read once the node's requests are all handled: its disconnect notice may
	// still be in the request queue when the connection's end is seen.
	<-c.reqsDone
	c.mu.Lock()
	reason := c.nodeReason
	if reason == "" {
		reason = c.ownReason
	}
	c.mu.Unlock()
	if reason == "" {
		if code, text, ok := c.ws.PeerCloseReason(); ok && text != "" {
			reason = fmt.Sprintf("%s (close code %d)", text, code)
		} else if err == nil || errors.Is(err, io.EOF) {
			reason = "the node closed the connection"
		} else {
			reason = "connection lost: " + err.Error()
		}
	}
	return reason
}

// accept starts a forward for each channel the node opens, until the connection ends.
func (c *conn) accept() {
	for nc := range c.chans {
		if nc.ChannelType() != node.ChannelForwarded && (nc.ChannelType() != node.ChannelTraced || c.a.tracer == nil) {
			_ = nc.Reject(ssh.UnknownChannelType, "agents accept only "+node.ChannelForwarded)
			continue
		}
		c.mu.Lock()
		if c.refusing {
			c.mu.Unlock()
			_ = nc.Reject(ssh.ResourceShortage, "the agent is stopping")
			continue
		}
		c.active++
		c.wg.Add(1)
		c.mu.Unlock()
		go c.forward(nc)
	}
}

// shutdown lets the calls in flight finish, at most ShutdownTimeout, then says goodbye and
// closes; it returns when the connection has ended. A v2 node asked to drain routes no new call
// here and ends the session itself once its calls are done; with any other node the agent
// refuses new channels and waits until its forwards are done.
func (c *conn) shutdown(ended <-chan struct{}) {
	a := c.a
	// Done stays closed once the time is up, for every select below.
	deadline, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	nodeDrains := false
	if c.protocol == node.ProtocolV2 {
		replied := make(chan bool, 1)
		go func() {
			ok, _, err := c.sc.SendRequest(node.RequestDrain, true, ssh.Marshal(node.DisconnectNotice{Reason: stopReason}))
			replied <- ok && err == nil
		}()
		// A node that does not answer within KeepaliveTimeout is taken as one that does not drain.
		wait := time.NewTimer(a.cfg.KeepaliveTimeout)
		answered := false
		select {
		case nodeDrains = <-replied:
			answered = true
		case <-wait.C:
		case <-deadline.Done():
		}
		wait.Stop()
		if !answered {
			// The request's goroutine ends once the node answers or the connection closes (below).
			defer func() { <-replied }()
		}
	}
	var idle chan struct{}
	c.mu.Lock()
	c.refusing = !nodeDrains
	if !nodeDrains && c.active > 0 {
		c.idle = make(chan struct{})
		idle = c.idle
	}
	active := c.active
	c.mu.Unlock()
	if nodeDrains || idle != nil {
		a.log.Info("stopping: letting calls in flight finish", "calls", active, "node_drains", nodeDrains, "timeout", a.cfg.ShutdownTimeout)
		select {
		case <-ended: // the node ended the session: its calls are done
		case <-idle:
		case <-deadline.Done():
			c.mu.Lock()
			left := c.active
			c.mu.Unlock()
			a.log.Warn("stopping: shutdown timeout, cutting the calls still in flight", "calls", left, "timeout", a.cfg.ShutdownTimeout)
		}
	}
	// Say goodbye so the node records why, then close.
	_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_, _, _ = c.sc.SendRequest(node.RequestDisconnect, false, ssh.Marshal(node.DisconnectNotice{Reason: stopReason}))
	_ = c.ws.Close()
	<-ended
}

// stopReason is what the agent tells the node when its context ends.
const stopReason = "agent stopping"

func (c *conn) keepalive() {
	timeout := c.a.cfg.KeepaliveTimeout
	t := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.ownReason = fmt.Sprintf("keepalive timeout: the node did not answer within %v", timeout)
		c.mu.Unlock()
		_ = c.ws.Close()
	})
	_, _, err := c.sc.SendRequest(node.RequestKeepalive, true, nil)
	t.Stop()
	if err != nil {
		return
	}
	c.mu.Lock()
	if !c.closed {
		c.kaTimer.Reset(c.a.cfg.KeepaliveInterval)
	}
	c.mu.Unlock()
}

// forward carries one ingress connection to the upstream.
func (c *conn) forward(nc ssh.NewChannel) {
	defer c.forwardDone()
	if nc.ChannelType() == node.ChannelTraced {
		c.forwardTraced(nc)
		return
	}
	up, ch := c.dialAccept(nc)
	if ch == nil {
		return
	}
	// The node sends no channel requests; x/crypto drops them when the channel closes.
	pipe(ch, ch, up, up, c.up.scheme != "tcp")
}

// forwardDone counts a forward's end.
func (c *conn) forwardDone() {
	c.mu.Lock()
	c.active--
	if c.active == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
	c.mu.Unlock()
	c.wg.Done()
}

// dialAccept dials the upstream and then accepts the channel (a nil channel: it was refused, or
// went away).
func (c *conn) dialAccept(nc ssh.NewChannel) (net.Conn, ssh.Channel) {
	a := c.a
	d := net.Dialer{Timeout: a.cfg.UpstreamDialTimeout}
	up, err := d.Dial("tcp", c.up.addr)
	if err != nil {
		a.log.Warn("upstream unreachable", "upstream", c.up.addr, "error", err)
		_ = nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("dial upstream %s: %v", c.up.addr, errors.Unwrap(err)))
		return nil, nil
	}
	up = rawconn.Wrap(up)
	if c.up.scheme == "https" {
		host, _, _ := net.SplitHostPort(c.up.addr)
		up = tls.Client(up, &tls.Config{ServerName: host})
	}
	ch, _, err := nc.Accept()
	if err != nil {
		up.Close()
		return nil, nil
	}
	return up, ch
}

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
)

// copyBuf copies with pooled buffers: 32 KiB while reads come back small (requests, token
// streams), 256 KiB once a read fills the buffer (a bulk transfer), which cuts the syscalls per
// byte on both sockets. The wrappers hide ReadFrom and WriteTo: TCPConn.ReadFrom from a
// non-socket source would copy through a fresh 32 KiB buffer of its own every time.
func copyBuf(dst io.Writer, src io.Reader) error {
	pool := &smallBufs
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	for {
		buf := *bp
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			if n == len(buf) && pool == &smallBufs {
				pool.Put(bp)
				pool = &largeBufs
				bp = pool.Get().(*[]byte)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// pipe copies both ways. For HTTP upstreams (closeOnEOF) either side ending ends both: a closed
// keep-alive connection must close its channel so the node stops pooling it. Raw TCP keeps
// half-closes.
// fromCh and fromUp are what is read of each (ch and up themselves, or readers in front of them).
func pipe(ch ssh.Channel, fromCh io.Reader, up net.Conn, fromUp io.Reader, closeOnEOF bool) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = copyBuf(up, fromCh)
		if tc, ok := up.(interface{ CloseWrite() error }); ok && !closeOnEOF {
			_ = tc.CloseWrite()
		} else {
			_ = up.Close()
		}
	}()
	_ = copyBuf(ch, fromUp)
	_ = ch.CloseWrite()
	if closeOnEOF {
		_ = ch.Close()
		_ = up.Close()
	}
	<-done
	_ = ch.Close()
	_ = up.Close()
}

func sanitizeVersion(v string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' || r == '-' {
			return '_'
		}
		return r
	}, v)
}

// refusal explains an HTTP answer to the WebSocket upgrade (a problem document if there is one).
func refusal(resp *http.Response) error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	var p struct {
		Title     string   `json:"title"`
		Detail    string   `json:"detail"`
		Supported []string `json:"supported_protocols"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &p) == nil && p.Title != "" {
		msg = p.Title
		if p.Detail != "" {
			msg += ": " + p.Detail
		}
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	switch code := resp.StatusCode; {
	case code == http.StatusServiceUnavailable:
		return fmt.Errorf("%w (%w): HTTP %d: %s", ErrRefused, ErrUnavailable, code, msg)
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return permanent(fmt.Sprintf("node refused the connection: HTTP %d: %s", code, msg), ErrRefused)
	}
	return fmt.Errorf("%w: HTTP %d: %s", ErrRefused, resp.StatusCode, msg)
}
