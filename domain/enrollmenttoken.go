package domain

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Node enrollment tokens: a credential that enrolls a data-plane node and does nothing else. A
// platform superadmin issues one; it expires and is single-use unless asked otherwise. Each use
// is an EnrollmentTokenUsed event in the token's own stream, appended at the version the use was
// decided on, so the log itself refuses a use beyond MaxUses (across restarts and replicas).
const (
	// DefaultEnrollmentTokenTTL and MaxEnrollmentTokenTTL bound how long a token may be used.
	DefaultEnrollmentTokenTTL = time.Hour
	MaxEnrollmentTokenTTL     = 7 * 24 * time.Hour
	// MaxEnrollmentTokenUses bounds how many nodes one token may enroll.
	MaxEnrollmentTokenUses = 1000
	// EnrollmentTokenPrefix starts every enrollment token: the API tells one from a user token by
	// it, and a secret scanner can find leaked ones. The token id follows, then "_" and the secret.
	EnrollmentTokenPrefix = "tpe_"
)

// Why an enrollment token is refused. Match with errors.Is.
var (
	// ErrEnrollmentTokenInvalid: not an enrollment token of this log (unknown id, wrong secret).
	ErrEnrollmentTokenInvalid = errors.New("invalid enrollment token")
	// ErrEnrollmentTokenExpired: past its expiry.
	ErrEnrollmentTokenExpired = errors.New("the enrollment token has expired")
	// ErrEnrollmentTokenRevoked: revoked by a superadmin.
	ErrEnrollmentTokenRevoked = errors.New("the enrollment token was revoked")
	// ErrEnrollmentTokenUsed: it enrolled as many nodes as it may.
	ErrEnrollmentTokenUsed = errors.New("the enrollment token has been used up")
)

// EnrollmentTokenStream is the stream of one enrollment token.
func EnrollmentTokenStream(tokenID string) string { return "enrollmenttoken-" + tokenID }

// HashEnrollmentSecret is what the log keeps of an enrollment token: the SHA-256 of the whole
// token, in hex (the secret part is 256 bits, so a plain hash is enough).
func HashEnrollmentSecret(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:])
}

// ParseEnrollmentToken splits "tpe_<id>_<secret>" and returns the id; ok is false for anything
// else (nothing of it is to be echoed).
func ParseEnrollmentToken(raw string) (id string, ok bool) {
	rest, found := strings.CutPrefix(raw, EnrollmentTokenPrefix)
	if !found || len(raw) > 256 {
		return "", false
	}
	id, secret, found := strings.Cut(rest, "_")
	if !found || !ValidID(id) || secret == "" {
		return "", false
	}
	return id, true
}

// EnrollmentToken is the record of a node enrollment token.
type EnrollmentToken struct {
	id, secretHash string
	expiresAt      time.Time
	maxUses        int
	usedBy         []string // node ids, in the order of use
	revoked        bool
	version        uint64
}

// NewEnrollmentToken is the input of IssueEnrollmentToken.
type NewEnrollmentToken struct {
	TokenID, IssuedBy string
	// SecretHash is HashEnrollmentSecret of the token (never the token).
	SecretHash string
	Now        time.Time
	TTL        time.Duration
	MaxUses    int
	// DerivedFrom is the token key the secret was derived from.
	DerivedFrom string
}

// IssueEnrollmentToken decides issuing a node enrollment token.
func IssueEnrollmentToken(in NewEnrollmentToken) (EnrollmentTokenIssued, error) {
	var p problems
	checkID(&p, "token_id", in.TokenID)
	checkUser(&p, "issued_by", in.IssuedBy)
	if in.TTL < time.Second || in.TTL > MaxEnrollmentTokenTTL {
		p.add("ttl", "must be between 1s and %s", MaxEnrollmentTokenTTL)
	}
	if in.MaxUses < 1 || in.MaxUses > MaxEnrollmentTokenUses {
		p.add("uses", "must be between 1 and %d", MaxEnrollmentTokenUses)
	}
	if len(in.SecretHash) != 64 || strings.Trim(in.SecretHash, "0123456789abcdef") != "" {
		p.add("secret_hash", "must be a SHA-256 in lower-case hex")
	}
	if len(in.DerivedFrom) > 256 || strings.IndexFunc(in.DerivedFrom, unicode.IsControl) >= 0 {
		p.add("derived_from", "must be a key id")
	}
	if err := p.err(); err != nil {
		return EnrollmentTokenIssued{}, err
	}
	return EnrollmentTokenIssued{TokenID: in.TokenID, SecretHash: in.SecretHash, ExpiresAt: in.Now.Add(in.TTL).UTC().Truncate(time.Second),
		MaxUses: in.MaxUses, DerivedFrom: in.DerivedFrom, IssuedBy: in.IssuedBy}, nil
}

// RehydrateEnrollmentToken rebuilds a token's record from its stream.
func RehydrateEnrollmentToken(events []Recorded) (*EnrollmentToken, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	t := &EnrollmentToken{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *EnrollmentTokenIssued:
			t.id, t.secretHash, t.expiresAt, t.maxUses = ev.TokenID, ev.SecretHash, ev.ExpiresAt, ev.MaxUses
		case *EnrollmentTokenUsed:
			t.usedBy = append(t.usedBy, ev.NodeID)
		case *EnrollmentTokenRevoked:
			t.revoked = true
		default:
			return nil, fmt.Errorf("enrollment token: %w: %s", ErrUnknownEvent, r.Type)
		}
		t.version = r.StreamVersion
	}
	return t, nil
}

// Matches tells whether raw is this token (constant time in the hash).
func (t *EnrollmentToken) Matches(raw string) bool {
	return subtle.ConstantTimeCompare([]byte(HashEnrollmentSecret(raw)), []byte(t.secretHash)) == 1
}

// Enrolled tells whether this token enrolled node nodeID.
func (t *EnrollmentToken) Enrolled(nodeID string) bool {
	for _, n := range t.usedBy {
		if n == nodeID {
			return true
		}
	}
	return false
}

// Use decides enrolling node nodeID with this token at now.
func (t *EnrollmentToken) Use(nodeID string, now time.Time) (EnrollmentTokenUsed, error) {
	switch {
	case t.revoked:
		return EnrollmentTokenUsed{}, fmt.Errorf("enrollment token %s: %w", t.id, ErrEnrollmentTokenRevoked)
	case !now.Before(t.expiresAt):
		return EnrollmentTokenUsed{}, fmt.Errorf("enrollment token %s: %w (at %s)", t.id, ErrEnrollmentTokenExpired, t.expiresAt.Format(time.RFC3339))
	case len(t.usedBy) >= t.maxUses:
		return EnrollmentTokenUsed{}, fmt.Errorf("enrollment token %s: %w (%d of %d uses)", t.id, ErrEnrollmentTokenUsed, len(t.usedBy), t.maxUses)
	}
	return EnrollmentTokenUsed{TokenID: t.id, NodeID: nodeID, Use: len(t.usedBy) + 1}, nil
}

// Revoke decides a revocation.
func (t *EnrollmentToken) Revoke(reason string) (EnrollmentTokenRevoked, error) {
	if t.revoked {
		return EnrollmentTokenRevoked{}, fmt.Errorf("revoke enrollment token %s: %w: already revoked", t.id, ErrInvalidState)
	}
	if len(reason) > 512 || strings.IndexFunc(reason, unicode.IsControl) >= 0 {
		var p problems
		p.add("reason", "must be at most 512 bytes without control characters")
		return EnrollmentTokenRevoked{}, p.err()
	}
	return EnrollmentTokenRevoked{TokenID: t.id, Reason: reason}, nil
}

func (t *EnrollmentToken) ID() string           { return t.id }
func (t *EnrollmentToken) ExpiresAt() time.Time { return t.expiresAt }
func (t *EnrollmentToken) Revoked() bool        { return t.revoked }
func (t *EnrollmentToken) Uses() int            { return len(t.usedBy) }
func (t *EnrollmentToken) MaxUses() int         { return t.maxUses }
func (t *EnrollmentToken) Version() uint64      { return t.version }

func (EnrollmentTokenIssued) EventType() string  { return TypeEnrollmentTokenIssued }
func (EnrollmentTokenUsed) EventType() string    { return TypeEnrollmentTokenUsed }
func (EnrollmentTokenRevoked) EventType() string { return TypeEnrollmentTokenRevoked }
