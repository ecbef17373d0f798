package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// IssueAgentToken mints a credential for one tunnel. The token is returned once.
type IssueAgentToken struct {
	OrgID    string        `json:"org_id"`
	TunnelID string        `json:"tunnel_id"`
	TTL      time.Duration `json:"ttl"`
}

func (IssueAgentToken) CommandName() string { return "IssueAgentToken" }
func (c IssueAgentToken) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTokens, Action: ActIssue}
}

func (s *Service) issueAgentToken(ctx context.Context, c IssueAgentToken) (Result, error) {
	key := s.TokenKey()
	if key == nil {
		return Result{}, ErrNoTokenKey
	}
	g := newIDGen(ctx, c.CommandName())
	t, err := s.loadTunnel(ctx, c.OrgID, c.TunnelID)
	if err != nil {
		return Result{}, err
	}
	// Whoever holds the agent token decides where the tunnel's callers' requests go: issuing one
	// needs the right to use the tunnel, not only tokens:issue.
	if err := s.authz.CheckTunnelUse(ctx, c.OrgID, t.ID(), t.Owner()); err != nil {
		return Result{}, err
	}
	tokenID := g.next().String()
	now := s.cfg.Now()
	ev, err := domain.IssueAgentToken(t, domain.NewAgentToken{TokenID: tokenID, OrgID: c.OrgID, TunnelID: c.TunnelID, KeyID: key.ID(),
		IssuedBy: ActorFrom(ctx).ID, Now: now, TTL: c.TTL})
	if err != nil {
		return Result{}, err
	}
	// Decided once, before the append: the token's stream is new (never retried), and the
	// decision's time is also the token's iat and the event's occurred_at.
	meta := metadata(ctx, c.CommandName(), c.OrgID, now)
	claims := func(res *Result) {
		exp, iat := ev.ExpiresAt, now
		res.ExpiresAt, res.IssuedAt, res.KeyID = &exp, &iat, key.ID()
	}
	// The result recorded with the event carries the claims, so a replay after a crash re-mints.
	res, err := s.decideAndAppend(withResultDecoration(ctx, claims), g, meta, failOnConflict, func() (decision, error) {
		return changed(tokenID, domain.AgentTokenStream(tokenID), 0, ev), nil
	})
	if err != nil {
		return Result{}, err
	}
	raw, err := token.MintAgent(key, s.cfg.TokenIssuer, tokenID, c.OrgID, c.TunnelID, ev.ExpiresAt, now)
	if err != nil {
		return Result{}, err
	}
	claims(&res)
	res.Token = raw
	return res, nil
}

// RevokeAgentToken makes a token unusable; nodes drop agents using it.
type RevokeAgentToken struct {
	OrgID   string `json:"org_id"`
	TokenID string `json:"token_id"`
	Reason  string `json:"reason,omitempty"`
}

func (RevokeAgentToken) CommandName() string { return "RevokeAgentToken" }
func (c RevokeAgentToken) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTokens, Action: ActRevoke}
}

func (s *Service) revokeAgentToken(ctx context.Context, c RevokeAgentToken) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		if !domain.ValidID(c.TokenID) {
			return decision{}, fmt.Errorf("agent token %q: %w", c.TokenID, domain.ErrNotFound)
		}
		recs, err := s.load(ctx, domain.AgentTokenStream(c.TokenID))
		if err != nil {
			return decision{}, err
		}
		a, err := domain.RehydrateAgentToken(recs)
		if err != nil {
			return decision{}, err
		}
		if a.OrgID() != c.OrgID {
			return decision{}, fmt.Errorf("agent token %s: %w", c.TokenID, domain.ErrNotFound)
		}
		// Revoking disconnects the tunnel's agent: it needs the right to use the tunnel, as issuing
		// does. Decided before the token's state, so a refusal tells nothing about it.
		t, err := s.loadTunnel(ctx, c.OrgID, a.TunnelID())
		if err != nil {
			return decision{}, err
		}
		if err := s.authz.CheckTunnelUse(ctx, c.OrgID, t.ID(), t.Owner()); err != nil {
			return decision{}, err
		}
		ev, err := a.Revoke(c.Reason)
		if err != nil {
			return decision{}, err
		}
		return changed(c.TokenID, domain.AgentTokenStream(c.TokenID), a.Version(), ev), nil
	})
}
