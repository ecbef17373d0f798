package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// EnrollmentTokenActor is the actor of what a node enrollment token did (the metadata of its
// node.enrolled): "enrollment-token:<id>".
func EnrollmentTokenActor(tokenID string) string { return "enrollment-token:" + tokenID }

// IssueEnrollmentToken issues a credential that enrolls data-plane nodes and nothing else. The
// token is returned once (Result.Secret); the log keeps its hash.
type IssueEnrollmentToken struct {
	TTL     time.Duration `json:"ttl"`
	MaxUses int           `json:"max_uses"`
}

func (IssueEnrollmentToken) CommandName() string { return "IssueEnrollmentToken" }
func (IssueEnrollmentToken) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActIssue}
}

func (s *Service) issueEnrollmentToken(ctx context.Context, c IssueEnrollmentToken) (Result, error) {
	// Derived from the token key like an access key's secret, so that a replay of the same
	// Idempotency-Key shows it again without it ever being stored.
	key, err := s.mintingKey(ctx)
	if err != nil {
		return Result{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	tokenID := g.next().String()
	raw, err := token.EnrollmentTokenSecret(key, tokenID)
	if err != nil {
		return Result{}, err
	}
	now := s.cfg.Now()
	ev, err := domain.IssueEnrollmentToken(domain.NewEnrollmentToken{TokenID: tokenID, IssuedBy: ActorFrom(ctx).ID,
		SecretHash: domain.HashEnrollmentSecret(raw), Now: now, TTL: c.TTL, MaxUses: c.MaxUses, DerivedFrom: key.ID()})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), "", now)
	claims := func(res *Result) {
		exp, iat := ev.ExpiresAt, now
		res.ExpiresAt, res.IssuedAt, res.KeyID = &exp, &iat, key.ID()
	}
	res, err := s.decideAndAppend(withResultDecoration(ctx, claims), g, meta, failOnConflict, func() (decision, error) {
		return changed(tokenID, domain.EnrollmentTokenStream(tokenID), 0, ev), nil
	})
	if err != nil {
		return Result{}, err
	}
	claims(&res)
	res.Secret = raw
	return res, nil
}

// RevokeEnrollmentToken makes an enrollment token unusable. Nodes it enrolled stay enrolled
// (remove them with RemoveNode).
type RevokeEnrollmentToken struct {
	TokenID string `json:"token_id"`
	Reason  string `json:"reason,omitempty"`
}

func (RevokeEnrollmentToken) CommandName() string { return "RevokeEnrollmentToken" }
func (RevokeEnrollmentToken) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActRevoke}
}

func (s *Service) revokeEnrollmentToken(ctx context.Context, c RevokeEnrollmentToken) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		if !domain.ValidID(c.TokenID) {
			return decision{}, fmt.Errorf("enrollment token %q: %w", c.TokenID, domain.ErrNotFound)
		}
		recs, err := s.load(ctx, domain.EnrollmentTokenStream(c.TokenID))
		if err != nil {
			return decision{}, err
		}
		t, err := domain.RehydrateEnrollmentToken(recs)
		if err != nil {
			return decision{}, fmt.Errorf("enrollment token %s: %w", c.TokenID, err)
		}
		ev, err := t.Revoke(c.Reason)
		if err != nil {
			return decision{}, err
		}
		return changed(t.ID(), domain.EnrollmentTokenStream(t.ID()), t.Version(), ev), nil
	})
}

// EnrollNodeWithToken enrolls a node with a node enrollment token instead of a user's right to
// enroll nodes: the token is its only authorization. Its use is appended to the token's stream
// in the enrollment's transaction, at the version it was decided on, so the log refuses a use
// beyond the token's uses even from another process.
type EnrollNodeWithToken struct {
	// Token is the enrollment token as the node presented it ("tpe_…"). Never logged or echoed.
	Token string `json:"-"`
	Node  EnrollNode
}

func (EnrollNodeWithToken) CommandName() string { return "EnrollNodeWithToken" }

// Permission is what the token stands in for; the handler is not decorated with the policy check
// (an enrollment token holds no role), it checks the token.
func (EnrollNodeWithToken) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActEnroll}
}

// refusedToken is how a refused enrollment token is answered: unauthenticated, naming why.
func refusedToken(err error) error { return fmt.Errorf("%w: %w", ErrUnauthenticated, err) }

func (s *Service) enrollNodeWithToken(ctx context.Context, c EnrollNodeWithToken) (Result, error) {
	id, ok := domain.ParseEnrollmentToken(c.Token)
	if !ok {
		return Result{}, refusedToken(domain.ErrEnrollmentTokenInvalid)
	}
	a := ActorFrom(ctx)
	a.ID = EnrollmentTokenActor(id)
	ctx = WithActor(ctx, a)
	g := newIDGen(ctx, c.CommandName())
	now := s.cfg.Now()
	meta := metadata(ctx, c.Node.CommandName(), "", now)
	stream := domain.EnrollmentTokenStream(id)
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		recs, err := s.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		t, err := domain.RehydrateEnrollmentToken(recs)
		if errors.Is(err, domain.ErrNotFound) {
			return decision{}, refusedToken(domain.ErrEnrollmentTokenInvalid)
		} else if err != nil {
			return decision{}, err
		}
		if !t.Matches(c.Token) {
			return decision{}, refusedToken(domain.ErrEnrollmentTokenInvalid)
		}
		ev, existing, err := s.decideEnrollment(ctx, c.Node)
		if err != nil || existing != nil {
			// A node enrolls again at every start, when the token may have expired or been used
			// up: the same node with the same key changes nothing.
			return unchangedNode(existing), err
		}
		used, err := t.Use(c.Node.NodeID, now)
		if err != nil {
			return decision{}, refusedToken(err)
		}
		d := changed(c.Node.NodeID, domain.NodeStream(c.Node.NodeID), 0, ev).and(stream, t.Version(), used)
		return s.enrollment(meta, c.Node, d), nil
	})
}

// tokenAuthenticated decorates a handler whose command carries its own credential: logging only
// (no policy check, no idempotency record: a repeated enrollment is a no-op by itself).
func tokenAuthenticated[C Command](s *Service, core Handler[C]) Handler[C] {
	return logged[C](s, core)
}
