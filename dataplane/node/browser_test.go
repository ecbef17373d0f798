package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/streamtest"
)

const loginURL = "http://control.test:8080"

// browserEnv is a live node with browser login on: tunnel llm.one is at llm.one.tunnels.test.
type browserEnv struct {
	*liveEnv
	host string // llm.one.tunnels.test:<port>
}

func newBrowserEnv(t *testing.T) *browserEnv {
	l := newLiveEnvWith(t, func(c *node.Config) { c.LoginURL = loginURL }, true)
	_, port, _ := strings.Cut(l.addr, ":")
	return &browserEnv{liveEnv: l, host: "llm.one.tunnels.test:" + port}
}

// hostToken is a user token bound to host, as the control plane's browser login mints it.
func (b *browserEnv) hostToken(user, host string, ttl time.Duration) string {
	b.t.Helper()
	raw, _, err := token.MintHostUserClaims(b.key, issuer, user, user, nil, host, ttl, time.Now())
	if err != nil {
		b.t.Fatal(err)
	}
	return raw
}

// get sends a request to a tunnel host (host) with headers "Name: value".
func (b *browserEnv) get(method, host, path string, body io.Reader, headers ...string) *http.Response {
	b.t.Helper()
	req, err := http.NewRequest(method, "http://"+b.addr+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Host = host
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	res, err := browser.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { res.Body.Close() })
	return res
}

// cleared tells whether a Set-Cookie deletes its cookie.
func cleared(c *http.Cookie) bool {
	return c != nil && c.Value == "" && (c.MaxAge < 0 || !c.Expires.IsZero() && c.Expires.Before(time.Now()))
}

var browser = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func cookieNamed(res *http.Response, name string) *http.Cookie {
	for _, c := range res.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// A browser without a credential is sent to the control plane's login (an API client, or a
// path-routed call, gets its 401), with a login-CSRF nonce in a cookie that survives the control
// plane's cross-site POST; the token comes back to the reserved path, is checked (nonce, host,
// validity) and set as a __Host- session cookie; the browser returns to its page.
func TestBrowserLoginAtTheNode(t *testing.T) {
	t.Parallel()
	b := newBrowserEnv(t)
	b.grant("g-gina", "gina", time.Hour)

	res := b.get("GET", b.host, "/echo/page?x=1", nil, "Accept: text/html,application/xhtml+xml")
	if res.StatusCode != http.StatusFound {
		t.Fatalf("browser without a credential: %d", res.StatusCode)
	}
	to, err := url.Parse(res.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(to.String(), loginURL+"/api/v1/auth/oidc/login?") {
		t.Fatalf("sent to %q", res.Header.Get("Location"))
	}
	q := to.Query()
	if q.Get("origin") != "http://"+b.host || q.Get("path") != "/echo/page?x=1" || len(q.Get("state")) < 40 {
		t.Fatalf("login query: %v", q)
	}
	nonce := cookieNamed(res, domain.LoginNonceCookie)
	if nonce == nil || nonce.Value != q.Get("state") || !nonce.Secure || !nonce.HttpOnly || nonce.SameSite != http.SameSiteNoneMode || nonce.Path != "/" {
		t.Fatalf("nonce cookie: %+v", nonce)
	}
	for _, c := range []struct {
		name, host, path, accept string
	}{{"API client", b.host, "/echo/x", "application/json"}, {"path routing", "127.0.0.1", "/t/llm.one/echo/x", "text/html"}} {
		if res := b.get("GET", c.host, c.path, nil, "Accept: "+c.accept); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s without a credential: %d, want 401", c.name, res.StatusCode)
		}
	}

	state := q.Get("state")
	good := b.hostToken("gina", b.host, time.Hour)
	post := func(tok, st, path string, cookies ...string) *http.Response {
		form := url.Values{"token": {tok}, "state": {st}, "path": {path}}.Encode()
		h := []string{"Content-Type: application/x-www-form-urlencoded", "Origin: " + loginURL}
		if len(cookies) > 0 {
			h = append(h, "Cookie: "+strings.Join(cookies, "; "))
		}
		return b.get("POST", b.host, domain.LoginReturnPath, strings.NewReader(form), h...)
	}
	nonceCookie := domain.LoginNonceCookie + "=" + state
	for name, res := range map[string]*http.Response{
		"no nonce cookie":     post(good, state, "/echo/page"),
		"another state":       post(good, "forged-state-of-an-attacker-0123456789abcdef", "/echo/page", nonceCookie),
		"token for elsewhere": post(b.hostToken("gina", "llm.two.tunnels.test", time.Hour), state, "/", nonceCookie),
		"token for any host":  post(b.userToken("gina", time.Hour), state, "/", nonceCookie),
		"expired token":       post(b.hostToken("gina", b.host, -time.Hour), state, "/", nonceCookie),
		"not a token":         post("nonsense", state, "/", nonceCookie),
	} {
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusForbidden && res.StatusCode != http.StatusUnauthorized || cookieNamed(res, domain.SessionCookie) != nil {
			t.Errorf("%s: %d, session cookie %v", name, res.StatusCode, cookieNamed(res, domain.SessionCookie))
		}
		if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") || strings.Contains(string(body), "nonsense") {
			t.Errorf("%s: not a page of the node's words: %s", name, body)
		}
	}

	res = post(good, state, "//evil.example/", nonceCookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("a path to another host: %d to %q, want 303 to /", res.StatusCode, res.Header.Get("Location"))
	}
	res = post(good, state, "/echo/page?x=1", nonceCookie)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/echo/page?x=1" {
		t.Fatalf("login return: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	session := cookieNamed(res, domain.SessionCookie)
	if session == nil || session.Value != good || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode ||
		session.Path != "/" || session.Domain != "" || session.MaxAge <= 3500 || session.MaxAge > 3600 {
		t.Fatalf("session cookie: %+v", session)
	}
	// A second tab's login under way keeps the browser's nonce, so both can come back.
	res = b.get("GET", b.host, "/other", nil, "Accept: text/html", "Cookie: "+nonceCookie)
	if to, _ := url.Parse(res.Header.Get("Location")); res.StatusCode != http.StatusFound || to.Query().Get("state") != state {
		t.Fatalf("a second tab's login: %d, state %q, want the browser's nonce", res.StatusCode, to.Query().Get("state"))
	}
	if res := post(good, state, "/other", nonceCookie); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/other" {
		t.Fatalf("the second tab's login return: %d", res.StatusCode)
	}

	// The cookie authenticates like a bearer token; the node's cookies never reach the
	// upstream, the upstream's own do.
	cookies := "theirs=1; " + domain.SessionCookie + "=" + good + "; " + nonceCookie + "; also=2"
	res = b.get("GET", b.host, "/echo/page", nil, "Accept: text/html", "Cookie: "+cookies)
	if res.StatusCode != 200 {
		t.Fatalf("with the session cookie: %d", res.StatusCode)
	}
	var seen http.Header
	if err := json.Unmarshal([]byte(res.Header.Get("X-Echo-Headers")), &seen); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(seen.Values("Cookie"), "; "); got != "theirs=1; also=2" {
		t.Fatalf("the upstream saw cookies %q", got)
	}
	// The caller's Authorization is then the upstream's.
	res = b.get("GET", b.host, "/echo/x", nil, "Cookie: "+domain.SessionCookie+"="+good, "Authorization: Bearer upstream-key")
	_ = json.Unmarshal([]byte(res.Header.Get("X-Echo-Headers")), &seen)
	if res.StatusCode != 200 || seen.Get("Authorization") != "Bearer upstream-key" {
		t.Fatalf("Authorization beside the cookie: %d %q", res.StatusCode, seen.Get("Authorization"))
	}

	// A host-bound token is refused on every other host, as a cookie and as a bearer.
	second := strings.Replace(b.host, "llm.one", "second.one", 1)
	b.grant("g-gina-2", "gina", time.Hour, "tun-2")
	for name, res := range map[string]*http.Response{
		"cookie on another tunnel host": b.get("GET", second, "/echo/x", nil, "Cookie: "+domain.SessionCookie+"="+good),
		"bearer on another tunnel host": b.get("GET", second, "/echo/x", nil, "Authorization: Bearer "+good),
		"bearer by path routing":        b.get("GET", "127.0.0.1", "/t/llm.one/echo/x", nil, "Authorization: Bearer "+good),
	} {
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "another host") {
			t.Errorf("%s: %d %s", name, res.StatusCode, body)
		}
	}
	if res := b.get("GET", b.host, "/echo/x", nil, "Authorization: Bearer "+good); res.StatusCode != 200 {
		t.Fatalf("bearer on its own host: %d", res.StatusCode)
	}
	// An expired session sends a browser to log in again.
	expired := b.hostToken("gina", b.host, -time.Hour)
	if res := b.get("GET", b.host, "/echo/x", nil, "Accept: text/html", "Cookie: "+domain.SessionCookie+"="+expired); res.StatusCode != http.StatusFound {
		t.Fatalf("an expired session: %d, want 302 to log in", res.StatusCode)
	}

	// The reserved paths are the node's; logout clears the cookie.
	if res := b.get("GET", b.host, "/.tunnelplane/anything", nil, "Cookie: "+domain.SessionCookie+"="+good); res.StatusCode != 404 || res.Header.Get("X-Echo-Method") != "" {
		t.Fatalf("a reserved path reached the upstream: %d", res.StatusCode)
	}
	res = b.get("POST", b.host, domain.LogoutPath, nil, "Cookie: "+domain.SessionCookie+"="+good)
	if c := cookieNamed(res, domain.SessionCookie); res.StatusCode != 200 || !cleared(c) || !c.Secure {
		t.Fatalf("logout: %d %+v", res.StatusCode, c)
	}
}

// A WebSocket opened with the session cookie must come from the tunnel's own origin or one its
// CORS setting lists (a browser sends the cookie with any same-site page's WebSocket); one opened
// with a bearer token is not a browser's and is not checked. A revoked grant cuts the cookie's
// stream and WebSocket as it cuts a bearer's.
func TestSessionCookieWebSocketOriginAndRevocation(t *testing.T) {
	t.Parallel()
	b := newBrowserEnv(t)
	b.grant("g-gina", "gina", time.Hour)
	b.kv.setCORS("tun-llm", domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{"https://app.example.com"}})
	tok := b.hostToken("gina", b.host, time.Hour)
	cookie := domain.SessionCookie + "=" + tok
	dial := func(origin string, bearer bool) (int, *websocket.Conn) {
		h := http.Header{"Cookie": {cookie}}
		if bearer {
			h = http.Header{"Authorization": {"Bearer " + tok}}
		}
		if origin != "" {
			h.Set("Origin", origin)
		}
		d := websocket.Dialer{NetDial: nil, HandshakeTimeout: 5 * time.Second}
		req := "ws://" + b.addr + "/ws/ticks?every=20ms"
		h.Set("Host", b.host)
		c, res, err := d.Dial(req, h)
		if err != nil {
			if res == nil {
				t.Fatalf("dial: %v", err)
			}
			return res.StatusCode, nil
		}
		t.Cleanup(func() { c.Close() })
		return 101, c
	}
	for _, c := range []struct {
		name   string
		origin string
		bearer bool
		want   int
	}{
		{"own origin", "http://" + b.host, false, 101},
		{"listed origin", "https://app.example.com", false, 101},
		{"another tunnel host", "http://" + strings.Replace(b.host, "llm.one", "evil.one", 1), false, 403},
		{"no origin", "", false, 403},
		{"garbage origin", "null", false, 403},
		{"bearer, any origin", "https://other.example", true, 101},
	} {
		if got, _ := dial(c.origin, c.bearer); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}

	sse := streamtest.SSE(t, b.client, func() *http.Request {
		req, _ := http.NewRequest("GET", "http://"+b.addr+"/events?every=20ms", nil)
		req.Host = b.host
		req.Header.Set("Cookie", cookie)
		req.Header.Set("Accept", "text/event-stream")
		return req
	}())
	sse.Flowing(t, 2, 5*time.Second)
	start := time.Now()
	b.kv.apply(domain.GrantRevoked{GrantID: "g-gina", OrgID: "org-1", TunnelID: "tun-llm", RevokedBy: "alice"})
	t.Logf("the cookie's event stream ended %v after the revocation", sse.EndsWithin(t, start, time.Second))
	// gina holds no role: the tunnel is now one she may not learn about.
	if res := b.get("GET", b.host, "/echo/x", nil, "Cookie: "+cookie); res.StatusCode != http.StatusNotFound {
		t.Fatalf("after the revocation: %d", res.StatusCode)
	}
}
