package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// MaxLoginTTL bounds the lifetime of a user token a login mints (LogIn.TTL).
const MaxLoginTTL = 24 * time.Hour

// LogIn mints a user token for someone an identity provider vouched for (the caller verified its ID
// token) and records user.logged_in. It is not authorized through the RBAC view: the verified ID
// token is the authorization, and the token grants nothing a role or grant does not.
type LogIn struct {
	UserID string
	Name   string
	Issuer string
	Groups []string
	TTL    time.Duration
	// Host, for a browser login, binds the token to one host (domain.CheckLoginHost): a tunnel
	// host whose node sets it as a cookie, or the API's own. Empty: a token valid everywhere.
	Host string
}

func (LogIn) CommandName() string { return "LogIn" }

// LoginResult is a login's token (shown once, never recorded) and where it was recorded.
type LoginResult struct {
	Token     string
	TokenID   string
	ExpiresAt time.Time
	Position  uint64
}

// LogIn runs a login. The context's actor should be the user logging in (the record's actor).
func (s *Service) LogIn(ctx context.Context, c LogIn) (LoginResult, error) {
	key := s.TokenKey()
	if key == nil {
		return LoginResult{}, ErrNoTokenKey
	}
	if c.TTL <= 0 || c.TTL > MaxLoginTTL {
		return LoginResult{}, fmt.Errorf("log in: TTL %s is not within (0, %s]", c.TTL, MaxLoginTTL)
	}
	now := s.cfg.Now()
	// Validate before minting: the token must carry nothing the event could not.
	event := func(tokenID string, expires time.Time) (domain.UserLoggedIn, error) {
		if c.Host != "" {
			return domain.BrowserLogIn(c.UserID, c.Issuer, c.Groups, tokenID, expires, c.Host)
		}
		return domain.LogIn(c.UserID, c.Issuer, c.Groups, tokenID, expires)
	}
	if _, err := event("00000000-0000-0000-0000-000000000000", now.Add(c.TTL)); err != nil {
		return LoginResult{}, err
	}
	raw, claims, err := token.MintHostUserClaims(key, s.cfg.TokenIssuer, c.UserID, Bounded(c.Name, MaxNameBytes), c.Groups, c.Host, c.TTL, now)
	if err != nil {
		return LoginResult{}, err
	}
	ev, err := event(claims.ID, claims.ExpiresAt.Time)
	if err != nil {
		return LoginResult{}, err
	}
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), "", now)
	res, err := s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		return changed(claims.ID, domain.LoginStream(claims.ID), 0, ev), nil
	})
	if err != nil {
		return LoginResult{}, fmt.Errorf("log in: %w", err)
	}
	return LoginResult{Token: raw, TokenID: claims.ID, ExpiresAt: claims.ExpiresAt.Time, Position: res.Position}, nil
}
