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

// mintingKey is the key a token is signed with now. Token keys in a store other replicas share
// (eventstore.SealedKeys) may have been rotated by another: the key in force is read from the
// log, and loaded when it is not the one held.
func (s *Service) mintingKey(ctx context.Context) (*eventstore.SigningKey, error) {
	key := s.TokenKey()
	if key == nil {
		return nil, ErrNoTokenKey
	}
	if _, own := s.cfg.TokenKeys.(eventstore.KeyDir); own || s.cfg.TokenKeys == nil {
		return key, nil
	}
	keys, err := s.store.Keys(ctx)
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	inForce := ""
	for _, k := range keys {
		if k.Purpose != eventstore.PurposeToken || k.ValidUntil != nil {
			continue
		}
		if k.KeyID == key.ID() {
			return key, nil
		}
		inForce = k.KeyID
	}
	if inForce != "" {
		next, err := s.cfg.TokenKeys.Load(ctx, inForce)
		if err != nil {
			return nil, fmt.Errorf("token key %s, rotated by another replica: %w", inForce, err)
		}
		s.setTokenKey(next)
		return next, nil
	}
	return key, nil
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
	key, err := s.cfg.TokenKeys.CreateKey(ctx)
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
