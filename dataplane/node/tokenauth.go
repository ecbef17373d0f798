package node

import (
	"context"
	"fmt"

	"github.com/tunnelplane/tunnelplane/commands/token"
)

// TokenAuthenticator is the Authenticator for agent tokens minted by commands/token: it checks
// them offline against the token keys and asks Revoked about their ids.
type TokenAuthenticator struct {
	Verifier *token.Verifier
	// Revoked reports whether a token id has been revoked (nil: none has).
	Revoked func(tokenID string) bool
}

// AuthenticateAgent implements Authenticator.
func (a TokenAuthenticator) AuthenticateAgent(_ context.Context, raw string) (AgentIdentity, error) {
	c, err := a.Verifier.VerifyAgent(raw)
	if err != nil {
		return AgentIdentity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if a.Revoked != nil && a.Revoked(c.ID) {
		return AgentIdentity{}, fmt.Errorf("%w: %w: token %s", ErrUnauthenticated, ErrTokenRevoked, c.ID)
	}
	id := AgentIdentity{OrgID: c.Org, TunnelID: c.Tunnel, TokenID: c.ID}
	if c.ExpiresAt != nil {
		id.ExpiresAt = c.ExpiresAt.Time
	}
	return id, nil
}
