// Package browserlogin holds what the control plane keeps for a browser login (the OIDC
// authorization code flow with PKCE, ending in a cookie on a tunnel host or the API's host): the
// origins a login may return to, and the logins under way in PostgreSQL (table browser_logins),
// single-use and expiring, so that any replica can finish a login another one began.
//
// It owns no tokens and decides no authorization: the API runs the flow, commands.Service.LogIn
// mints, and the node checks the token's host.
package browserlogin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Sentinel errors; match with errors.Is.
var (
	// ErrUnknownState: no login under way has this state (never made, expired, or finished).
	ErrUnknownState = errors.New("no login under way has this state")
	// ErrTooMany: more logins are under way than MaxPending.
	ErrTooMany = errors.New("too many logins under way")
	// ErrBadPattern: an origin pattern is malformed.
	ErrBadPattern = errors.New("bad origin pattern")
)

// Bounds.
const (
	// Lifetime is how long a browser may take at the identity provider.
	Lifetime = 10 * time.Minute
	// MaxPending bounds the logins under way (the start route is public).
	MaxPending = 10000
	// MaxClientStateBytes bounds the state a node passes through a login.
	MaxClientStateBytes = 128
)

// Pattern is an origin a login may return to: scheme://host[:port] where the host may start
// with "*." (one or more DNS labels).
type Pattern struct {
	scheme, suffix, host, port string
}

// ParsePattern reads "https://*.nodes.example" or "https://app.example:8443".
func ParsePattern(s string) (Pattern, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || (scheme != "http" && scheme != "https") {
		return Pattern{}, fmt.Errorf("%w %q: want http(s)://[*.]host[:port]", ErrBadPattern, s)
	}
	wild := strings.HasPrefix(rest, "*.")
	probe := rest
	if wild {
		probe = "x" + rest[1:]
	}
	o, err := domain.CanonicalOrigin(scheme + "://" + probe)
	if err != nil || strings.Contains(rest[min(len(rest), 2):], "*") {
		return Pattern{}, fmt.Errorf("%w %q: want http(s)://[*.]host[:port]", ErrBadPattern, s)
	}
	host, port := splitHostPort(strings.TrimPrefix(o, scheme+"://"))
	p := Pattern{scheme: scheme, port: port}
	if wild {
		p.suffix = strings.TrimPrefix(host, "x")
		if net.ParseIP(strings.Trim(p.suffix[1:], "[]")) != nil || !strings.Contains(p.suffix[1:], ".") && p.suffix != ".localhost" {
			return Pattern{}, fmt.Errorf("%w %q: a wildcard needs a domain of at least two labels below it", ErrBadPattern, s)
		}
	} else {
		p.host = host
	}
	return p, nil
}

func (p Pattern) String() string {
	h := p.host
	if p.suffix != "" {
		h = "*" + p.suffix
	}
	if p.port != "" {
		h += ":" + p.port
	}
	return p.scheme + "://" + h
}

// Matches tells whether a canonical origin (domain.CanonicalOrigin) is one p allows.
func (p Pattern) Matches(origin string) bool {
	scheme, rest, ok := strings.Cut(origin, "://")
	if !ok || scheme != p.scheme {
		return false
	}
	host, port := splitHostPort(rest)
	if port != p.port {
		return false
	}
	if p.suffix == "" {
		return host == p.host
	}
	label, found := strings.CutSuffix(host, p.suffix)
	return found && label != "" && !strings.HasPrefix(label, ".") && !strings.HasSuffix(label, ".") && !strings.Contains(label, "..")
}

func splitHostPort(hp string) (host, port string) {
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.HasSuffix(hp, "]") {
		if _, err := strconv.Atoi(hp[i+1:]); err == nil {
			return hp[:i], hp[i+1:]
		}
	}
	return hp, ""
}

// HostOf is the host[:port] of a canonical origin, as a browser sends it in Host.
func HostOf(origin string) string {
	_, rest, _ := strings.Cut(origin, "://")
	return rest
}

// Secret is 32 random bytes in base64url: states, nonces, PKCE verifiers (43 characters).
func Secret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Pending is a login under way.
type Pending struct {
	Nonce, CodeVerifier string
	// Origin is where the login returns (canonical); Path the local path there.
	Origin, Path string
	// ClientState is what the tunnel host's node asked to have back (its login-CSRF nonce).
	ClientState string
	ExpiresAt   time.Time
}

// Store keeps the logins under way in PostgreSQL.
type Store struct {
	Pool *pgxpool.Pool
	Now  func() time.Time
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func stateHash(state string) []byte {
	h := sha256.Sum256([]byte(state))
	return h[:]
}

// Put keeps p under state. Expired logins are deleted first; more than MaxPending under way is
// ErrTooMany.
func (s *Store) Put(ctx context.Context, state string, p Pending) error {
	now := s.now()
	if _, err := s.Pool.Exec(ctx, `DELETE FROM browser_logins WHERE expires_at <= $1`, now); err != nil {
		return fmt.Errorf("browser login: expire: %w", err)
	}
	var n int
	if err := s.Pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM browser_logins LIMIT $1) t`, MaxPending).Scan(&n); err != nil {
		return fmt.Errorf("browser login: count: %w", err)
	}
	if n >= MaxPending {
		return ErrTooMany
	}
	_, err := s.Pool.Exec(ctx, `INSERT INTO browser_logins (state_hash, nonce, code_verifier, origin, return_path, client_state, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, stateHash(state), p.Nonce, p.CodeVerifier, p.Origin, p.Path, p.ClientState, p.ExpiresAt)
	if err != nil {
		return fmt.Errorf("browser login: keep: %w", err)
	}
	return nil
}

// Take removes and returns the login under state: a state is used once, whether the login then
// succeeds or not. An expired one is ErrUnknownState.
func (s *Store) Take(ctx context.Context, state string) (Pending, error) {
	if state == "" || len(state) > 128 {
		return Pending{}, ErrUnknownState
	}
	var p Pending
	err := s.Pool.QueryRow(ctx, `DELETE FROM browser_logins WHERE state_hash = $1
		RETURNING nonce, code_verifier, origin, return_path, client_state, expires_at`, stateHash(state)).
		Scan(&p.Nonce, &p.CodeVerifier, &p.Origin, &p.Path, &p.ClientState, &p.ExpiresAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Pending{}, ErrUnknownState
	case err != nil:
		return Pending{}, fmt.Errorf("browser login: take: %w", err)
	case !s.now().Before(p.ExpiresAt):
		return Pending{}, ErrUnknownState
	}
	return p, nil
}
