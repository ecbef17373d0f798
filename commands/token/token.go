// Package token mints and verifies the bearer tokens of tunnelplane: user tokens (for the admin
// API and for calling tunnels) and agent tokens (an agent's credential for one tunnel). Both are
// EdDSA JWTs signed by a control-plane token key whose public half is in the event log; nodes and
// the API verify them offline. User tokens from an external identity provider may also be RS256.
//
// It owns the claim sets and the checks (issuer, audience, expiry, key id); it must not decide
// authorization — who may do what is the RBAC view's business.
package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// Audiences separate what a token may be used for.
const (
	AudienceAPI   = "tunnelplane-api"   // users: the admin API and tunnel ingress
	AudienceAgent = "tunnelplane-agent" // agents: connecting to a node for one tunnel
	// DefaultIssuer is the iss of tokens minted by the control plane.
	DefaultIssuer = "tunnelplane"
	// DefaultLeeway is how far past its expiry (or before its start) a token is still accepted,
	// for clocks that disagree a little. Verifier.Leeway, --token-leeway.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway bounds --token-leeway: more would keep expired and revoked-by-expiry tokens alive.
	MaxLeeway = 5 * time.Minute
)

// Sentinel errors; match with errors.Is.
var (
	ErrInvalid    = errors.New("invalid token")
	ErrExpired    = errors.New("token expired")
	ErrUnknownKey = errors.New("token signed by an unknown key")
)

// UserClaims identify a user. Roles are not in the token: they come from the RBAC view.
type UserClaims struct {
	jwt.RegisteredClaims
	Name string `json:"name,omitempty"`
	// Groups are the identity provider's groups claim: a grant to a group lets every user whose
	// token carries it call the tunnel.
	Groups []string `json:"groups,omitempty"`
	// Host binds the token to one host (a browser login's cookie for a tunnel host, or the
	// API's): it is valid only on requests to that host (lower case, host[:port] as a browser
	// sends it in Host). Empty: any host, as before browser logins existed.
	Host string `json:"host,omitempty"`
}

// AgentClaims bind an agent to one tunnel of one organization.
type AgentClaims struct {
	jwt.RegisteredClaims
	Org    string `json:"org"`
	Tunnel string `json:"tunnel"`
}

// Keys resolves a key id to a public key (ed25519.PublicKey or *rsa.PublicKey).
type Keys interface {
	PublicKey(kid string) (crypto.PublicKey, bool)
}

// KeySet is a concurrency-safe Keys that can change while in use (a key is added or revoked).
type KeySet struct {
	mu   sync.RWMutex
	keys map[string]crypto.PublicKey
}

// NewKeySet returns an empty set.
func NewKeySet() *KeySet { return &KeySet{keys: map[string]crypto.PublicKey{}} }

// Put adds or replaces a key.
func (s *KeySet) Put(kid string, pub crypto.PublicKey) {
	s.mu.Lock()
	s.keys[kid] = pub
	s.mu.Unlock()
}

// Delete removes a key; tokens it signed stop verifying at once.
func (s *KeySet) Delete(kid string) {
	s.mu.Lock()
	delete(s.keys, kid)
	s.mu.Unlock()
}

// PublicKey implements Keys.
func (s *KeySet) PublicKey(kid string) (crypto.PublicKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.keys[kid]
	return k, ok
}

// All is a copy of the set: key id → public key.
func (s *KeySet) All() map[string]crypto.PublicKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.keys)
}

// Len is the number of keys.
func (s *KeySet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.keys)
}

// MintUser signs a user token valid for ttl.
func MintUser(key *ledger.SigningKey, issuer, subject, name string, ttl time.Duration, now time.Time) (string, error) {
	return MintUserInGroups(key, issuer, subject, name, nil, ttl, now)
}

// MintUserInGroups signs a user token valid for ttl whose groups claim lists groups (as an
// identity provider would).
func MintUserInGroups(key *ledger.SigningKey, issuer, subject, name string, groups []string, ttl time.Duration, now time.Time) (string, error) {
	raw, _, err := MintUserClaims(key, issuer, subject, name, groups, ttl, now)
	return raw, err
}

// MintUserClaims is MintUserInGroups that also returns the claims it signed (the token id and
// expiry a login records).
func MintUserClaims(key *ledger.SigningKey, issuer, subject, name string, groups []string, ttl time.Duration, now time.Time) (string, *UserClaims, error) {
	return MintHostUserClaims(key, issuer, subject, name, groups, "", ttl, now)
}

// MintHostUserClaims is MintUserClaims bound to host (UserClaims.Host; "" for none).
func MintHostUserClaims(key *ledger.SigningKey, issuer, subject, name string, groups []string, host string, ttl time.Duration, now time.Time) (string, *UserClaims, error) {
	if subject == "" {
		return "", nil, fmt.Errorf("mint user token: %w: empty subject", ErrInvalid)
	}
	c := UserClaims{RegisteredClaims: registered(issuer, subject, AudienceAPI, ttl, now), Name: name, Groups: groups, Host: host}
	raw, err := sign(key, c)
	if err != nil {
		return "", nil, err
	}
	return raw, &c, nil
}

// MintAgent signs an agent token for one tunnel; jti is the token id the control plane records
// (and revokes by).
func MintAgent(key *ledger.SigningKey, issuer, jti, org, tunnel string, expires, now time.Time) (string, error) {
	if org == "" || tunnel == "" || jti == "" {
		return "", fmt.Errorf("mint agent token: %w: org, tunnel and id are required", ErrInvalid)
	}
	c := AgentClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: issuer, Subject: "agent:" + tunnel, Audience: jwt.ClaimStrings{AudienceAgent},
		ExpiresAt: jwt.NewNumericDate(expires), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), ID: jti,
	}, Org: org, Tunnel: tunnel}
	return sign(key, c)
}

func registered(issuer, subject, audience string, ttl time.Duration, now time.Time) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{
		Issuer: issuer, Subject: subject, Audience: jwt.ClaimStrings{audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), IssuedAt: jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), ID: uuid.Must(uuid.NewV7()).String(),
	}
}

func sign(key *ledger.SigningKey, claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = key.ID()
	s, err := t.SignedString(key.CryptoSigner())
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Verifier checks tokens against a key set, an issuer and the clock.
type Verifier struct {
	Keys   Keys
	Issuer string // required iss; empty accepts any issuer (use only with a trusted key set)
	Leeway time.Duration
	Now    func() time.Time
}

func (v *Verifier) parser(aud string) *jwt.Parser {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"EdDSA", "RS256"}), jwt.WithAudience(aud), jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.Leeway), jwt.WithIssuedAt(),
	}
	if v.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.Issuer))
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	return jwt.NewParser(opts...)
}

func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, fmt.Errorf("%w: no kid in the header", ErrUnknownKey)
	}
	k, ok := v.Keys.PublicKey(kid)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKey, kid)
	}
	switch k.(type) {
	case ed25519.PublicKey:
		if t.Method != jwt.SigningMethodEdDSA {
			return nil, fmt.Errorf("%w: key %s is Ed25519 but the token says %s", ErrInvalid, kid, t.Method.Alg())
		}
	case *rsa.PublicKey:
		if t.Method != jwt.SigningMethodRS256 {
			return nil, fmt.Errorf("%w: key %s is RSA but the token says %s", ErrInvalid, kid, t.Method.Alg())
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrUnknownKey, k)
	}
	return k, nil
}

// classify turns a parse failure into one of the sentinel errors with a reason in the user's
// words. It never quotes what the token says (kid, issuer, subject): callers may show it.
func (v *Verifier) classify(err error, rc *jwt.RegisteredClaims, want string) error {
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	kind := map[string]string{AudienceAPI: "user", AudienceAgent: "agent"}
	switch {
	case errors.Is(err, ErrUnknownKey):
		return fmt.Errorf("%w: it is signed by a key this installation does not trust (rotated out, or another installation's)", ErrUnknownKey)
	case errors.Is(err, ErrInvalid): // from keyFunc
		return fmt.Errorf("%w: its algorithm does not match its key", ErrInvalid)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return fmt.Errorf("%w: not a tunnelplane token (not a JWT)", ErrInvalid)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return fmt.Errorf("%w: its signature does not verify", ErrInvalid)
	case errors.Is(err, jwt.ErrTokenExpired) && rc.ExpiresAt != nil:
		return fmt.Errorf("%w %s ago", ErrExpired, ago(now().Sub(rc.ExpiresAt.Time)))
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return fmt.Errorf("%w: it is not valid yet (is a clock wrong?)", ErrInvalid)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		for _, aud := range rc.Audience {
			if k := kind[aud]; k != "" && aud != want {
				return fmt.Errorf("%w: this is %s token, not %s token", ErrInvalid, article(k), article(kind[want]))
			}
		}
		return fmt.Errorf("%w: not a tunnelplane %s token", ErrInvalid, kind[want])
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fmt.Errorf("%w: it was issued by someone else than %q", ErrInvalid, v.Issuer)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return fmt.Errorf("%w: it has no expiry", ErrInvalid)
	}
	return fmt.Errorf("%w: not a tunnelplane token", ErrInvalid)
}

func article(kind string) string {
	if kind == "agent" {
		return "an agent"
	}
	return "a " + kind
}

// ago says a duration the way people do: "40s", "3m", "2h5m", "3 days".
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// Reason is what went wrong with a token in the user's words ("token expired 3m ago", "invalid
// token: not a tunnelplane token"), safe to show the caller: the errors of this package never quote
// the token. Other errors give "invalid token".
func Reason(err error) string {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) || errors.Is(err, ErrUnknownKey) {
		if r := reasonIn(err); r != "" {
			return r
		}
	}
	return ErrInvalid.Error()
}

// reasonIn finds the error of this package's making in err's tree (errors joined or wrapped with
// several %w included: the ingress wraps a token's error beside its own).
func reasonIn(e error) string {
	if e == nil {
		return ""
	}
	if strings.HasPrefix(e.Error(), ErrInvalid.Error()) || strings.HasPrefix(e.Error(), ErrExpired.Error()) ||
		strings.HasPrefix(e.Error(), ErrUnknownKey.Error()) {
		return e.Error()
	}
	switch u := e.(type) {
	case interface{ Unwrap() error }:
		return reasonIn(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, x := range u.Unwrap() {
			if r := reasonIn(x); r != "" {
				return r
			}
		}
	}
	return ""
}

// VerifyUser checks a user token and returns its claims.
func (v *Verifier) VerifyUser(raw string) (*UserClaims, error) {
	var c UserClaims
	if _, err := v.parser(AudienceAPI).ParseWithClaims(raw, &c, v.keyFunc); err != nil {
		return nil, v.classify(err, &c.RegisteredClaims, AudienceAPI)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no subject", ErrInvalid)
	}
	return &c, nil
}

// VerifyAgent checks an agent token and returns its claims.
func (v *Verifier) VerifyAgent(raw string) (*AgentClaims, error) {
	var c AgentClaims
	if _, err := v.parser(AudienceAgent).ParseWithClaims(raw, &c, v.keyFunc); err != nil {
		return nil, v.classify(err, &c.RegisteredClaims, AudienceAgent)
	}
	if c.Org == "" || c.Tunnel == "" || c.ID == "" {
		return nil, fmt.Errorf("%w: agent token without org, tunnel or id", ErrInvalid)
	}
	return &c, nil
}

// accessKeyDomain separates the signatures access keys are derived from from every other
// signature of the token key.
const accessKeyDomain = "tunnelplane access key v1\x00"

// AccessKeySecret derives the secret of access key keyID from the token key: a hash of the key's
// Ed25519 signature over the id (deterministic), so a replayed issue shows the same secret again
// while nobody without the token key can compute one. The log keeps only domain.HashAccessKey of
// it.
func AccessKeySecret(key *ledger.SigningKey, keyID string) (string, error) {
	if keyID == "" {
		return "", fmt.Errorf("access key secret: %w: empty key id", ErrInvalid)
	}
	sum := sha256.Sum256(key.Sign([]byte(accessKeyDomain + keyID)))
	return domain.AccessKeyPrefix + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// enrollmentTokenDomain separates the signatures node enrollment tokens are derived from.
const enrollmentTokenDomain = "tunnelplane node enrollment token v1\x00"

// EnrollmentTokenSecret derives node enrollment token tokenID from the token key, as
// AccessKeySecret does: "tpe_<id>_<secret>". The id rides in the token so that the control plane
// finds its record without an index; the log keeps only domain.HashEnrollmentSecret of it.
func EnrollmentTokenSecret(key *ledger.SigningKey, tokenID string) (string, error) {
	if !domain.ValidID(tokenID) {
		return "", fmt.Errorf("enrollment token secret: %w: token id is not an id", ErrInvalid)
	}
	sum := sha256.Sum256(key.Sign([]byte(enrollmentTokenDomain + tokenID)))
	return domain.EnrollmentTokenPrefix + tokenID + "_" + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}
