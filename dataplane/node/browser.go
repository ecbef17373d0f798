package node

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
)

// Browser sessions on tunnel hosts. A browser that navigates to <tunnel>.<org>.<base domain>
// without a credential is sent to the control plane's login (Config.LoginURL) with a nonce the
// node keeps in a cookie (domain.LoginNonceCookie: SameSite=None, for it must come back with the
// control plane's cross-site form POST). The control plane posts a user token bound to this host
// (token.UserClaims.Host) to the reserved path domain.LoginReturnPath; the node checks it and the
// nonce (login CSRF: nobody can log a victim's browser into the attacker's session), and sets it
// as domain.SessionCookie (__Host-, Secure, HttpOnly, SameSite=Lax, no longer than the token).
// The cookie then authenticates like a bearer user token: the same cache, the same live-call
// registry (a withdrawal cuts the browser's streams), and never reaches the upstream.
//
// The node keeps domain.ReservedPathPrefix on every tunnel host for itself: the upstream's own
// paths under it are not reachable by host routing.

// Bounds of a login's return.
const (
	maxLoginFormBytes = 16 << 10
	// loginNonceMaxAge is how long a browser may take to log in.
	loginNonceMaxAge = 10 * time.Minute
)

// requestHost is the request's Host as a browser login binds a token to it: lower case, without
// a default port.
func requestHost(ctx *fasthttp.RequestCtx) string {
	h := strings.ToLower(string(ctx.Host()))
	h = strings.TrimSuffix(h, ".")
	if ctx.IsTLS() {
		return strings.TrimSuffix(h, ":443")
	}
	return strings.TrimSuffix(h, ":80")
}

// tunnelOrigin is the origin a browser reaches this tunnel host at: https unless both the node
// and the control plane's login are plain http (a development setup).
func (n *Node) tunnelOrigin(ctx *fasthttp.RequestCtx) string {
	scheme := "https"
	if !ctx.IsTLS() && strings.HasPrefix(n.cfg.LoginURL, "http://") {
		scheme = "http"
	}
	return scheme + "://" + requestHost(ctx)
}

// browserNavigation tells whether a request looks like a browser loading a page: GET or HEAD
// accepting HTML. Only these are sent to log in; an API client gets its 401.
func browserNavigation(h *fasthttp.RequestHeader) bool {
	return (h.IsGet() || h.IsHead()) && bytes.Contains(h.Peek("Accept"), []byte("text/html"))
}

// sessionCredential is the session cookie's token, when the request has one.
func sessionCredential(h *fasthttp.RequestHeader) (string, bool) {
	v := h.Cookie(domain.SessionCookie)
	return string(v), len(v) > 0
}

// stripOwnCookies removes the node's cookies from the request: the upstream never sees a
// session's token (its own cookies pass).
func stripOwnCookies(h *fasthttp.RequestHeader) {
	h.DelCookie(domain.SessionCookie)
	h.DelCookie(domain.LoginNonceCookie)
}

func randomNonce() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validNonce tells whether v looks like a nonce randomNonce made (43 base64url characters).
func validNonce(v string) bool {
	return len(v) == 43 && strings.Trim(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

// redirectToLogin sends a browser to the control plane's login for this host, to come back to
// the page it asked for.
func (n *Node) redirectToLogin(ctx *fasthttp.RequestCtx) {
	n.metrics.refused.WithLabelValues("unauthenticated_login").Inc()
	path := string(ctx.URI().RequestURI())
	if !domain.LocalPath(path) {
		path = "/"
	}
	// A login already under way in this browser (another tab) keeps its nonce, so that each
	// tab's login can come back.
	nonce := string(ctx.Request.Header.Cookie(domain.LoginNonceCookie))
	if !validNonce(nonce) {
		nonce = randomNonce()
	}
	q := url.Values{"origin": {n.tunnelOrigin(ctx)}, "path": {path}, "state": {nonce}}
	ctx.SetConnectionClose()
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.Set("Referrer-Policy", "no-referrer")
	setCookie(ctx, domain.LoginNonceCookie, nonce, int(loginNonceMaxAge/time.Second), fasthttp.CookieSameSiteNoneMode)
	ctx.Redirect(n.cfg.LoginURL+"/api/v1/auth/oidc/login?"+q.Encode(), http.StatusFound)
}

// setCookie sets one of the node's cookies: __Host- named, so Secure, Path=/ and no Domain.
// maxAge 0 deletes it.
func setCookie(ctx *fasthttp.RequestCtx, name, value string, maxAge int, same fasthttp.CookieSameSite) {
	c := fasthttp.AcquireCookie()
	defer fasthttp.ReleaseCookie(c)
	c.SetKey(name)
	c.SetValue(value)
	c.SetPath("/")
	c.SetSecure(true)
	c.SetHTTPOnly(true)
	c.SetSameSite(same)
	if maxAge > 0 {
		c.SetMaxAge(maxAge)
	} else {
		c.SetExpire(fasthttp.CookieExpireDelete)
	}
	ctx.Response.Header.SetCookie(c)
}

// serveReserved answers the node's own paths on a tunnel host (domain.ReservedPathPrefix).
func (n *Node) serveReserved(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	ctx.Response.Header.Set("Cache-Control", "no-store")
	switch string(ctx.Path()) {
	case domain.LoginReturnPath:
		n.acceptLogin(ctx)
	case domain.LogoutPath:
		if !ctx.IsGet() && !ctx.IsPost() {
			writePage(ctx, http.StatusMethodNotAllowed, "Not allowed", "sign out with GET or POST")
			return
		}
		setCookie(ctx, domain.SessionCookie, "", 0, fasthttp.CookieSameSiteLaxMode)
		writePage(ctx, http.StatusOK, "Signed out", "you are signed out of this tunnel in this browser")
	default:
		writePage(ctx, http.StatusNotFound, "Not found", "paths under "+domain.ReservedPathPrefix+" are the tunnel node's own")
	}
}

// acceptLogin takes a browser login's token (the control plane's form POST): the nonce the node
// set before the login must come back as the form's state, and the token must be a user token for
// this very host. It becomes the session cookie, and the browser goes back to its page.
func (n *Node) acceptLogin(ctx *fasthttp.RequestCtx) {
	if !ctx.IsPost() {
		writePage(ctx, http.StatusMethodNotAllowed, "Not allowed", "this address takes the sign-in's form")
		return
	}
	if n.cfg.LoginURL == "" {
		writePage(ctx, http.StatusNotFound, "Not found", "browser sign-in is not configured on this node")
		return
	}
	body, err := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), maxLoginFormBytes+1))
	if err != nil || len(body) > maxLoginFormBytes {
		writePage(ctx, http.StatusBadRequest, "Sign-in failed", "the sign-in form could not be read")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writePage(ctx, http.StatusBadRequest, "Sign-in failed", "the sign-in form could not be read")
		return
	}
	nonce := ctx.Request.Header.Cookie(domain.LoginNonceCookie)
	state := form.Get("state")
	if len(nonce) == 0 || subtle.ConstantTimeCompare(nonce, []byte(state)) != 1 {
		n.metrics.refused.WithLabelValues("login_state").Inc()
		writePage(ctx, http.StatusForbidden, "Sign-in failed", "this sign-in was not started in this browser (or took too long); open the page again")
		return
	}
	raw := form.Get("token")
	p, err := n.authenticate(ctx, raw)
	switch {
	case errors.Is(err, ErrUnauthenticated):
		n.metrics.refused.WithLabelValues("unauthenticated_invalid").Inc()
		writePage(ctx, http.StatusUnauthorized, "Sign-in failed", token.Reason(err))
		return
	case err != nil:
		n.log.Warn("browser login: authentication failed", "error", err)
		writePage(ctx, http.StatusServiceUnavailable, "Sign-in failed", "authorization is unavailable; try again shortly")
		return
	case p.UserID == "" || p.Host == "" || p.Host != requestHost(ctx):
		n.metrics.refused.WithLabelValues("unauthenticated_host").Inc()
		writePage(ctx, http.StatusUnauthorized, "Sign-in failed", "the token was not issued for this host")
		return
	}
	maxAge := tokenLifetime(raw)
	if maxAge <= 0 {
		writePage(ctx, http.StatusUnauthorized, "Sign-in failed", "the token has expired; open the page again")
		return
	}
	path := form.Get("path")
	if !domain.LocalPath(path) {
		path = "/"
	}
	// The nonce cookie stays until it expires: another tab's login may still come back with it.
	setCookie(ctx, domain.SessionCookie, raw, maxAge, fasthttp.CookieSameSiteLaxMode)
	ctx.Response.Header.Set("Referrer-Policy", "no-referrer")
	// A relative Location: the browser stays on this origin whatever the path says.
	ctx.Response.Header.Set("Location", path)
	ctx.SetStatusCode(http.StatusSeeOther)
}

// tokenLifetime is the seconds left before a verified token's exp (0: none left).
func tokenLifetime(raw string) int {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return 0
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err != nil || json.Unmarshal(b, &c) != nil {
		return 0
	}
	return int(time.Until(time.Unix(c.Exp, 0)) / time.Second)
}

// webSocketOriginAllowed tells whether a WebSocket upgrade authenticated by the session cookie
// comes from a page the tunnel trusts: its own host, or an origin its CORS setting lists. A
// browser sends the cookie with any page's WebSocket (cross-site WebSocket hijacking).
func webSocketOriginAllowed(ctx *fasthttp.RequestCtx, route Route) bool {
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" {
		return false
	}
	o, err := domain.CanonicalOrigin(origin)
	if err != nil {
		return false
	}
	if host, ok := strings.CutPrefix(o, "https://"); ok && host == requestHost(ctx) {
		return true
	}
	if host, ok := strings.CutPrefix(o, "http://"); ok && !ctx.IsTLS() && host == requestHost(ctx) {
		return true
	}
	return route.CORS != nil && !route.CORS.Passthrough && slices.Contains(route.CORS.Origins, o)
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Detail}}</p></body></html>
`))

// writePage answers a browser with a plain page in the node's words.
func writePage(ctx *fasthttp.RequestCtx, status int, title, detail string) {
	var b bytes.Buffer
	_ = pageTemplate.Execute(&b, struct{ Title, Detail string }{title, detail})
	ctx.Response.Header.Set("Content-Security-Policy", "default-src 'none'")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.Header.SetContentType("text/html; charset=utf-8")
	ctx.SetStatusCode(status)
	ctx.SetBody(b.Bytes())
}
