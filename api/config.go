package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Defaults of Config.
const (
	DefaultMaxBodyBytes         = 64 << 10
	DefaultMaxWait              = 10 * time.Second
	DefaultReadyMaxLag          = 1000
	DefaultKeyRefresh           = 30 * time.Second
	DefaultJWKSRefresh          = 10 * time.Minute
	DefaultRotatedTokenKeyGrace = 24 * time.Hour
)

// Config wires the API to the write side, the read models and the log.
type Config struct {
	Service *commands.Service
	Store   *eventstore.Store
	Runner  *projections.Runner
	// Pool reads the views. Default Store.Pool().
	Pool *pgxpool.Pool

	// TokenIssuer is the iss of tokens the control plane mints (checked on them). Default
	// token.DefaultIssuer.
	TokenIssuer string
	// JWKSURL or JWKSFile adds an external identity provider's keys (RS256 or EdDSA); its tokens
	// must carry JWTIssuer as iss and token.AudienceAPI as aud.
	JWKSURL, JWKSFile string
	JWTIssuer         string
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

	// Registry receives the HTTP metrics and is served at /metrics (register the projection
	// runner's metrics in it too). Default: a fresh registry.
	Registry *prometheus.Registry
	// HTTPClient fetches the JWKS URL. Default: a client with a 10s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Service == nil {
		errs = append(errs, errors.New("api config: Service is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("api config: Store is required"))
	}
	if c.Runner == nil {
		errs = append(errs, errors.New("api config: Runner is required"))
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
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("api config: MaxBodyBytes %d is negative", c.MaxBodyBytes))
	}
	if c.ReadyMaxLag < 0 {
		errs = append(errs, fmt.Errorf("api config: ReadyMaxLag %d is negative", c.ReadyMaxLag))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Pool == nil && c.Store != nil {
		c.Pool = c.Store.Pool()
	}
	if c.TokenIssuer == "" {
		c.TokenIssuer = token.DefaultIssuer
	}
	if c.JWKSRefresh == 0 {
		c.JWKSRefresh = DefaultJWKSRefresh
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
