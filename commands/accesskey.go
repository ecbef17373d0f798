package commands

import (
	"context"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// IssueAccessKey issues a credential that calls one tunnel (TunnelID), or every tunnel of the
// organization whose labels match Selector at the time of the call (Selector, no TunnelID), and
// nothing else. The secret is returned once (Result.Secret); the log keeps its hash.
type IssueAccessKey struct {
	OrgID    string            `json:"org_id"`
	TunnelID string            `json:"tunnel_id,omitempty"`
	Selector map[string]string `json:"selector,omitempty"`
	TTL      time.Duration     `json:"ttl"`
	CIDRs    []string          `json:"cidrs,omitempty"`
	RateTier string            `json:"rate_tier,omitempty"`
}

func (IssueAccessKey) CommandName() string { return "IssueAccessKey" }
func (c IssueAccessKey) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAccessKeys, Action: ActIssue}
}

func (s *Service) issueAccessKey(ctx context.Context, c IssueAccessKey) (Result, error) {
	// The secret is derived from the token key (token.AccessKeySecret), so that a replay of the
	// same Idempotency-Key shows it again without it ever being stored.
	key, err := s.mintingKey(ctx)
	if err != nil {
		return Result{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	keyID := g.next().String()
	secret, err := token.AccessKeySecret(key, keyID)
	if err != nil {
		return Result{}, err
	}
	now := s.cfg.Now()
	in := domain.NewAccessKey{KeyID: keyID, IssuedBy: ActorFrom(ctx).ID, SecretHash: domain.HashAccessKey(secret),
		Now: now, TTL: c.TTL, CIDRs: c.CIDRs, RateTier: c.RateTier, DerivedFrom: key.ID()}
	var ev domain.AccessKeyIssued
	switch {
	case c.Selector != nil && c.TunnelID != "":
		return Result{}, &domain.ValidationError{Fields: []domain.FieldError{{Field: "selector", Message: "a key is for one tunnel or for a label selector, not both"}}}
	case c.Selector != nil:
		// The key calls every tunnel labelled to match, later ones included: issuing it needs the
		// right to call every tunnel of the organization.
		if err := s.authz.CheckOrgTunnelUse(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
		ev, err = domain.IssueLabelAccessKey(c.OrgID, c.Selector, in)
	default:
		t, lerr := s.loadTunnel(ctx, c.OrgID, c.TunnelID)
		if lerr != nil {
			return Result{}, lerr
		}
		// A key calls the tunnel: issuing one needs the right to call it, beside access_keys:issue,
		// or an operator could hand out calls to tunnels it may not call itself.
		if err := s.authz.CheckTunnelUse(ctx, c.OrgID, t.ID(), t.Owner()); err != nil {
			return Result{}, err
		}
		ev, err = domain.IssueAccessKey(t, in)
	}
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, now)
	claims := func(res *Result) {
		exp, iat := ev.ExpiresAt, now
		res.ExpiresAt, res.IssuedAt, res.KeyID = &exp, &iat, key.ID()
	}
	res, err := s.decideAndAppend(withResultDecoration(ctx, claims), g, meta, failOnConflict, func() (decision, error) {
		return changed(keyID, domain.AccessKeyStream(keyID), 0, ev), nil
	})
	if err != nil {
		return Result{}, err
	}
	claims(&res)
	res.Secret = secret
	return res, nil
}

// RevokeAccessKey makes an access key unusable; nodes refuse it as soon as the revocation
// reaches their view.
type RevokeAccessKey struct {
	OrgID  string `json:"org_id"`
	KeyID  string `json:"key_id"`
	Reason string `json:"reason,omitempty"`
}

func (RevokeAccessKey) CommandName() string { return "RevokeAccessKey" }
func (c RevokeAccessKey) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAccessKeys, Action: ActRevoke}
}

func (s *Service) revokeAccessKey(ctx context.Context, c RevokeAccessKey) (Result, error) {
	// The same right as issuing. A deleted tunnel's keys need no revoking (they call nothing).
	return revokeTunnelCredential(s, ctx, c.CommandName(), "access key", c.OrgID, c.KeyID, domain.AccessKeyStream(c.KeyID),
		domain.RehydrateAccessKey, func(a *domain.AccessKey) (domain.Event, error) { return a.Revoke(c.Reason) })
}
