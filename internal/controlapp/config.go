package controlapp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// ErrInvalidConfig is returned by Config.Validate (joined, one per problem).
var ErrInvalidConfig = errors.New("control plane: invalid config")

// Defaults of Config.
const (
	DefaultAPIAddr    = "127.0.0.1:8080"
	DefaultDBMaxConns = 20
)

// Keys is where the control plane's private keys live.
func (c Config) Keys() Keys { return Keys{DataDir: c.DataDir, KEKFile: c.KEKFile} }

// Config configures a control plane. Zero values take the defaults.
type Config struct {
	// DatabaseURL is the PostgreSQL server holding the log (required; the caller resolves it).
	DatabaseURL string
	// DataDir holds the log and token signing keys (<DataDir>/keys/log, keys/token), unless
	// KEKFile is set: the keys are then in the database, sealed by the key-encryption key in
	// that file, shared by every replica given the same (see Keys).
	DataDir string
	KEKFile string
	// APIAddr is where the admin API listens (host:port; port 0 picks one). Ignored when
	// Listener is set.
	APIAddr string
	// Listener serves the API instead of listening on APIAddr (tests, benchmarks).
	Listener net.Listener
	// JWKSURL / JWKSFile add an external identity provider; JWTIssuer is its iss.
	JWKSURL, JWKSFile, JWTIssuer string
	// OIDCIssuer and OIDCClientID turn on interactive login (`tunnelplane login`): ID tokens
	// the provider issued to the client are exchanged for user tokens of LoginTTL (default
	// api.DefaultLoginTTL). Both or neither.
	OIDCIssuer, OIDCClientID string
	LoginTTL                 time.Duration
	// PublicURL is the API's origin as browsers reach it (--public-url): with the OIDC
	// provider it turns on browser login. BrowserLoginOrigins are the origins (patterns, "*."
	// for any labels) of the tunnel hosts a browser login may return to
	// (--browser-login-origin).
	PublicURL           string
	BrowserLoginOrigins []string
	// DBMaxConns caps the database pool (4 to 10,000). Default 20.
	DBMaxConns int
	// ShutdownTimeout bounds the graceful end of in-flight requests. Default 10s.
	ShutdownTimeout time.Duration
	// AuditFlushInterval is how often aggregated audit events are written. Default 10s.
	AuditFlushInterval time.Duration
	// NATSURL, when set, runs the control side of the bus there; OwnsNATS says the server is
	// this installation's own (see BusConfig).
	NATSURL  string
	OwnsNATS bool
	// NATSReplicas is how many servers of a clustered JetStream hold each stream and the node
	// registry (1..5; default 1). A cluster of 3 servers wants 3: with 1, losing the server that
	// holds a stream loses it.
	NATSReplicas int
	// TokenLeeway is how far past expiry tokens are still accepted (default token.DefaultLeeway).
	TokenLeeway time.Duration
	// NodeStreamCapacity is the calls one node is sized to hold open at once, for the capacity
	// analytics' headroom (default api.DefaultNodeStreamCapacity).
	NodeStreamCapacity int64
	// Cluster names the installation on NATS: it prefixes every stream, bucket and subject
	// (wire.Names). Default "": the names of the default installation.
	Cluster string
	// SIEMKeyFile holds the key SIEM sinks' secrets are sealed with (64 hex digits; made when
	// missing). Default <DataDir>/siem.key, or with KEKFile the replicas' shared key in the
	// database. Every instance of a cluster needs the same key.
	SIEMKeyFile string
	// Version is the build's, named in what the control plane sends SIEMs. Default "dev".
	Version string
	// SIEMPoll is how often the SIEM sinks are read again (default 1s).
	SIEMPoll time.Duration
	// WebhookAllowPrivate lets webhook endpoints name, and deliveries reach, loopback, private
	// and link-local addresses (refused by default: SSRF). For tests and closed networks.
	WebhookAllowPrivate bool
	// WebhookPoll is how often the webhook endpoints are read again (default 1s).
	WebhookPoll time.Duration
	// WebhookMinBackoff and WebhookMaxBackoff bound the wait between failed deliveries
	// (defaults 500ms and 5m).
	WebhookMinBackoff, WebhookMaxBackoff time.Duration
	// GrantNoticeLead is how long before a grant's expiry grant.expiring is recorded (webhooks
	// and the notifications feed). Default 1h.
	GrantNoticeLead time.Duration
	// Registry collects the metrics served at /metrics. Default: a fresh one with Go and process
	// collectors.
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.DatabaseURL == "" {
		bad("a database URL is required")
	}
	if c.DataDir == "" {
		bad("a data dir is required")
	}
	if c.Listener == nil {
		addr := c.APIAddr
		if addr == "" {
			addr = DefaultAPIAddr
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad("--api-addr %q: want host:port: %v", addr, err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			bad("--api-addr %q: bad port", addr)
		}
	}
	if _, err := wire.NewNames(c.Cluster); err != nil {
		bad("--cluster: %v", err)
	}
	if c.NATSURL != "" {
		if err := wire.CheckNATSURLs(c.NATSURL); err != nil {
			bad("--nats-url: %v", err)
		}
	}
	if c.NodeStreamCapacity < 0 {
		bad("--node-stream-capacity %d: want a positive number", c.NodeStreamCapacity)
	}
	if c.TokenLeeway < 0 || c.TokenLeeway > token.MaxLeeway {
		bad("--token-leeway %s: want 0s to %s", c.TokenLeeway, token.MaxLeeway)
	}
	if c.NATSReplicas < 0 || c.NATSReplicas > 5 {
		bad("--nats-replicas %d: want 1 to 5", c.NATSReplicas)
	}
	if c.DBMaxConns < 0 || (c.DBMaxConns > 0 && c.DBMaxConns < 4) || c.DBMaxConns > 10000 {
		// The control plane holds connections of its own: the log setup's and each delivery's
		// advisory lock (SIEM, webhooks, report schedules).
		bad("--db-max-conns %d: want 4 to 10000", c.DBMaxConns)
	}
	if c.ShutdownTimeout < 0 || c.AuditFlushInterval < 0 || c.SIEMPoll < 0 || c.WebhookPoll < 0 || c.GrantNoticeLead < 0 ||
		c.WebhookMinBackoff < 0 || c.WebhookMaxBackoff < 0 {
		bad("negative duration")
	}
	if c.JWKSURL != "" && c.JWKSFile != "" {
		bad("--jwks-url and --jwks-file: give one")
	}
	if (c.OIDCIssuer == "") != (c.OIDCClientID == "") {
		bad("--oidc-issuer and --oidc-client-id: give both or neither")
	} else if c.OIDCIssuer != "" {
		if err := (oidcauth.Config{Issuer: c.OIDCIssuer, ClientID: c.OIDCClientID}).Validate(); err != nil {
			bad("%s", err.Error())
		}
	}
	if c.PublicURL != "" {
		if o, err := domain.CanonicalOrigin(c.PublicURL); err != nil || o != c.PublicURL {
			bad("--public-url %q: want the API's origin as browsers reach it, such as https://tunnelplane.example (no path, no default port)", c.PublicURL)
		}
	}
	for _, o := range c.BrowserLoginOrigins {
		if _, err := browserlogin.ParsePattern(o); err != nil {
			bad("--browser-login-origin: %s", err.Error())
		}
	}
	if len(c.BrowserLoginOrigins) > 0 && (c.PublicURL == "" || c.OIDCIssuer == "") {
		bad("--browser-login-origin needs --public-url and --oidc-issuer")
	}
	if c.LoginTTL < 0 || c.LoginTTL > commands.MaxLoginTTL {
		bad("--login-ttl %s: want more than 0 and at most %s", c.LoginTTL, commands.MaxLoginTTL)
	}
	if (c.JWKSURL != "" || c.JWKSFile != "") && c.JWTIssuer == "" {
		bad("--jwt-issuer is required with --jwks-url or --jwks-file")
	}
	return errors.Join(errs...)
}

func (c *Config) applyDefaults() {
	if c.APIAddr == "" {
		c.APIAddr = DefaultAPIAddr
	}
	if c.DBMaxConns == 0 {
		c.DBMaxConns = DefaultDBMaxConns
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.GrantNoticeLead == 0 {
		c.GrantNoticeLead = time.Hour
	}
	if c.SIEMKeyFile == "" && c.KEKFile == "" {
		// With shared keys (KEKFile) and no file named, the key is the replicas' shared one.
		c.SIEMKeyFile = filepath.Join(c.DataDir, "siem.key")
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
		c.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}
