package commands

import (
	"context"
	"encoding/base64"
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
	key, err := s.mintingKey(ctx)
	if err != nil {
		return Result{}, err
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
	issuer := ActorFrom(ctx).ID
	in := domain.NewAgentToken{TokenID: tokenID, OrgID: c.OrgID, TunnelID: c.TunnelID, KeyID: key.ID(), IssuedBy: issuer, Now: now, TTL: c.TTL}
	if s.cfg.Sealing != nil && issuer != "" {
		pub, gen, err := s.cfg.Sealing.SealingKey(ctx, issuer)
		if err != nil {
			return Result{}, fmt.Errorf("issue agent token: sealing key of the issuer: %w", err)
		}
		in.SealKey, in.SealGen = base64.StdEncoding.EncodeToString(pub), gen
	}
	ev, err := domain.IssueAgentToken(t, in)
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

// SealingKeys hands out the public half of a subject's sealing key pair and its generation
// (*pii.Keyring), made on first need.
type SealingKeys interface {
	SealingKey(ctx context.Context, subject string) (pub []byte, gen int, err error)
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
	// Revoking disconnects the tunnel's agent: it needs the right to use the tunnel, as issuing does.
	return revokeTunnelCredential(s, ctx, c.CommandName(), "agent token", c.OrgID, c.TokenID, domain.AgentTokenStream(c.TokenID),
		domain.RehydrateAgentToken, func(a *domain.AgentToken) (domain.Event, error) { return a.Revoke(c.Reason) })
}

// tunnelCredential is what an agent token and an access key have in common: a revocable
// credential of one tunnel of an organization.
type tunnelCredential interface {
	OrgID() string
	TunnelID() string
	Version() uint64
}

// revokeTunnelCredential revokes the credential id of orgID (what names its kind in errors),
// which needs the right to use its tunnel, decided before the credential's state so that a
// refusal tells nothing about it. A credential of another organization is not found.
func revokeTunnelCredential[C tunnelCredential](s *Service, ctx context.Context, command, what, orgID, id, stream string,
	rehydrate func([]domain.Recorded) (C, error), revoke func(C) (domain.Event, error)) (Result, error) {
	g := newIDGen(ctx, command)
	meta := metadata(ctx, command, orgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		if !domain.ValidID(id) {
			return decision{}, fmt.Errorf("%s %q: %w", what, id, domain.ErrNotFound)
		}
		recs, err := s.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		cred, err := rehydrate(recs)
		if err != nil {
			return decision{}, err
		}
		if cred.OrgID() != orgID {
			return decision{}, fmt.Errorf("%s %s: %w", what, id, domain.ErrNotFound)
		}
		if cred.TunnelID() == "" {
			// An access key scoped by labels: revoking it takes the right issuing it took.
			if err := s.authz.CheckOrgTunnelUse(ctx, orgID); err != nil {
				return decision{}, err
			}
		} else {
			t, err := s.loadTunnel(ctx, orgID, cred.TunnelID())
			if err != nil {
				return decision{}, err
			}
			if err := s.authz.CheckTunnelUse(ctx, orgID, t.ID(), t.Owner()); err != nil {
				return decision{}, err
			}
		}
		ev, err := revoke(cred)
		if err != nil {
			return decision{}, err
		}
		return changed(id, stream, cred.Version(), ev), nil
	})
}
