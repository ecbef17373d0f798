package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/browserlogin"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// BrowserLoginStore keeps the browser logins under way (a *browserlogin.Store): any replica
// finishes a login another began, and each once.
type BrowserLoginStore interface {
	Put(ctx context.Context, state string, p browserlogin.Pending) error
	Take(ctx context.Context, state string) (browserlogin.Pending, error)
}

// Browser login: the authorization code flow with PKCE (RFC 7636, S256) at the configured
// provider, ending in a cookie that holds a user token bound to one host (token.UserClaims.Host):
// a tunnel host, whose node receives the token in a form POST to its reserved path (the
// OIDC form_post response mode's shape: no token in any URL), or the API's own host.
//
//	GET /api/v1/auth/oidc/login?origin=O&path=P&state=S  → 302 to the provider
//	GET /api/v1/auth/oidc/callback?code=C&state=X         → the form POST to O, or the API's cookie
//	POST /api/v1/auth/oidc/logout                         → the API's cookie cleared
//
// O must be the API's own origin or match a configured pattern (--browser-login-origin):
// otherwise any site could have a user's token posted to it.

// ErrBrowserLoginNotConfigured: the control plane has no provider, public URL or login store.
var ErrBrowserLoginNotConfigured = fmt.Errorf("%w: browser login is not configured on this control plane (--oidc-issuer, --oidc-client-id, --public-url)", domain.ErrNotFound)

// Paths of the browser login.
const (
	BrowserLoginPath    = "/api/v1/auth/oidc/login"
	BrowserCallbackPath = "/api/v1/auth/oidc/callback"
	BrowserLogoutPath   = "/api/v1/auth/oidc/logout"
)

// maxOIDCParamBytes bounds what the provider sends back in the callback's query.
const maxOIDCParamBytes = 2048

func (s *Server) browserLoginReady() bool {
	return s.cfg.OIDC != nil && s.cfg.BrowserLogins != nil && s.publicOrigin != ""
}

// loginOriginAllowed tells whether a login may return to origin (canonical).
func (s *Server) loginOriginAllowed(origin string) bool {
	if origin == s.publicOrigin {
		return true
	}
	for _, p := range s.loginPatterns {
		if p.Matches(origin) {
			return true
		}
	}
	return false
}

func (s *Server) oauth2Config(ctx context.Context) (*oauth2.Config, error) {
	ep, err := s.cfg.OIDC.Endpoint(ctx)
	if err != nil {
		return nil, err
	}
	ep.AuthStyle = oauth2.AuthStyleInParams // a public client: client_id in the body, no secret
	return &oauth2.Config{ClientID: s.cfg.OIDC.ClientID(), Endpoint: ep, RedirectURL: s.publicOrigin + BrowserCallbackPath,
		Scopes: []string{"openid", "profile", "email", "groups"}}, nil
}

// browserLogin starts a login: it checks where the login returns, keeps state, nonce and the PKCE
// verifier server-side, and sends the browser to the provider.
func (s *Server) browserLogin(c echo.Context) error {
	if !s.browserLoginReady() {
		return s.browserError(c, ErrBrowserLoginNotConfigured)
	}
	q := c.QueryParams()
	rawOrigin := q.Get("origin")
	if rawOrigin == "" {
		rawOrigin = s.publicOrigin
	}
	origin, err := domain.CanonicalOrigin(rawOrigin)
	if err != nil || !s.loginOriginAllowed(origin) {
		// Never echo the origin: this page is shown to whoever followed a link.
		return s.browserError(c, badRequest("origin", "a login may return only to this control plane or to the hosts it serves (--browser-login-origin)"))
	}
	path := q.Get("path")
	if path == "" {
		path = "/"
	}
	if !domain.LocalPath(path) {
		return s.browserError(c, badRequest("path", "want a path on the same host, starting with a single /"))
	}
	clientState := q.Get("state")
	if len(clientState) > browserlogin.MaxClientStateBytes || strings.Trim(clientState, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return s.browserError(c, badRequest("state", "want at most %d base64url characters", browserlogin.MaxClientStateBytes))
	}
	if origin != s.publicOrigin && clientState == "" {
		// A tunnel host's node binds the login to the browser that began it (login CSRF).
		return s.browserError(c, badRequest("state", "a login for a tunnel host needs the node's state"))
	}
	release, err := s.loginSlot()
	if err != nil {
		return s.browserError(c, err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(c.Request().Context(), 15*time.Second)
	defer cancel()
	conf, err := s.oauth2Config(ctx)
	if err != nil {
		return s.browserError(c, err)
	}
	state, nonce, verifier := browserlogin.Secret(), browserlogin.Secret(), oauth2.GenerateVerifier()
	p := browserlogin.Pending{Nonce: nonce, CodeVerifier: verifier, Origin: origin, Path: path, ClientState: clientState,
		ExpiresAt: s.cfg.Now().Add(browserlogin.Lifetime)}
	if err := s.cfg.BrowserLogins.Put(ctx, state, p); err != nil {
		if errors.Is(err, browserlogin.ErrTooMany) {
			return s.browserError(c, echo.NewHTTPError(http.StatusTooManyRequests, "too many logins under way; retry in a moment"))
		}
		return s.browserError(c, fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err))
	}
	to := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce))
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.Redirect(http.StatusFound, to)
}

// browserCallback finishes a login: the state is taken (once), the code exchanged with the PKCE
// verifier, the ID token verified with its nonce, and the user logged in for the origin's host.
func (s *Server) browserCallback(c echo.Context) error {
	if !s.browserLoginReady() {
		return s.browserError(c, ErrBrowserLoginNotConfigured)
	}
	q := c.QueryParams()
	state, code := q.Get("state"), q.Get("code")
	if len(state) > maxOIDCParamBytes || len(code) > maxOIDCParamBytes {
		return s.browserError(c, badRequest("", "the identity provider's answer is too long"))
	}
	req := c.Request()
	ip, ua := commands.Bounded(c.RealIP(), commands.MaxAddrBytes), commands.Bounded(req.UserAgent(), commands.MaxUserAgentBytes)
	release, err := s.loginSlot()
	if err != nil {
		return s.browserError(c, err)
	}
	defer release()
	ctx, cancel := context.WithTimeout(req.Context(), 15*time.Second)
	defer cancel()
	p, err := s.cfg.BrowserLogins.Take(ctx, state)
	if errors.Is(err, browserlogin.ErrUnknownState) {
		s.auth.auditor.AuthFailed("oidc_unknown_state", "", ip, ua)
		return s.browserError(c, &authError{code: "invalid_request", detail: "this login is unknown, expired or already finished; start again"})
	}
	if err != nil {
		return s.browserError(c, fmt.Errorf("%w: %w", eventstore.ErrUnavailable, err))
	}
	if e := q.Get("error"); e != "" {
		s.auth.auditor.AuthFailed("oidc_provider_refused", "", ip, ua)
		return s.browserError(c, &authError{code: "access_denied", detail: "the identity provider did not log you in"})
	}
	if code == "" {
		return s.browserError(c, badRequest("code", "the identity provider sent no code"))
	}
	conf, err := s.oauth2Config(ctx)
	if err != nil {
		return s.browserError(c, err)
	}
	tok, err := conf.Exchange(context.WithValue(ctx, oauth2.HTTPClient, s.cfg.OIDC.HTTPClient()), code, oauth2.VerifierOption(p.CodeVerifier))
	if err != nil {
		// The provider's answer may quote what was sent: logged at debug level without it.
		s.auth.auditor.AuthFailed("oidc_code_refused", "", ip, ua)
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return s.browserError(c, &authError{code: "invalid_grant", detail: "the identity provider refused to exchange the code (" + oauthErrorCode(re.ErrorCode) + ")"})
		}
		return s.browserError(c, fmt.Errorf("%w: code exchange failed", oidcauth.ErrUnavailable))
	}
	rawID, _ := tok.Extra("id_token").(string)
	id, err := s.cfg.OIDC.VerifyNonce(ctx, rawID, p.Nonce)
	if err != nil {
		if errors.Is(err, oidcauth.ErrRefused) {
			s.auth.auditor.AuthFailed("oidc_id_token_refused", "", ip, ua)
			return s.browserError(c, &authError{code: "invalid_token", detail: err.Error()})
		}
		return s.browserError(c, err)
	}
	ids := requestIDsFrom(c)
	actor := commands.Actor{ID: id.UserID, ClientIP: ip, UserAgent: ua, RequestID: ids.request, CorrelationID: ids.correlation}.Bounded()
	c.Set(actorKey, actor)
	host := browserlogin.HostOf(p.Origin)
	res, err := s.cfg.Service.LogIn(commands.WithActor(req.Context(), actor),
		commands.LogIn{UserID: id.UserID, Name: id.Name, Issuer: id.Issuer, Groups: id.Groups, TTL: s.cfg.LoginTTL, Host: host})
	if err != nil {
		return s.browserError(c, err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if p.Origin == s.publicOrigin {
		c.SetCookie(sessionCookie(res.Token, res.ExpiresAt.Sub(s.cfg.Now()), http.SameSiteStrictMode))
		return c.Redirect(http.StatusSeeOther, p.Path)
	}
	return formPost(c, p.Origin, domain.LoginReturnPath, map[string]string{"token": res.Token, "state": p.ClientState, "path": p.Path})
}

// browserLogout clears the API's session cookie.
func (s *Server) browserLogout(c echo.Context) error {
	if o := c.Request().Header.Get(echo.HeaderOrigin); o != "" && o != s.publicOrigin {
		return &authError{code: "invalid_request", detail: "a logout must come from the API's own origin"}
	}
	c.SetCookie(&http.Cookie{Name: domain.SessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return c.NoContent(http.StatusNoContent)
}

// sessionCookie is the cookie that holds a host-bound user token: __Host- (Secure, Path=/, no
// Domain), HttpOnly, lasting no longer than the token.
func sessionCookie(tok string, ttl time.Duration, same http.SameSite) *http.Cookie {
	return &http.Cookie{Name: domain.SessionCookie, Value: tok, Path: "/", MaxAge: max(1, int(ttl/time.Second)), Secure: true, HttpOnly: true, SameSite: same}
}

// oauthErrorCode is an OAuth error code safe to show (RFC 6749's charset, bounded).
func oauthErrorCode(code string) string {
	if code == "" || len(code) > 64 || strings.Trim(code, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return "unknown error"
	}
	return code
}

// formPostScript submits the form as soon as the page loads; the page's CSP allows this script
// by its hash and nothing else.
const formPostScript = `document.forms[0].submit();`

var formPostCSP = func() string {
	h := sha256.Sum256([]byte(formPostScript))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}()

var formPostPage = template.Must(template.New("form").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"><title>Signing in</title></head>
<body><form method="post" action="{{.Action}}">{{range $k, $v := .Fields}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<noscript><p>Scripts are off: continue to sign in.</p><button type="submit">Continue</button></noscript></form>
<script>` + formPostScript + `</script></body></html>
`))

// formPost answers a page that POSTs fields to path at origin at once (the token never appears in
// a URL, a history entry or a Referer). Its CSP lets it run its one script and post only to
// origin (a canonical origin: the CSP source expression is exactly it).
func formPost(c echo.Context, origin, path string, fields map[string]string) error {
	var b strings.Builder
	if err := formPostPage.Execute(&b, struct {
		Action string
		Fields map[string]string
	}{origin + path, fields}); err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src "+formPostCSP+"; form-action "+origin+"; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	return c.HTML(http.StatusOK, b.String())
}

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Detail}}</p></body></html>
`))

// browserError answers a browser (Accept: text/html) with a plain page in our words, anyone else
// with the API's problem document.
func (s *Server) browserError(c echo.Context, err error) error {
	if !strings.Contains(c.Request().Header.Get(echo.HeaderAccept), "text/html") {
		return err
	}
	cl := classify(err)
	if cl.internal {
		ids := requestIDsFrom(c)
		s.log.Error("browser login failed", "error", err, "status", cl.status, "request_id", ids.request, "correlation_id", ids.correlation)
	}
	var b strings.Builder
	_ = errorPage.Execute(&b, struct{ Title, Detail string }{"Sign-in failed: " + http.StatusText(cl.status), cl.detail})
	h := c.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'none'")
	h.Set(echo.HeaderCacheControl, "no-store")
	return c.HTML(cl.status, b.String())
}
