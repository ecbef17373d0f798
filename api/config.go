package api

import (
	"context"
	"errors"
	"fmt"
	"github.com/tunnelplane/tunnelplane/analytics/replay"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/compliance/reach"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultMaxWait      = 10 * time.Second
	DefaultReadyMaxLag  = 1000
	// DefaultNodeStreamCapacity is Config.NodeStreamCapacity's default.
	DefaultNodeStreamCapacity   = 1000
	DefaultKeyRefresh           = 30 * time.Second
	DefaultJWKSRefresh          = 10 * time.Minute
	DefaultRotatedTokenKeyGrace = 24 * time.Hour
)

// What the API needs of the rest of the control plane, declared here (where it is used) and
// kept small. An *eventstore.Store is an EventLog, a *readmodels.Queries is ReadModels and a
// *projections.Runner is a ProjectionRunner.

// LogPositions tells where the log's head is and waits for a position: read-your-writes
// (wait_for) and the position a write that changed nothing answers.
type LogPositions interface {
	// ReadAll reads records from a position on (the notifications feed).
	ReadAll(ctx context.Context, from uint64, limit int) ([]eventstore.Record, error)
	// Head is the position after the last record, from the database.
	Head(ctx context.Context) (uint64, error)
	// KnownHead is the head as far as this process knows, without a round trip.
	KnownHead() uint64
	// WaitForPosition blocks until the record at pos is in the log, or ctx ends.
	WaitForPosition(ctx context.Context, pos uint64) error
}

// LogDescription is what GET /log shows: the origin, the newest signed checkpoint and the
// genesis record's hash.
type LogDescription interface {
	Origin(ctx context.Context) (string, error)
	LatestCheckpoint(ctx context.Context) (size uint64, note string, err error)
	GenesisHash(ctx context.Context) ([]byte, error)
}

// KeyHistory is the log's key history: the keys with their validity, and the log's own stream
// (eventstore.LogStream), folded into the keys' states and public keys.
type KeyHistory interface {
	Keys(ctx context.Context) ([]eventstore.KeyInfo, error)
	ReadStream(ctx context.Context, streamID string, from uint64, limit int) ([]eventstore.Record, error)
}

// EventLog is everything the API reads of the event log. It never appends (commands do).
type EventLog interface {
	LogPositions
	LogDescription
	KeyHistory
	replay.Log // usage history for forecasts
	reach.Log  // who could reach a tunnel at a time
	// ReadAndFollow hands fold the records of types so far, then (follow) as they commit: the
	// users deleted everywhere, whose earlier tokens the API refuses.
	ReadAndFollow(ctx context.Context, types []string, retry time.Duration, onRetry func(err error, from uint64),
		fold func([]eventstore.Record) error) (follow func(context.Context), err error)
}

// ProjectionRunner is the projections' runner: read-your-writes on the read models, their
// statuses, and rebuilds.
type ProjectionRunner interface {
	WaitFor(ctx context.Context, pos uint64, names ...string) error
	Statuses(ctx context.Context) ([]projections.Status, error)
	Rebuild(ctx context.Context, name string, progress func(projections.RebuildProgress)) (projections.Status, error)
}

// OrgReader reads the organizations view.
type OrgReader interface {
	// ResolveOrg maps a name or an id to the id; domain.ErrNotFound when there is none.
	ResolveOrg(ctx context.Context, ref string) (string, error)
	ListOrgs(ctx context.Context, f readmodels.OrgFilter) ([]readmodels.Org, error)
	GetOrg(ctx context.Context, id string) (readmodels.Org, error)
}

// TunnelReader reads the tunnels view.
type TunnelReader interface {
	ListTunnels(ctx context.Context, f readmodels.TunnelFilter) ([]readmodels.Tunnel, error)
	GetTunnel(ctx context.Context, orgID, id string) (readmodels.Tunnel, error)
}

// NodeReader reads the nodes view.
type NodeReader interface {
	ListNodes(ctx context.Context, f readmodels.NodeFilter) ([]readmodels.Node, error)
	GetNode(ctx context.Context, id string) (readmodels.Node, error)
}

// AgentTokenReader reads the agent tokens view.
type AgentTokenReader interface {
	ListAgentTokens(ctx context.Context, f readmodels.AgentTokenFilter) ([]readmodels.AgentToken, error)
	GetAgentToken(ctx context.Context, orgID, id string) (readmodels.AgentToken, error)
	ListAccessKeys(ctx context.Context, f readmodels.AccessKeyFilter) ([]readmodels.AccessKey, error)
	GetAccessKey(ctx context.Context, orgID, id string) (readmodels.AccessKey, error)
	ListAccessRequests(ctx context.Context, f readmodels.AccessRequestFilter) ([]readmodels.AccessRequest, error)
	GetAccessRequest(ctx context.Context, orgID, id string) (readmodels.AccessRequest, error)
}

// EnrollmentTokenReader reads the node enrollment tokens view.
type EnrollmentTokenReader interface {
	ListEnrollmentTokens(ctx context.Context, f readmodels.EnrollmentTokenFilter) ([]readmodels.EnrollmentToken, error)
	GetEnrollmentToken(ctx context.Context, id string) (readmodels.EnrollmentToken, error)
}

// AgentSessionReader reads the agent sessions view.
type AgentSessionReader interface {
	ListAgentSessions(ctx context.Context, f readmodels.AgentSessionFilter) ([]readmodels.AgentSession, error)
}

// RoleAssignmentReader reads the role assignments view.
type RoleAssignmentReader interface {
	ListRoleAssignments(ctx context.Context, f readmodels.RoleAssignmentFilter) ([]readmodels.RoleAssignment, error)
}

// AuditReader searches the audit index.
type AuditReader interface {
	SearchAudit(ctx context.Context, f readmodels.AuditFilter) ([]readmodels.AuditEntry, error)
	TunnelActivity(ctx context.Context, f readmodels.ActivityFilter) ([]readmodels.ActivityEvent, int64, error)
}

// Pinger tells whether the database answers (readiness).
type Pinger interface {
	Ping(ctx context.Context) error
}

// ReadModels is every read model the API serves.
type ReadModels interface {
	Pinger
	OrgReader
	TunnelReader
	NodeReader
	AgentTokenReader
	EnrollmentTokenReader
	AgentSessionReader
	RoleAssignmentReader
	AuditReader
	SIEMSinkReader
	WebhookReader
	UsageReader
	ReportScheduleReader
}

// UsageReader reads the usage rollups, org settings and price sheets (projection usage).
type UsageReader interface {
	UsageHours(ctx context.Context, f readmodels.UsageFilter) ([]readmodels.UsageHour, *readmodels.UsageKey, error)
	ListAccessCalls(ctx context.Context, f readmodels.AccessCallFilter) ([]readmodels.AccessCall, error)
	OrgTimeZone(ctx context.Context, orgID string) (string, error)
	PriceSheets(ctx context.Context, orgID string, until time.Time) ([]readmodels.PriceSheet, error)
	ChargeUsage(ctx context.Context, orgID string, from, to time.Time, boundaries []time.Time) ([]readmodels.ChargeUsage, error)
	ActiveTunnelDays(ctx context.Context, orgID string, dayStarts []time.Time, to time.Time) ([]readmodels.ActiveTunnelDay, error)
}

// Config wires the API to the write side, the read models and the log.
type Config struct {
	Service *commands.Service
	// Log is the event log (an *eventstore.Store): positions, description, key history.
	Log EventLog
	// Runner is the projections' runner (a *projections.Runner).
	Runner ProjectionRunner
	// ReadModels reads the projections' views (readmodels.New(pool)).
	ReadModels ReadModels
	// SIEMSecrets seals the secrets callers give SIEM sinks (a *siem.Secrets); without it only
	// references are taken.
	SIEMSecrets SecretSealer
	// WebhookSecrets seals the secrets of webhook endpoints and opens them to show them once (a
	// *siem.Secrets); without it creating an endpoint answers 503.
	WebhookSecrets SecretBox
	// WebhookAllowPrivate lets endpoints name loopback, private and link-local addresses (the
	// operator's --webhook-allow-private; refused by default: SSRF).
	WebhookAllowPrivate bool
	// Notifications bounds GET /api/v1/notifications/stream (defaults: see NotificationLimits).
	Notifications NotificationLimits
	// Exports runs the evidence exports of POST /exports (ExportsOf(an *exportjobs.Manager));
	// without it those routes answer 503.
	Exports Exports
	// Reports makes the compliance reports of GET /api/v1/reports/{report} (a
	// *report.Generator); without it that route answers 404.
	Reports ReportGenerator
	// AnalyticsReports makes the usage, chargeback and capacity reports of the same route (an
	// *analyticsreport.Generator); without it those answer 404.
	AnalyticsReports AnalyticsReportGenerator
	// Personal opens the personal data sealed in the log (a *pii.Keyring) for the audit search
	// and the agent sessions; without it sealed values are shown as stored.
	Personal PersonalData
	// ScheduleKinds are the kinds of report schedules may make (the report scheduler's
	// generators). Default DefaultScheduleKinds.
	ScheduleKinds []string

	// TokenIssuer is the iss of tokens the control plane mints (checked on them). Default
	// token.DefaultIssuer.
	TokenIssuer string
	// TokenLeeway is how far past expiry a token is still accepted (clock skew). Default
	// token.DefaultLeeway; at most token.MaxLeeway.
	TokenLeeway time.Duration
	// JWKSURL or JWKSFile adds an external identity provider's keys (RS256 or EdDSA); its tokens
	// must carry JWTIssuer as iss and token.AudienceAPI as aud.
	JWKSURL, JWKSFile string
	JWTIssuer         string
	// OIDC, when set, lets users log in interactively: ID tokens of its provider are exchanged
	// for user tokens (POST /api/v1/auth/oidc/token) valid for LoginTTL (default
	// DefaultLoginTTL, at most commands.MaxLoginTTL).
	OIDC     *oidcauth.Verifier
	LoginTTL time.Duration
	// IDTokens records the ID tokens exchanged, so each is exchanged once (*oidcauth.Exchanges);
	// required with OIDC.
	IDTokens IDTokenExchanges
	// PublicURL is the API's origin as browsers reach it (https://tunnelplane.example): the
	// browser login's redirect URI is under it, and it is the one origin that may make
	// cookie-authenticated changes. Empty: no browser login, and host-bound tokens are refused.
	PublicURL string
	// BrowserLoginOrigins are the origins besides PublicURL a browser login may return to
	// (browserlogin.ParsePattern: "https://*.nodes.example"): the tunnel hosts of the nodes.
	BrowserLoginOrigins []string
	// BrowserLogins keeps the browser logins under way; without it there is no browser login.
	BrowserLogins BrowserLoginStore
	// JWKSRefresh is how often a JWKS URL is fetched again. Default 10m.
	JWKSRefresh time.Duration
	// KeyRefresh is how often the token keys are re-read from the log (to see revocations made by
	// other processes). Default 30s. An unknown key id also triggers a (rate-limited) re-read.
	KeyRefresh time.Duration
	// RotatedTokenKeyGrace keeps accepting tokens signed by a rotated (not revoked) token key for
	// this long after the rotation, so a rotation does not log every operator out. Default 24h.
	RotatedTokenKeyGrace time.Duration

	// MaxBodyBytes bounds request bodies (413 beyond). Default 64 KiB.
	MaxBodyBytes int64
	// MaxWait bounds wait_for (503 with Retry-After beyond). Default 10s.
	MaxWait time.Duration
	// ReadyMaxLag is the most records any projection may be behind for /readyz. Default 1000.
	ReadyMaxLag int64
	// NodeStreamCapacity is how many calls one data-plane node is sized to hold open at once: the
	// capacity analytics measure headroom against it. Default DefaultNodeStreamCapacity.
	NodeStreamCapacity int64

	// Registry receives the HTTP metrics and is served at /metrics (register the projection
	// runner's metrics in it too). Default: a fresh registry.
	Registry *prometheus.Registry
	// HTTPClient fetches the JWKS URL. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
}

// IDTokenExchanges claims an ID token's one exchange (oidcauth.Exchanges).
type IDTokenExchanges interface {
	Claim(ctx context.Context, raw string, until time.Time) error
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Service == nil {
		errs = append(errs, errors.New("api config: Service is required"))
	}
	if c.OIDC != nil && c.IDTokens == nil {
		errs = append(errs, errors.New("api config: IDTokens is required with OIDC (an ID token is exchanged once)"))
	}
	if c.Log == nil {
		errs = append(errs, errors.New("api config: Log is required"))
	}
	if c.Runner == nil {
		errs = append(errs, errors.New("api config: Runner is required"))
	}
	if c.ReadModels == nil {
		errs = append(errs, errors.New("api config: ReadModels is required"))
	}
	if c.JWKSURL != "" && c.JWKSFile != "" {
		errs = append(errs, errors.New("api config: set JWKSURL or JWKSFile, not both"))
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("api config: JWKSURL %q is not an http(s) URL", c.JWKSURL))
		}
	}
	if (c.JWKSURL != "" || c.JWKSFile != "") && c.JWTIssuer == "" {
		errs = append(errs, errors.New("api config: JWTIssuer is required with a JWKS (tokens of an external issuer are checked against it)"))
	}
	for name, d := range map[string]time.Duration{"JWKSRefresh": c.JWKSRefresh, "KeyRefresh": c.KeyRefresh,
		"RotatedTokenKeyGrace": c.RotatedTokenKeyGrace, "MaxWait": c.MaxWait} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("api config: %s %s is negative", name, d))
		}
	}
	if c.PublicURL != "" {
		if o, err := domain.CanonicalOrigin(c.PublicURL); err != nil || o != c.PublicURL {
			errs = append(errs, fmt.Errorf("api config: PublicURL %q: want an origin such as https://tunnelplane.example (no path, no default port)", c.PublicURL))
		}
	}
	for _, o := range c.BrowserLoginOrigins {
		if _, err := browserlogin.ParsePattern(o); err != nil {
			errs = append(errs, fmt.Errorf("api config: BrowserLoginOrigins: %w", err))
		}
	}
	if c.LoginTTL < 0 || c.LoginTTL > commands.MaxLoginTTL {
		errs = append(errs, fmt.Errorf("api config: LoginTTL %s is not within 0..%s", c.LoginTTL, commands.MaxLoginTTL))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("api config: MaxBodyBytes %d is negative", c.MaxBodyBytes))
	}
	if c.TokenLeeway < 0 || c.TokenLeeway > token.MaxLeeway {
		errs = append(errs, fmt.Errorf("api config: TokenLeeway %s is not within 0..%s", c.TokenLeeway, token.MaxLeeway))
	}
	if c.NodeStreamCapacity < 0 {
		errs = append(errs, fmt.Errorf("api config: NodeStreamCapacity %d is negative", c.NodeStreamCapacity))
	}
	if err := c.Notifications.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ReadyMaxLag < 0 {
		errs = append(errs, fmt.Errorf("api config: ReadyMaxLag %d is negative", c.ReadyMaxLag))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.TokenIssuer == "" {
		c.TokenIssuer = token.DefaultIssuer
	}
	if c.TokenLeeway == 0 {
		c.TokenLeeway = token.DefaultLeeway
	}
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = DefaultJWKSRefresh
	}
	if c.LoginTTL == 0 {
		c.LoginTTL = DefaultLoginTTL
	}
	if c.KeyRefresh == 0 {
		c.KeyRefresh = DefaultKeyRefresh
	}
	if c.RotatedTokenKeyGrace == 0 {
		c.RotatedTokenKeyGrace = DefaultRotatedTokenKeyGrace
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = DefaultReadyMaxLag
	}
	c.Notifications = c.Notifications.withDefaults()
	if c.NodeStreamCapacity == 0 {
		c.NodeStreamCapacity = DefaultNodeStreamCapacity
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
