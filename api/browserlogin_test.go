package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
)

// selfURL in Config.PublicURL asks newEnv for the API's own URL and a login store on its
// database (both known only there).
const selfURL = "http://self.invalid"

// tunnelOrigin is the tunnel host origin the browser-login tests return to.
const tunnelOrigin = "http://web.acme.nodes.test:8080"

// withBrowserLogin starts a provider whose client may redirect to the API's callback (a
// loopback redirect URI, any port) and turns browser login on for tunnel hosts under
// nodes.test:8080.
func withBrowserLogin(t *testing.T) (*oidctest.Provider, func(*api.Config)) {
	idp := oidctest.Start(t, oidctest.Options{
		Users:        []oidctest.User{{Subject: "u-1", Name: "Alice Doe", Username: "alice", Groups: []string{"ml-team"}}},
		RedirectURIs: []string{"http://127.0.0.1" + api.BrowserCallbackPath}})
	return idp, func(c *api.Config) {
		withOIDC(t, idp.Issuer)(c)
		c.PublicURL, c.BrowserLoginOrigins = selfURL, []string{"http://*.nodes.test:8080"}
	}
}

// browser follows no redirects: each hop is looked at.
var browser = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func hop(t *testing.T, method, u string, form url.Values) *http.Response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func location(t *testing.T, res *http.Response, base string) string {
	t.Helper()
	if res.StatusCode != http.StatusFound && res.StatusCode != http.StatusSeeOther {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("%s: %d, want a redirect: %s", res.Request.URL.Path, res.StatusCode, b)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := u.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.String()
}

// toCallback runs a browser login from its start to the moment the provider sends the browser
// back with a code: the callback URL, and the authorization URL the API sent it to.
func toCallback(t *testing.T, e *env, idp *oidctest.Provider, query url.Values) (callback, authorize string) {
	t.Helper()
	authorize = location(t, hop(t, "GET", e.base+api.BrowserLoginPath+"?"+query.Encode(), nil), e.base)
	login := location(t, hop(t, "GET", authorize, nil), authorize)
	id, err := url.Parse(login)
	if err != nil {
		t.Fatal(err)
	}
	back := location(t, hop(t, "POST", idp.Issuer+"/login", url.Values{"id": {id.Query().Get("id")}, "username": {"alice"}}), idp.Issuer)
	callback = location(t, hop(t, "GET", back, nil), back)
	if !strings.HasPrefix(callback, e.base+api.BrowserCallbackPath+"?") {
		t.Fatalf("the provider sent the browser to %s", callback)
	}
	return callback, authorize
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z]+)" value="([^"]*)">`)

// A login for a tunnel host: PKCE with S256 and a nonce at the provider; the token comes back in
// an auto-submitting form POST to the host's reserved path (strict CSP, no token in a URL), bound
// to that host, refused by the API; the state is used once; user.logged_in records the host.
func TestBrowserLoginTunnelHost(t *testing.T) {
	t.Parallel()
	idp, tweak := withBrowserLogin(t)
	e := newEnv(t, tweak)

	q := url.Values{"origin": {tunnelOrigin}, "path": {"/chat?x=1"}, "state": {"node-nonce_123"}}
	callback, authorize := toCallback(t, e, idp, q)
	au, _ := url.Parse(authorize)
	if au.Query().Get("code_challenge_method") != "S256" || au.Query().Get("code_challenge") == "" || au.Query().Get("nonce") == "" {
		t.Fatalf("the authorization request lacks PKCE S256 or a nonce: %s", au.RawQuery)
	}
	if strings.Contains(authorize, "node-nonce_123") || strings.Contains(authorize, "web.acme") {
		t.Fatal("the provider was told the node's state or the tunnel host")
	}

	// An intercepted code is worthless without the verifier only the API holds.
	cb, _ := url.Parse(callback)
	code := cb.Query().Get("code")
	res, err := http.PostForm(idp.Issuer+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {e.base + api.BrowserCallbackPath}, "client_id": {"tunnelplane-cli"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(b), "code_verifier") && !strings.Contains(string(b), "PKCE") {
		t.Fatalf("the provider exchanged the code without the PKCE verifier: %d %s", res.StatusCode, b)
	}

	page := hop(t, "GET", callback, nil)
	body, _ := io.ReadAll(page.Body)
	if page.StatusCode != 200 {
		t.Fatalf("callback: %d %s", page.StatusCode, body)
	}
	csp := page.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'sha256-") || !strings.Contains(csp, "form-action "+tunnelOrigin) || !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("CSP: %q", csp)
	}
	if page.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("the token page may be cached")
	}
	if !strings.Contains(string(body), `action="`+tunnelOrigin+domain.LoginReturnPath+`"`) {
		t.Fatalf("the form posts elsewhere: %s", body)
	}
	fields := map[string]string{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(body), -1) {
		fields[m[1]] = html.UnescapeString(m[2])
	}
	if fields["state"] != "node-nonce_123" || fields["path"] != "/chat?x=1" || fields["token"] == "" {
		t.Fatalf("form fields: %v", fields)
	}
	var claims token.UserClaims
	parts := strings.Split(fields["token"], ".")
	if len(parts) != 3 {
		t.Fatal("not a JWT")
	}
	raw, _ := jsonSegment(parts[1])
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Host != "web.acme.nodes.test:8080" || claims.Subject != domain.ExternalUserID(idp.Issuer, "u-1") {
		t.Fatalf("claims: host %q subject %q", claims.Host, claims.Subject)
	}
	// A token for a tunnel host is refused by the API, as a bearer and as a cookie.
	r := e.call("GET", "/api/v1/orgs", fields["token"], nil)
	if r.status != 401 || !strings.Contains(string(r.body), "another host") {
		t.Fatalf("the API took a tunnel host's token: %d %s", r.status, r.body)
	}
	r = e.call("GET", "/api/v1/orgs", "", nil, "Cookie", domain.SessionCookie+"="+fields["token"])
	if r.status != 401 {
		t.Fatalf("the API took a tunnel host's token in its cookie: %d %s", r.status, r.body)
	}

	// The state is single-use.
	again := hop(t, "GET", callback, nil)
	b, _ = io.ReadAll(again.Body)
	if again.StatusCode != 401 || !strings.Contains(string(b), "already finished") || !strings.HasPrefix(again.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("a second callback with the same state: %d %s", again.StatusCode, b)
	}

	recs, err := e.store.ReadAll(context.Background(), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rec := range recs {
		if rec.Type == domain.TypeUserLoggedIn {
			var ev domain.UserLoggedIn
			_ = json.Unmarshal(rec.Payload, &ev)
			found = ev.Host == "web.acme.nodes.test:8080" && ev.Method == domain.LoginMethodOIDCBrowser && ev.TokenID == claims.ID
		}
	}
	if !found {
		t.Fatal("no user.logged_in names the tunnel host")
	}
}

func jsonSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}

// A login may return only to the API's origin or a configured pattern, to a local path; a tunnel
// host's login needs the node's state. Refusals are pages in our words that do not echo the input.
func TestBrowserLoginRefusesOpenRedirects(t *testing.T) {
	t.Parallel()
	_, tweak := withBrowserLogin(t)
	e := newEnv(t, tweak)
	for name, q := range map[string]url.Values{
		"other site":            {"origin": {"https://evil.example"}, "state": {"s"}},
		"pattern, wrong port":   {"origin": {"http://web.acme.nodes.test:8081"}, "state": {"s"}},
		"pattern, wrong scheme": {"origin": {"https://web.acme.nodes.test:8080"}, "state": {"s"}},
		"suffix trick":          {"origin": {"http://evilnodes.test:8080"}, "state": {"s"}},
		"bare base":             {"origin": {"http://nodes.test:8080"}, "state": {"s"}},
		"origin with a path":    {"origin": {tunnelOrigin + "/x"}, "state": {"s"}},
		"scheme-relative path":  {"origin": {tunnelOrigin}, "path": {"//evil.example/"}, "state": {"s"}},
		"backslash path":        {"origin": {tunnelOrigin}, "path": {"/\\evil.example/"}, "state": {"s"}},
		"absolute path":         {"origin": {tunnelOrigin}, "path": {"https://evil.example/"}, "state": {"s"}},
		"no node state":         {"origin": {tunnelOrigin}},
		"bad node state":        {"origin": {tunnelOrigin}, "state": {"<script>"}},
	} {
		res := hop(t, "GET", e.base+api.BrowserLoginPath+"?"+q.Encode(), nil)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 400 || res.Header.Get("Location") != "" {
			t.Errorf("%s: %d (Location %q), want 400", name, res.StatusCode, res.Header.Get("Location"))
		}
		if strings.Contains(string(b), "evil") || strings.Contains(string(b), "<script>") {
			t.Errorf("%s: the page echoes the input: %s", name, b)
		}
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM browser_logins`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused logins were kept: %d %v", n, err)
	}
	// Without a configured browser login the routes say so.
	plain := newEnv(t)
	if r := plain.call("GET", api.BrowserLoginPath, "", nil); r.status != 404 || !strings.Contains(string(r.body), "--public-url") {
		t.Fatalf("unconfigured: %d %s", r.status, r.body)
	}
}

// A login for the API's own origin sets the API's cookie (__Host-, Secure, HttpOnly,
// SameSite=Strict, no longer than the token); the API takes it for reads, and for changes only
// with the API's own Origin (CSRF).
func TestBrowserLoginAPICookie(t *testing.T) {
	t.Parallel()
	idp, tweak := withBrowserLogin(t)
	e := newEnv(t, tweak)
	callback, _ := toCallback(t, e, idp, url.Values{"path": {"/api/v1/orgs"}})
	res := hop(t, "GET", callback, nil)
	if loc := location(t, res, e.base); loc != e.base+"/api/v1/orgs" {
		t.Fatalf("after login to %s", loc)
	}
	var ck *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == domain.SessionCookie {
			ck = c
		}
	}
	if ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" ||
		ck.MaxAge <= 0 || ck.MaxAge > int((2*time.Hour).Seconds()) {
		t.Fatalf("cookie: %+v", ck)
	}
	cookie := domain.SessionCookie + "=" + ck.Value
	user := domain.ExternalUserID(idp.Issuer, "u-1")
	root := e.superadmin()
	e.createOrg(root, "acme", user)
	e.must(200, "GET", "/api/v1/orgs/acme", "", nil, "Cookie", cookie)
	body := map[string]any{"org": "acme", "name": "web", "upstream": "http://127.0.0.1:1"}
	if r := e.call("POST", "/api/v1/tunnels", "", body, "Cookie", cookie); r.status != 401 {
		t.Fatalf("a cookie change without Origin: %d %s", r.status, r.body)
	}
	if r := e.call("POST", "/api/v1/tunnels", "", body, "Cookie", cookie, "Origin", "http://evil.example"); r.status != 401 {
		t.Fatalf("a cookie change from another origin: %d %s", r.status, r.body)
	}
	if r := e.call("POST", "/api/v1/tunnels", "", body, "Cookie", cookie, "Origin", e.base); r.status != 201 {
		t.Fatalf("a cookie change from the API's origin: %d %s", r.status, r.body)
	}
	// The API's token works on the API host only: a tunnel host's node refuses it (its host
	// differs; node tests), and an API without a public URL refuses every host-bound token.
	plain := newEnv(t)
	if r := plain.call("GET", "/api/v1/orgs", "", nil, "Cookie", cookie); r.status != 401 {
		t.Fatalf("another API took the cookie: %d", r.status)
	}
}
