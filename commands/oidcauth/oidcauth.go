// Package oidcauth verifies the ID tokens of the one OpenID Connect provider a control plane
// trusts for interactive logins (--oidc-issuer, --oidc-client-id) and says who they name: a
// tunnelplane user id, a display name and groups. Discovery and the provider's signing keys are
// go-oidc's (github.com/coreos/go-oidc/v3); this package adds the bounds tunnelplane needs (clock
// skew, the age of a token, the size of its claims).
//
// It owns no state beyond the discovered provider and must not mint tokens or decide
// authorization: commands.Service.LogIn mints, the RBAC view and grants decide.
package oidcauth

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrRefused: the ID token is not one this control plane accepts. The error's text says why
	// in words safe to show the caller (it never quotes the token).
	ErrRefused = errors.New("ID token refused")
	// ErrUnavailable: the provider could not be asked (discovery failed); try again later.
	ErrUnavailable = errors.New("identity provider unavailable")
)

// Defaults and bounds of Config.
const (
	DefaultLeeway = 30 * time.Second
	MaxLeeway     = 5 * time.Minute
	// DefaultMaxAge is how old (iat) an ID token may be when it is exchanged: the CLI exchanges
	// it the moment it has it.
	DefaultMaxAge = 10 * time.Minute
	// MaxTokenBytes bounds a raw ID token.
	MaxTokenBytes = 16 << 10
	// rediscoverEvery bounds how often a failed discovery is tried again.
	rediscoverEvery = 5 * time.Second
)

// Config names the provider.
type Config struct {
	// Issuer is the provider's issuer URL; its /.well-known/openid-configuration is read.
	Issuer string
	// ClientID is the client tunnelplane's CLI uses at the provider: the ID token's aud must
	// hold it.
	ClientID string
	// Leeway bounds clock skew on nbf and iat (default DefaultLeeway, at most MaxLeeway). exp
	// gets none.
	Leeway time.Duration
	// MaxAge bounds how long ago the token was issued (default DefaultMaxAge).
	MaxAge     time.Duration
	HTTPClient *http.Client
	Now        func() time.Time
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
		len(c.Issuer) > domain.MaxIssuerBytes {
		errs = append(errs, fmt.Errorf("oidc issuer %q: want an http(s) URL without query or fragment", c.Issuer))
	}
	if c.ClientID == "" || len(c.ClientID) > 256 || strings.IndexFunc(c.ClientID, unicode.IsControl) >= 0 {
		errs = append(errs, errors.New("oidc client id: want 1-256 bytes without control characters"))
	}
	if c.Leeway < 0 || c.Leeway > MaxLeeway {
		errs = append(errs, fmt.Errorf("oidc leeway %s: want 0..%s", c.Leeway, MaxLeeway))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("oidc max age %s is negative", c.MaxAge))
	}
	return errors.Join(errs...)
}

// Identity is who a verified ID token names.
type Identity struct {
	// UserID is domain.ExternalUserID(issuer, sub): the user's id in tunnelplane.
	UserID string
	Issuer string
	// Name is the name, preferred_username or email claim, the first present (may be empty).
	Name   string
	Groups []string
	// ExchangeableUntil is when the token becomes too old to be verified (its iat, the age bound
	// and the leeway): how long its exchange must be remembered (Exchanges).
	ExchangeableUntil time.Time
}

// Verifier verifies ID tokens of one provider. Safe for concurrent use.
type Verifier struct {
	cfg Config

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	endpoint oauth2.Endpoint
	tried    time.Time
}

// New builds a Verifier; the provider is discovered on first use (and again after a failure), so
// a control plane starts while its provider is away.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

// Issuer and ClientID are what a client needs to log in (they are public).
func (v *Verifier) Issuer() string   { return v.cfg.Issuer }
func (v *Verifier) ClientID() string { return v.cfg.ClientID }

// Discover reads the provider's configuration now (at start, to report a wrong issuer early).
func (v *Verifier) Discover(ctx context.Context) error {
	_, err := v.idTokenVerifier(ctx, true)
	return err
}

func (v *Verifier) idTokenVerifier(ctx context.Context, force bool) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	if !force && !v.tried.IsZero() && v.cfg.Now().Sub(v.tried) < rediscoverEvery {
		return nil, fmt.Errorf("%w: discovery of %s failed a moment ago", ErrUnavailable, v.cfg.Issuer)
	}
	v.tried = v.cfg.Now()
	// The provider keeps this context for fetching its keys later (go-oidc drops its cancellation).
	p, err := oidc.NewProvider(oidc.ClientContext(context.WithoutCancel(ctx), v.cfg.HTTPClient), v.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	v.verifier = p.Verifier(&oidc.Config{ClientID: v.cfg.ClientID, Now: v.cfg.Now})
	v.endpoint = p.Endpoint()
	return v.verifier, nil
}

// Endpoint is the provider's authorization and token endpoints, from its discovery document
// (the browser login's authorization code flow).
func (v *Verifier) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	if _, err := v.idTokenVerifier(ctx, false); err != nil {
		return oauth2.Endpoint{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.endpoint, nil
}

// HTTPClient is the client the provider is asked with (for the code exchange).
func (v *Verifier) HTTPClient() *http.Client { return v.cfg.HTTPClient }

// VerifyNonce is Verify for an ID token of the authorization code flow: its nonce claim must be
// nonce, the one the login sent to the provider (a token replayed into another login fails).
func (v *Verifier) VerifyNonce(ctx context.Context, raw, nonce string) (Identity, error) {
	if nonce == "" {
		return Identity{}, refused("no nonce to check it against")
	}
	pre, err := peek(raw)
	if err != nil {
		return Identity{}, err
	}
	if subtle.ConstantTimeCompare([]byte(pre.Nonce), []byte(nonce)) != 1 {
		return Identity{}, refused("its nonce is not the one this login sent")
	}
	// The nonce was read unverified: Verify checks the signature over it.
	return v.Verify(ctx, raw)
}

// claims are the ID token's claims this package reads besides what go-oidc checks.
type claims struct {
	Subject           string          `json:"sub"`
	Name              string          `json:"name"`
	PreferredUsername string          `json:"preferred_username"`
	Email             string          `json:"email"`
	Groups            json.RawMessage `json:"groups"`
	IssuedAt          *float64        `json:"iat"`
	NotBefore         *float64        `json:"nbf"`
	Issuer            string          `json:"iss"`
	Audience          json.RawMessage `json:"aud"`
	AuthorizedParty   string          `json:"azp"`
	Nonce             string          `json:"nonce"`
}

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRefused}, args...)...)
}

// Verify checks a raw ID token (signature by the provider's published keys, iss, aud, exp, nbf
// and iat within the leeway, the age bound) and returns whom it names.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	if raw == "" || len(raw) > MaxTokenBytes {
		return Identity{}, refused("not an ID token (empty, or larger than %d bytes)", MaxTokenBytes)
	}
	// A cheap look before anything is fetched: a token of another issuer or client never makes
	// the provider's keys be read again.
	pre, err := peek(raw)
	if err != nil {
		return Identity{}, err
	}
	if pre.Issuer != v.cfg.Issuer {
		return Identity{}, refused("it was issued by another identity provider than this control plane's")
	}
	if !audienceHas(pre.Audience, v.cfg.ClientID) {
		return Identity{}, refused("it was issued to another client than this control plane's (aud)")
	}
	// OIDC Core 3.1.3.7: with azp, the token was issued to that party; it must be ours.
	if pre.AuthorizedParty != "" && pre.AuthorizedParty != v.cfg.ClientID {
		return Identity{}, refused("it was issued to another client than this control plane's (azp)")
	}
	iv, err := v.idTokenVerifier(ctx, false)
	if err != nil {
		return Identity{}, err
	}
	tok, err := iv.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return Identity{}, refused("it expired %s ago", v.cfg.Now().Sub(exp.Expiry).Round(time.Second))
		}
		// go-oidc's messages quote the token's claims; say what failed in our words.
		return Identity{}, refused("its signature or claims do not verify against the identity provider's keys")
	}
	var c claims
	if err := tok.Claims(&c); err != nil {
		return Identity{}, refused("its claims are not JSON of the expected shape")
	}
	now := v.cfg.Now()
	switch {
	case c.NotBefore != nil && unix(*c.NotBefore).After(now.Add(v.cfg.Leeway)):
		return Identity{}, refused("it is not valid yet (nbf; is a clock wrong?)")
	case c.IssuedAt == nil:
		return Identity{}, refused("it has no iat")
	case unix(*c.IssuedAt).After(now.Add(v.cfg.Leeway)):
		return Identity{}, refused("it was issued in the future (iat; is a clock wrong?)")
	case unix(*c.IssuedAt).Before(now.Add(-v.cfg.MaxAge - v.cfg.Leeway)):
		return Identity{}, refused("it was issued more than %s ago; log in again", v.cfg.MaxAge)
	case c.Subject == "" || len(c.Subject) > 255 || !utf8.ValidString(c.Subject):
		return Identity{}, refused("its sub is empty or longer than 255 bytes")
	}
	groups, err := parseGroups(c.Groups)
	if err != nil {
		return Identity{}, err
	}
	return Identity{UserID: domain.ExternalUserID(tok.Issuer, c.Subject), Issuer: tok.Issuer, Name: displayName(c), Groups: groups,
		ExchangeableUntil: unix(*c.IssuedAt).Add(v.cfg.MaxAge + v.cfg.Leeway)}, nil
}

func unix(f float64) time.Time { return time.Unix(int64(f), 0) }

// peek reads iss and aud without verifying anything (to refuse other providers' tokens cheaply).
func peek(raw string) (claims, error) {
	var c claims
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return c, refused("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(b, &c) != nil {
		return c, refused("not a JWT")
	}
	return c, nil
}

func audienceHas(raw json.RawMessage, clientID string) bool {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return one == clientID
	}
	var many []string
	return json.Unmarshal(raw, &many) == nil && slices.Contains(many, clientID)
}

// parseGroups reads the groups claim: absent, a list of strings, or one string. The list is
// bounded (domain.MaxLoginGroups) and every group must be a valid grant subject; a claim that
// breaks either refuses the login rather than silently dropping groups.
func parseGroups(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		var one string
		if json.Unmarshal(raw, &one) != nil {
			return nil, refused("its groups claim is not a list of strings")
		}
		list = []string{one}
	}
	if len(list) > domain.MaxLoginGroups {
		return nil, refused("its groups claim lists %d groups, more than %d", len(list), domain.MaxLoginGroups)
	}
	seen := make(map[string]bool, len(list))
	out := make([]string, 0, len(list))
	for i, g := range list {
		if err := domain.CheckGroup(g); err != nil {
			return nil, refused("group %d of its groups claim: %s", i+1, err.Error())
		}
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out, nil
}

// maxNameBytes bounds the display name taken from the token.
const maxNameBytes = 256

func displayName(c claims) string {
	for _, n := range []string{c.Name, c.PreferredUsername, c.Email} {
		n = strings.TrimSpace(n)
		if n != "" && len(n) <= maxNameBytes && utf8.ValidString(n) && strings.IndexFunc(n, unicode.IsControl) < 0 {
			return n
		}
	}
	return ""
}
