package commands

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// TokenKeyOwner is the owner recorded for the control plane's token keys in the log.
const TokenKeyOwner = "control-plane"

// TokenKey is the key new tokens are signed with.
func (s *Service) TokenKey() *eventstore.SigningKey {
	s.tokenMu.RLock()
	defer s.tokenMu.RUnlock()
	return s.tokenKey
}

func (s *Service) setTokenKey(k *eventstore.SigningKey) {
	s.tokenMu.Lock()
	s.tokenKey = k
	s.tokenMu.Unlock()
}

func (s *Service) tokenKeyByID(id string) *eventstore.SigningKey {
	if k := s.TokenKey(); k != nil && (id == "" || k.ID() == id) {
		return k
	}
	k, err := s.cfg.TokenKeys.Load(context.Background(), id)
	if err != nil {
		return nil
	}
	return k
}

// EnsureTokenKey makes sure the control plane holds a token key registered (and in force) in the
// log: it uses one from TokenKeys that the log knows, or creates and registers a new one.
func (s *Service) EnsureTokenKey(ctx context.Context) (*eventstore.SigningKey, error) {
	keys, err := s.store.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	for _, k := range keys {
		if k.Purpose != eventstore.PurposeToken || k.ValidUntil != nil {
			continue
		}
		if key, err := s.cfg.TokenKeys.Load(ctx, k.KeyID); err == nil {
			s.setTokenKey(key)
			return key, nil
		}
	}
	key, err := s.cfg.TokenKeys.Create()
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	meta := metadata(ctx, "EnsureTokenKey", "", s.cfg.Now())
	if _, err := s.store.AddKey(ctx, meta, eventstore.PurposeToken, TokenKeyOwner, key); err != nil {
		return nil, fmt.Errorf("token key: register: %w", err)
	}
	s.setTokenKey(key)
	return key, nil
}

// GrantDirect assigns a role without an authorization check. It exists for bootstrap by an
// operator with access to the control plane's database and keys (`tunnelplane admin token create`),
// never for requests.
func (s *Service) GrantDirect(ctx context.Context, c AssignRole) (Result, error) {
	return s.assignRole(ctx, c)
}
