package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/domain"
)

// DefaultLoginTTL is Config.LoginTTL's default: a working day, as `admin token create`'s.
const DefaultLoginTTL = 12 * time.Hour

// maxLoginsAtOnce bounds the ID tokens verified at once: the route is unauthenticated, and a
// token naming an unknown key makes the provider's keys be fetched again.
const maxLoginsAtOnce = 16

// ErrOIDCNotConfigured: the control plane was started without --oidc-issuer.
var ErrOIDCNotConfigured = fmt.Errorf("%w: interactive login is not configured on this control plane (--oidc-issuer, --oidc-client-id)", domain.ErrNotFound)

// OIDCSettings is GET /api/v1/auth/oidc: what a client needs to log in at the provider.
type OIDCSettings struct {
	Issuer   string `json:"issuer"`
	ClientID string `json:"client_id"`
}

// OIDCLoginInput is the body of POST /api/v1/auth/oidc/token.
type OIDCLoginInput struct {
	IDToken string `json:"id_token"`
}

// OIDCLogin is a login's answer: the user token (shown once) and whom it names.
type OIDCLogin struct {
	Token     string    `json:"token"`
	TokenType string    `json:"token_type"`
	ExpiresAt time.Time `json:"expires_at"`
	UserID    string    `json:"user_id"`
	Name      string    `json:"name,omitempty"`
	Groups    []string  `json:"groups,omitempty"`
	Position  uint64    `json:"position"`
}

// loginSlot takes one of the maxLoginsAtOnce slots of logins being verified (429 when none is
// free); release gives it back.
func (s *Server) loginSlot() (release func(), err error) {
	select {
	case s.logins <- struct{}{}:
		return func() { <-s.logins }, nil
	default:
		return nil, echo.NewHTTPError(http.StatusTooManyRequests, fmt.Sprintf("more than %d logins at once; retry in a moment", maxLoginsAtOnce))
	}
}

func (s *Server) oidcSettings(c echo.Context) error {
	if s.cfg.OIDC == nil {
		return ErrOIDCNotConfigured
	}
	return c.JSON(http.StatusOK, OIDCSettings{Issuer: s.cfg.OIDC.Issuer(), ClientID: s.cfg.OIDC.ClientID()})
}

// oidcLogin exchanges an ID token of the configured provider for a user token. A refusal is a
// 401 that says why in words of its own (never the token), and is audited as a failed login.
func (s *Server) oidcLogin(c echo.Context) error {
	if s.cfg.OIDC == nil {
		return ErrOIDCNotConfigured
	}
	var in OIDCLoginInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	req := c.Request()
	ip, ua := commands.Bounded(c.RealIP(), commands.MaxAddrBytes), commands.Bounded(req.UserAgent(), commands.MaxUserAgentBytes)
	release, err := s.loginSlot()
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithTimeout(req.Context(), 15*time.Second)
	defer cancel()
	id, err := s.cfg.OIDC.Verify(ctx, in.IDToken)
	if err == nil {
		err = s.cfg.IDTokens.Claim(ctx, in.IDToken, id.ExchangeableUntil)
	}
	if err != nil {
		if errors.Is(err, oidcauth.ErrRefused) {
			s.auth.auditor.AuthFailed("oidc_id_token_refused", "", ip, ua)
			return &authError{code: "invalid_token", detail: err.Error()}
		}
		return err
	}
	ids := requestIDsFrom(c)
	actor := commands.Actor{ID: id.UserID, ClientIP: ip, UserAgent: ua, RequestID: ids.request, CorrelationID: ids.correlation}.Bounded()
	c.Set(actorKey, actor)
	res, err := s.cfg.Service.LogIn(commands.WithActor(req.Context(), actor),
		commands.LogIn{UserID: id.UserID, Name: id.Name, Issuer: id.Issuer, Groups: id.Groups, TTL: s.cfg.LoginTTL})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, OIDCLogin{Token: res.Token, TokenType: "Bearer", ExpiresAt: res.ExpiresAt.UTC(), UserID: id.UserID,
		Name: id.Name, Groups: id.Groups, Position: res.Position})
}
