package nodeapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// DefaultFailoverWait is how long a call waits for an agent of its tunnel by default.
const DefaultFailoverWait = node.DefaultFailoverWait

// ErrInvalidConfig is returned by Config.Validate (joined, one per problem).
var ErrInvalidConfig = errors.New("node: invalid config")

// Config configures a node process.
type Config struct {
	// DataDir holds <DataDir>/node: the node's id, host and event keys, spool and view snapshot.
	DataDir string
	// NodeID, if set, is the id the node must have (see LoadIdentity); empty: the data dir's, or a
	// new one on the first start.
	NodeID string
	// Name is the node's name in the registry (default node-1).
	Name string
	// ListenAddr is where agents and callers connect (one listener); Listener, if set, is used
	// instead.
	ListenAddr string
	Listener   net.Listener
	// HealthAddr is where /healthz, /readyz and /drain are served, apart from ListenAddr (whose
	// paths and hosts belong to tunnels); HealthListener, if set, is used instead. Neither: no
	// health listener.
	HealthAddr     string
	HealthListener net.Listener
	// DrainTimeout bounds Drain: how long calls in flight may finish (default 30s).
	DrainTimeout time.Duration
	// PublicURL is how agents and callers reach the node (default http://<listen address>).
	PublicURL string
	// PeerURL is how other nodes reach this one's /v1/peer (ws:// or wss://; default PublicURL's
	// with ws for http). Behind one load balancer every node has the public URL, so each needs a
	// peer URL of its own (its pod's address).
	PeerURL string
	// BaseDomain enables host routing: <tunnel>.<org>.<BaseDomain>.
	BaseDomain string
	// LoginURL is the control plane's origin as browsers reach it (its --public-url): a browser
	// without a credential on a tunnel host is sent there to log in (node.Config.LoginURL).
	LoginURL string
	// NATSURL is the cluster's NATS.
	NATSURL string
	// Cluster names the installation on NATS: it prefixes every stream, bucket and subject
	// (wire.Names); the control plane's must be the same. Default "".
	Cluster string
	// Issuer is the iss of control-plane tokens (default token.DefaultIssuer).
	Issuer string
	// TokenLeeway is how far past expiry tokens are still accepted (default token.DefaultLeeway).
	TokenLeeway time.Duration
	Version     string
	Limits      Limits
	// MaxViewLag is how far behind the control plane's log the view may fall before the node
	// refuses agents and callers (default 30s); LagSample how often it asks the log's size
	// (default 5s).
	MaxViewLag, LagSample time.Duration
	// UsageWindow is how long each usage.recorded window of a tunnel and caller lasts (default
	// node.Config's, 10s).
	UsageWindow time.Duration
	// ControlPlane is how the node learns the log and enrolls.
	ControlPlane ControlPlane
	// Registerer and Gatherer serve /metrics on the node's listener (nil: no metrics endpoint).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
}

// Limits bound what one tunnel, agent or client address may hold of the node (zero: the node's
// defaults; see node.Config).
type Limits struct {
	MaxCallsPerTunnel  int
	ChannelOpenTimeout time.Duration
	MaxConnsPerSource  int
	// AgentKeepaliveTimeout is node.Config.KeepaliveTimeout: an agent that leaves a keepalive
	// unanswered this long is disconnected and its waiting callers get 503 (default 5s).
	AgentKeepaliveTimeout time.Duration
	// FailoverWait is node.Config.FailoverWait: how long a call for a tunnel without an agent on
	// the node waits for one (zero: the default, 5s; negative: not at all, --failover-wait 0).
	// MaxQueuedPerTunnel bounds the calls waiting per tunnel (default 256).
	FailoverWait       time.Duration
	MaxQueuedPerTunnel int
}

// apply sets the limits on a node's configuration.
func (l Limits) apply(c *node.Config) {
	c.MaxCallsPerTunnel, c.ChannelOpenTimeout, c.MaxConnsPerSource = l.MaxCallsPerTunnel, l.ChannelOpenTimeout, l.MaxConnsPerSource
	c.KeepaliveTimeout = l.AgentKeepaliveTimeout
	c.FailoverWait, c.MaxQueuedPerTunnel = l.FailoverWait, l.MaxQueuedPerTunnel
}

// ControlPlane is what a node asks the control plane, never NATS: whoever may publish on NATS
// could otherwise choose what the node trusts.
type ControlPlane interface {
	// Log returns the log's origin (for the enrollment proof and the view), its genesis hash
	// (the view's trust anchor) and its size now (the view must hold that much before the node
	// serves).
	Log(ctx context.Context) (LogInfo, error)
	// Enroll registers the node if it is not yet; an error wrapping domain.ErrConflict means it
	// was enrolled before.
	Enroll(ctx context.Context, e Enrollment) error
}

// LogInfo is what a node learns of the log from the control plane (GET /api/v1/log).
type LogInfo struct {
	Origin      string `json:"origin"`
	Size        uint64 `json:"size"`
	GenesisHash []byte `json:"genesis_hash"`
}

// Enrollment is the node's registration: its id and keys, each with one purpose (the SSH host key
// agents pin, the event key that signs its facts, with a proof of possession naming the log), and
// where agents and callers reach it. Its JSON is the body of POST /api/v1/nodes.
type Enrollment struct {
	NodeID             string                 `json:"node_id"`
	Name               string                 `json:"name"`
	HostKey            string                 `json:"host_key"`
	HostKeyFingerprint string                 `json:"host_key_fingerprint"`
	EventKey           ledger.KeyAddedPayload `json:"event_key"`
	AgentURL           string                 `json:"agent_url,omitempty"`
	IngressURL         string                 `json:"ingress_url,omitempty"`
}

func (c *Config) applyDefaults() {
	if c.Name == "" {
		c.Name = "node-1"
	}
	if c.Issuer == "" {
		c.Issuer = token.DefaultIssuer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxViewLag == 0 {
		c.MaxViewLag = staleAfter
	}
	if c.LagSample == 0 {
		c.LagSample = lagSample
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
}

// Validate reports every problem at once; zero values count as their defaults.
func (c Config) Validate() error {
	c.applyDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.DataDir == "" {
		bad("DataDir is required")
	}
	if !domain.ValidName(c.Name) {
		bad("node name %q: use lower-case letters, digits and inner hyphens", c.Name)
	}
	if c.Listener == nil && c.ListenAddr == "" {
		bad("ListenAddr (or a Listener) is required")
	}
	if c.NATSURL == "" {
		bad("NATSURL is required")
	} else if err := wire.CheckNATSURLs(c.NATSURL); err != nil {
		bad("--nats-url: %v", err)
	}
	if _, err := wire.NewNames(c.Cluster); err != nil {
		bad("--cluster: %v", err)
	}
	if c.TokenLeeway < 0 || c.TokenLeeway > token.MaxLeeway {
		bad("--token-leeway %s: want 0s to %s", c.TokenLeeway, token.MaxLeeway)
	}
	if c.ControlPlane == nil {
		bad("ControlPlane is required")
	}
	if c.LoginURL != "" {
		if o, err := domain.CanonicalOrigin(c.LoginURL); err != nil || o != c.LoginURL {
			bad("--login-url %q: want the control plane's origin as browsers reach it, such as https://tunnelplane.example", c.LoginURL)
		} else if c.BaseDomain == "" {
			bad("--login-url needs --base-domain: a browser session is bound to a tunnel's host")
		}
	}
	if c.PeerURL == "" && c.PublicURL != "" {
		// Other nodes reach /v1/peer under the public URL: that must make a URL they accept.
		if err := wire.CheckPeerURL(wsURL(c.PublicURL, "/v1/peer")); err != nil {
			bad("--public-url %s: other nodes could not reach this node's /v1/peer under it (want http:// or https:// and a host, with no user, query or fragment); give --peer-url", shownPeerURL(c.PublicURL))
		}
	}
	if c.PeerURL != "" {
		if err := wire.CheckPeerURL(c.PeerURL); err != nil || !strings.HasSuffix(c.PeerURL, "/v1/peer") {
			bad("--peer-url %s: want the ws:// or wss:// URL of this node's /v1/peer as other nodes reach it, with no user, query or fragment, such as ws://10.0.0.7:8081/v1/peer", shownPeerURL(c.PeerURL))
		}
	}
	if c.DrainTimeout < 0 {
		bad("--drain-timeout %s must not be negative", c.DrainTimeout)
	}
	if c.MaxViewLag < 0 || c.LagSample < 0 {
		bad("MaxViewLag and LagSample must be positive")
	}
	if c.Limits.MaxCallsPerTunnel < 0 || c.Limits.MaxConnsPerSource < 0 || c.Limits.ChannelOpenTimeout < 0 || c.Limits.AgentKeepaliveTimeout < 0 ||
		c.Limits.MaxQueuedPerTunnel < 0 {
		bad("limits must not be negative: %+v", c.Limits)
	}
	return errors.Join(errs...)
}

// wsURL is the WebSocket URL of path under the node's public URL, as the node announces it
// (agents' /v1/agent; without --peer-url, the peers' /v1/peer): ws:// for http:// and wss://
// for https://, a trailing slash of the public URL not doubled.
func wsURL(public, path string) string {
	public = strings.TrimSuffix(public, "/")
	switch {
	case strings.HasPrefix(public, "http://"):
		return "ws://" + strings.TrimPrefix(public, "http://") + path
	case strings.HasPrefix(public, "https://"):
		return "wss://" + strings.TrimPrefix(public, "https://") + path
	}
	return public + path
}

// shownPeerURL is a refused --peer-url as an error shows it: its scheme, host and path only. A
// peer URL has no user, password, query or fragment, so any there may be a credential given to
// the wrong flag (such as the NATS URL), and errors reach logs.
func shownPeerURL(raw string) string {
	if len(raw) > wire.MaxPeerURL {
		return fmt.Sprintf("(%d bytes, more than %d)", len(raw), wire.MaxPeerURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(not a URL)"
	}
	hidden := u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != ""
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
	if hidden {
		return fmt.Sprintf("%q (its user, query or fragment not shown)", shown)
	}
	return fmt.Sprintf("%q", shown)
}
