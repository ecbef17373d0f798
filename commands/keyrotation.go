package commands

import (
	"context"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// RotateSigningKey replaces the log key or the token key by a fresh one.
type RotateSigningKey struct {
	Purpose string `json:"purpose"`
}

func (RotateSigningKey) CommandName() string { return "RotateSigningKey" }
func (RotateSigningKey) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjKeys, Action: ActRotate}
}

// rotateSigningKey is not a decideAndAppend: keys have no aggregate stream of ours; a rotation is
// a record of the log's own "$log" stream, which the store writes and checks itself.
func (s *Service) rotateSigningKey(ctx context.Context, c RotateSigningKey) (Result, error) {
	purpose, err := domain.ParseKeyPurpose(c.Purpose)
	if err != nil {
		return Result{}, err
	}
	// The "$log" record says who rotated, under which correlation and request ids, as every
	// other record does.
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	switch purpose {
	case domain.KeyPurposeLog:
		current, err := eventstore.LogKeyID(ctx, s.cfg.Pool)
		if err != nil {
			return Result{}, err
		}
		next, err := s.cfg.LogKeys.CreateKey(ctx)
		if err != nil {
			return Result{}, err
		}
		if err := domain.CheckRotation(purpose, current, next.ID()); err != nil {
			return Result{}, err
		}
		res, err := s.store.RotateLogKey(ctx, meta, next)
		if err != nil {
			return Result{}, conflict(err)
		}
		return Result{ID: next.ID(), Position: res.LastPosition}, nil
	default:
		old := s.TokenKey()
		if old == nil {
			return Result{}, ErrNoTokenKey
		}
		next, err := s.cfg.TokenKeys.CreateKey(ctx)
		if err != nil {
			return Result{}, err
		}
		if err := domain.CheckRotation(purpose, old.ID(), next.ID()); err != nil {
			return Result{}, err
		}
		res, err := s.store.RotateKey(ctx, meta, eventstore.PurposeToken, TokenKeyOwner, old, next)
		if err != nil {
			return Result{}, conflict(err)
		}
		s.setTokenKey(next)
		return Result{ID: next.ID(), Position: res.LastPosition}, nil
	}
}
