package domain

import (
	"fmt"
	"time"
)

// MaxAgentTokenTTL bounds how long an agent token may live.
const MaxAgentTokenTTL = 365 * 24 * time.Hour

// AgentToken is the record of a credential an agent uses for one tunnel.
type AgentToken struct {
	id, orgID, tunnelID string
	expiresAt           time.Time
	revoked             bool
	version             uint64
}

// NewAgentToken is the input of IssueAgentToken.
type NewAgentToken struct {
	TokenID, OrgID, TunnelID, KeyID, IssuedBy string
	Now                                       time.Time
	TTL                                       time.Duration
	// SealKey and SealGen: the issuer's sealing key (AgentTokenIssued), optional.
	SealKey string
	SealGen int
}

// IssueAgentToken decides issuing a token for an active tunnel.
func IssueAgentToken(t *Tunnel, in NewAgentToken) (AgentTokenIssued, error) {
	var p problems
	checkID(&p, "token_id", in.TokenID)
	checkUser(&p, "issued_by", in.IssuedBy)
	if in.TTL <= 0 || in.TTL > MaxAgentTokenTTL {
		p.add("ttl", "must be between 1s and %s", MaxAgentTokenTTL)
	}
	if in.KeyID == "" {
		p.add("key_id", "is required")
	}
	if (in.SealKey == "") != (in.SealGen == 0) || in.SealGen < 0 || len(in.SealKey) > 64 {
		p.add("seal_key", "and seal_gen go together (a base64 X25519 key and a generation from 1)")
	}
	if err := p.err(); err != nil {
		return AgentTokenIssued{}, err
	}
	if t.State() != TunnelActive {
		return AgentTokenIssued{}, fmt.Errorf("issue agent token: %w: tunnel %s is %s", ErrInvalidState, t.ID(), t.State())
	}
	return AgentTokenIssued{TokenID: in.TokenID, OrgID: t.OrgID(), TunnelID: t.ID(), ExpiresAt: in.Now.Add(in.TTL).UTC().Truncate(time.Second),
		KeyID: in.KeyID, IssuedBy: in.IssuedBy, SealKey: in.SealKey, SealGen: in.SealGen}, nil
}

// RehydrateAgentToken rebuilds a token record from its stream.
func RehydrateAgentToken(events []Recorded) (*AgentToken, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	a := &AgentToken{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *AgentTokenIssued:
			a.id, a.orgID, a.tunnelID, a.expiresAt = ev.TokenID, ev.OrgID, ev.TunnelID, ev.ExpiresAt
		case *AgentTokenRevoked:
			a.revoked = true
		default:
			return nil, fmt.Errorf("agent token: %w: %s", ErrUnknownEvent, r.Type)
		}
		a.version = r.StreamVersion
	}
	return a, nil
}

// Revoke decides a revocation.
func (a *AgentToken) Revoke(reason string) (AgentTokenRevoked, error) {
	if a.revoked {
		return AgentTokenRevoked{}, fmt.Errorf("revoke agent token %s: %w: already revoked", a.id, ErrInvalidState)
	}
	return AgentTokenRevoked{TokenID: a.id, OrgID: a.orgID, TunnelID: a.tunnelID, Reason: reason}, nil
}

func (a *AgentToken) ID() string           { return a.id }
func (a *AgentToken) OrgID() string        { return a.orgID }
func (a *AgentToken) TunnelID() string     { return a.tunnelID }
func (a *AgentToken) ExpiresAt() time.Time { return a.expiresAt }
func (a *AgentToken) Revoked() bool        { return a.revoked }
func (a *AgentToken) Version() uint64      { return a.version }
