package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"
	"unicode"
)

// MaxAccessKeyTTL bounds how long a tunnel access key may live.
const MaxAccessKeyTTL = 365 * 24 * time.Hour

// MaxAccessKeyCIDRs bounds a key's source allow-list (nodes check it on every request).
const MaxAccessKeyCIDRs = 32

// AccessKeyPrefix starts every access key secret: the ingress tells one from a user token by it,
// and a secret scanner can find leaked ones.
const AccessKeyPrefix = "tpk_"

// HashAccessKey is what the log keeps of an access key secret: its SHA-256, in hex. The secret
// is 256 bits from a signature, so a plain hash is enough (nothing to guess from).
func HashAccessKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// AccessKeyStream is the stream of one access key.
func AccessKeyStream(keyID string) string { return "accesskey-" + keyID }

// AccessKey is the record of a credential that calls one tunnel, or the tunnels of its
// organization whose labels match its selector, and nothing else.
type AccessKey struct {
	id, orgID, tunnelID string
	issuedBy            string
	selector            map[string]string
	expiresAt           time.Time
	revoked             bool
	version             uint64
}

// NewAccessKey is the input of IssueAccessKey.
type NewAccessKey struct {
	KeyID, IssuedBy string
	// SecretHash is HashAccessKey of the secret (never the secret).
	SecretHash string
	Now        time.Time
	TTL        time.Duration
	// CIDRs, when not empty, are the only source addresses the key is accepted from.
	CIDRs []string
	// RateTier names a rate tier (kept for later; not enforced yet).
	RateTier string
	// DerivedFrom is the id of the token key the secret was derived from: whoever holds that
	// key can derive the secret, so nodes refuse the access key once that key is revoked.
	DerivedFrom string
}

// IssueAccessKey decides issuing an access key for an active tunnel.
func IssueAccessKey(t *Tunnel, in NewAccessKey) (AccessKeyIssued, error) {
	ev, err := checkNewAccessKey(in)
	if err != nil {
		return AccessKeyIssued{}, err
	}
	if t.State() != TunnelActive {
		return AccessKeyIssued{}, fmt.Errorf("issue access key: %w: tunnel %s is %s", ErrInvalidState, t.ID(), t.State())
	}
	ev.OrgID, ev.TunnelID = t.OrgID(), t.ID()
	return ev, nil
}

// IssueLabelAccessKey decides issuing an access key that calls the tunnels of orgID whose labels
// match selector (CheckLabels), those labelled so later included, while they do.
func IssueLabelAccessKey(orgID string, selector map[string]string, in NewAccessKey) (AccessKeyIssued, error) {
	ev, err := checkNewAccessKey(in)
	var p problems
	checkID(&p, "org_id", orgID)
	if serr := CheckLabels(selector, true); serr != nil {
		p.add("selector", "%s", serr.Error())
	}
	if err != nil {
		return AccessKeyIssued{}, err
	}
	if err := p.err(); err != nil {
		return AccessKeyIssued{}, err
	}
	ev.OrgID, ev.Selector = orgID, maps.Clone(selector)
	return ev, nil
}

// checkNewAccessKey validates what every access key needs and returns its event without its scope.
func checkNewAccessKey(in NewAccessKey) (AccessKeyIssued, error) {
	var p problems
	checkID(&p, "key_id", in.KeyID)
	checkUser(&p, "issued_by", in.IssuedBy)
	if in.TTL < time.Second || in.TTL > MaxAccessKeyTTL {
		p.add("ttl", "must be between 1s and %s", MaxAccessKeyTTL)
	}
	if len(in.SecretHash) != 64 || strings.Trim(in.SecretHash, "0123456789abcdef") != "" {
		p.add("secret_hash", "must be a SHA-256 in lower-case hex")
	}
	cidrs, err := CanonicalCIDRs(in.CIDRs)
	if err != nil {
		p.add("cidrs", "%s", err.Error())
	}
	if len(in.DerivedFrom) > 256 || strings.IndexFunc(in.DerivedFrom, unicode.IsControl) >= 0 {
		p.add("derived_from", "must be a key id")
	}
	if in.RateTier != "" && !ValidName(in.RateTier) {
		p.add("rate_tier", "must be 1-63 lower-case letters, digits or inner hyphens")
	}
	if err := p.err(); err != nil {
		return AccessKeyIssued{}, err
	}
	return AccessKeyIssued{KeyID: in.KeyID, SecretHash: in.SecretHash,
		ExpiresAt: in.Now.Add(in.TTL).UTC().Truncate(time.Second), CIDRs: cidrs, RateTier: in.RateTier, DerivedFrom: in.DerivedFrom, IssuedBy: in.IssuedBy}, nil
}

// CanonicalCIDRs parses a source allow-list (prefixes like 10.0.0.0/8, or single addresses) into
// canonical prefixes; an empty list allows every source.
func CanonicalCIDRs(in []string) ([]string, error) {
	if len(in) > MaxAccessKeyCIDRs {
		return nil, fmt.Errorf("at most %d entries", MaxAccessKeyCIDRs)
	}
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if len(s) > 64 || strings.IndexFunc(s, unicode.IsControl) >= 0 {
			return nil, fmt.Errorf("%q is not a CIDR prefix", s)
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a CIDR prefix like 10.0.0.0/8 or an address", s)
			}
			pfx = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, pfx.Masked().String())
	}
	return out, nil
}

// AccessKeyAllows tells whether a key with the allow-list cidrs (canonical, as the event holds
// it) accepts a caller from addr. An empty list accepts every source; an address that cannot be
// parsed is refused by a non-empty one.
func AccessKeyAllows(cidrs []netip.Prefix, addr netip.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range cidrs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// RehydrateAccessKey rebuilds an access key record from its stream.
func RehydrateAccessKey(events []Recorded) (*AccessKey, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	a := &AccessKey{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *AccessKeyIssued:
			a.id, a.orgID, a.tunnelID, a.selector, a.expiresAt, a.issuedBy = ev.KeyID, ev.OrgID, ev.TunnelID, ev.Selector, ev.ExpiresAt, ev.IssuedBy
		case *AccessKeyRevoked:
			a.revoked = true
		default:
			return nil, fmt.Errorf("access key: %w: %s", ErrUnknownEvent, r.Type)
		}
		a.version = r.StreamVersion
	}
	return a, nil
}

// Revoke decides a revocation.
func (a *AccessKey) Revoke(reason string) (AccessKeyRevoked, error) {
	if a.revoked {
		return AccessKeyRevoked{}, fmt.Errorf("revoke access key %s: %w: already revoked", a.id, ErrInvalidState)
	}
	if len(reason) > 512 || strings.IndexFunc(reason, unicode.IsControl) >= 0 {
		var p problems
		p.add("reason", "must be at most 512 bytes without control characters")
		return AccessKeyRevoked{}, p.err()
	}
	return AccessKeyRevoked{KeyID: a.id, OrgID: a.orgID, TunnelID: a.tunnelID, Reason: reason}, nil
}

func (a *AccessKey) ID() string       { return a.id }
func (a *AccessKey) OrgID() string    { return a.orgID }
func (a *AccessKey) IssuedBy() string { return a.issuedBy }
func (a *AccessKey) TunnelID() string { return a.tunnelID }

// Selector is the label selector of a key scoped by labels (nil for a key of one tunnel).
func (a *AccessKey) Selector() map[string]string { return a.selector }
func (a *AccessKey) ExpiresAt() time.Time        { return a.expiresAt }
func (a *AccessKey) Revoked() bool               { return a.revoked }
func (a *AccessKey) Version() uint64             { return a.version }
