package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// TestProblemShapes: every error is application/problem+json with the right status, and a refused
// request writes nothing.
func TestProblemShapes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	e.createOrg(root, "globex", "alice")
	alice := e.token("alice")
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"})
	start := head(t, e.store)

	big := `{"name":"x","upstream":"http://127.0.0.1:1","protocol":"` + strings.Repeat("a", 70<<10) + `"}`
	cases := []struct {
		name         string
		status       int
		method, path string
		tok          string
		body         any
		headers      []string
		field        string // expected field error, if any
		detail       string // expected in the detail
	}{
		{"malformed json", 400, "POST", "/api/v1/tunnels?org=acme", alice, `{"name": "x",`, nil, "", "malformed JSON"},
		{"not json at all", 400, "POST", "/api/v1/tunnels?org=acme", alice, `name=x`, nil, "", "malformed JSON"},
		{"unknown field", 400, "POST", "/api/v1/tunnels?org=acme", alice, `{"name":"x","upstream":"http://127.0.0.1:1","colour":"red"}`, nil, "colour", "unknown field"},
		{"two values", 400, "POST", "/api/v1/tunnels?org=acme", alice, `{"name":"x","upstream":"http://127.0.0.1:1"} {}`, nil, "", "more than one value"},
		{"empty body", 400, "POST", "/api/v1/tunnels?org=acme", alice, ` `, nil, "", "empty"},
		{"unknown query parameter", 400, "GET", "/api/v1/tunnels?org=acme&colour=red", alice, nil, nil, "colour", "unknown query parameter"},
		{"bad limit", 400, "GET", "/api/v1/tunnels?org=acme&limit=501", alice, nil, nil, "limit", ""},
		{"bad cursor", 400, "GET", "/api/v1/tunnels?org=acme&cursor=abc", alice, nil, nil, "cursor", ""},
		{"cursor of another list", 400, "GET", "/api/v1/tunnels?org=acme&cursor=eyJrIjoib3JncyIsInYiOlsiYSJdfQ", alice, nil, nil, "cursor", ""},
		{"bad If-Match", 400, "PATCH", "/api/v1/tunnels/" + tun.ID + "?org=acme", alice, `{"upstream":"http://127.0.0.1:2"}`, []string{"If-Match", "abc"}, "If-Match", ""},
		{"bad wait_for", 400, "GET", "/api/v1/tunnels?org=acme&wait_for=-1", alice, nil, nil, "wait_for", ""},
		{"no token", 401, "GET", "/api/v1/tunnels", "", nil, nil, "", ""},
		{"forged token", 401, "GET", "/api/v1/tunnels", "a.b.c", nil, nil, "", "invalid token"},
		{"forbidden", 403, "POST", "/api/v1/orgs", alice, map[string]string{"name": "initech"}, nil, "", "may not create orgs"},
		{"unknown tunnel", 404, "GET", "/api/v1/tunnels/" + uuid.NewString() + "?org=acme", alice, nil, nil, "", "not found"},
		{"malformed tunnel id", 404, "PATCH", "/api/v1/tunnels/nope?org=acme", alice, `{"upstream":"http://127.0.0.1:2"}`, nil, "", "not found"},
		{"unknown route", 404, "GET", "/api/v1/nope", alice, nil, nil, "", ""},
		{"wrong method", 405, "PUT", "/api/v1/tunnels", alice, nil, nil, "", ""},
		{"org name taken", 409, "POST", "/api/v1/orgs", root, map[string]string{"name": "acme"}, nil, "", "taken"},
		{"tunnel name taken", 409, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}, nil, "", "used by another tunnel"},
		{"body too large", 413, "POST", "/api/v1/tunnels?org=acme", alice, big, nil, "", "larger than 65536"},
		{"not json", 415, "POST", "/api/v1/tunnels?org=acme", alice, `{}`, []string{"Content-Type", "text/plain"}, "", ""},
		{"invalid name", 422, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "Not A Name", "upstream": "http://127.0.0.1:1"}, nil, "name", ""},
		{"wrong type", 422, "POST", "/api/v1/tunnels?org=acme", alice, `{"name": 7, "upstream": "http://127.0.0.1:1"}`, nil, "name", ""},
		{"invalid upstream and name", 422, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "-", "upstream": "ftp://x"}, nil, "upstream", ""},
		{"ambiguous org", 422, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "y", "upstream": "http://127.0.0.1:1"}, nil, "org", "2 organizations"},
		{"org twice", 400, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"org": "globex", "name": "y", "upstream": "http://127.0.0.1:1"}, nil, "org", ""},
	}
	for _, c := range cases {
		r := e.call(c.method, c.path, c.tok, c.body, c.headers...)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			continue
		}
		p := r.problem(t)
		if c.field != "" && !slices.ContainsFunc(p.Errors, func(f domain.FieldError) bool { return f.Field == c.field && f.Message != "" }) {
			t.Errorf("%s: no field error for %q: %+v", c.name, c.field, p)
		}
		if c.detail != "" && !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%s: detail %q does not mention %q", c.name, p.Detail, c.detail)
		}
		if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Bearer realm="tunnelplane"`) {
			t.Errorf("%s: WWW-Authenticate %q", c.name, r.header.Get("WWW-Authenticate"))
		}
	}
	if h := head(t, e.store); h != start {
		t.Errorf("refused requests appended %d records", h-start)
	}
	// The request id is echoed and lands in the problem.
	r := e.call("GET", "/api/v1/tunnels/"+uuid.NewString()+"?org=acme", alice, nil, "X-Request-ID", "req-42")
	if p := r.problem(t); p.RequestID != "req-42" || r.header.Get("X-Request-ID") != "req-42" {
		t.Errorf("request id: %+v %s", p, r.header.Get("X-Request-ID"))
	}
	// A chunked body over the limit (no Content-Length) is refused too.
	req, _ := http.NewRequest("POST", e.base+"/api/v1/tunnels?org=acme", strings.NewReader(big))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+alice)
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Errorf("chunked oversize body: %d", res.StatusCode)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	// An identity provider serving its JWKS; it rotates its key during the test.
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	var published atomic.Value
	jwk := func(kid string, k any) map[string]string {
		switch k := k.(type) {
		case *rsa.PrivateKey:
			return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
		case ed25519.PrivateKey:
			return map[string]string{"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))}
		}
		return nil
	}
	published.Store([]any{jwk("rsa-1", rsaKey)})
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": published.Load()})
	}))
	defer idp.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	e := newEnv(t, func(c *api.Config) {
		c.JWKSURL, c.JWTIssuer, c.HTTPClient = idp.URL, "https://idp.example", &http.Client{Transport: tr, Timeout: 5 * time.Second}
	})
	root := e.superadmin()
	org := e.createOrg(root, "acme", "idp|erin")
	mint := func(method jwt.SigningMethod, key any, kid, iss, aud string, exp time.Duration) string {
		tk := jwt.NewWithClaims(method, jwt.RegisteredClaims{Issuer: iss, Subject: "idp|erin", Audience: jwt.ClaimStrings{aud},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(exp)), IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))})
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ok := mint(jwt.SigningMethodRS256, rsaKey, "rsa-1", "https://idp.example", token.AudienceAPI, time.Hour)
	var tun commands.Result
	e.must(201, "POST", "/api/v1/tunnels", ok, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}).decode(t, &tun)
	var got api.Tunnel
	e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels/%s?wait_for=%d", tun.ID, tun.Position), ok, nil).decode(t, &got)
	if got.Owner != "idp|erin" || got.OrgID != org {
		t.Fatalf("tunnel of an external user: %+v", got)
	}
	// The provider adds an Ed25519 key: an unknown kid makes the API fetch the JWKS again.
	published.Store([]any{jwk("rsa-1", rsaKey), jwk("ed-2", edKey)})
	e.must(200, "GET", "/api/v1/tunnels", mint(jwt.SigningMethodEdDSA, edKey, "ed-2", "https://idp.example", token.AudienceAPI, time.Hour), nil)

	for name, bad := range map[string]string{
		"wrong issuer":        mint(jwt.SigningMethodRS256, rsaKey, "rsa-1", "https://evil.example", token.AudienceAPI, time.Hour),
		"wrong audience":      mint(jwt.SigningMethodRS256, rsaKey, "rsa-1", "https://idp.example", token.AudienceAgent, time.Hour),
		"expired":             mint(jwt.SigningMethodRS256, rsaKey, "rsa-1", "https://idp.example", token.AudienceAPI, -time.Hour),
		"unknown key":         mint(jwt.SigningMethodEdDSA, edKey, "ed-9", "https://idp.example", token.AudienceAPI, time.Hour),
		"agent token as user": e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", ok, nil).Token,
	} {
		r := e.call("GET", "/api/v1/tunnels", bad, nil)
		if r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q", name, r.status, r.header.Get("WWW-Authenticate"))
		}
	}
	// A control-plane token of a key that is not in the log is refused; one past its expiry too.
	stray, _ := eventstore.GenerateSigningKey()
	rawStray, _ := token.MintUser(stray, token.DefaultIssuer, "root", "", time.Hour, time.Now())
	rawOld, _ := token.MintUser(e.svc.TokenKey(), token.DefaultIssuer, "root", "", time.Minute, time.Now().Add(-time.Hour))
	for _, bad := range []string{rawStray, rawOld} {
		e.must(401, "GET", "/api/v1/keys", bad, nil).problem(t)
	}
	// Failed logins are audited, aggregated.
	e.svc.Auditor.Flush(context.Background())
	if err := e.runnerWait(t, head(t, e.store)-1); err != nil {
		t.Fatal(err)
	}
	var audit api.List[api.AuditEntry]
	e.must(200, "GET", "/api/v1/audit?org=*&type=audit.auth_failed", root, nil).decode(t, &audit)
	if len(audit.Items) < 3 {
		t.Fatalf("auth_failed events: %+v", audit.Items)
	}
	recs, err := e.store.ReadStream(context.Background(), domain.AuditStream, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, r := range recs {
		if ev, err := domain.Decode(r.Type, r.Payload); err == nil {
			if f, ok := ev.(*domain.AuthFailed); ok {
				total += f.Count
			}
		}
	}
	if total != 7 {
		t.Fatalf("%d failed authentications audited, want 7", total)
	}
}

// TestIdempotencyAndConcurrency: a repeated Idempotency-Key returns the first response and writes
// nothing; reusing it for another body is 422; two PATCHes racing with the same If-Match: one
// wins, the other gets 412.
func TestIdempotencyAndConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	body := map[string]string{"name": "llm", "upstream": "http://127.0.0.1:1"}
	first := e.must(201, "POST", "/api/v1/tunnels", alice, body, "Idempotency-Key", "k-1")
	h := head(t, e.store)
	again := e.must(201, "POST", "/api/v1/tunnels", alice, body, "Idempotency-Key", "k-1")
	if string(again.body) != string(first.body) || again.header.Get("Location") != first.header.Get("Location") {
		t.Fatalf("replay differs:\n%s\n%s", first.body, again.body)
	}
	if head(t, e.store) != h {
		t.Fatal("the replay appended")
	}
	p := e.must(422, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "other", "upstream": "http://127.0.0.1:1"}, "Idempotency-Key", "k-1").problem(t)
	if p.Type != api.ProblemTypeBase+"idempotency-key-reused" {
		t.Fatalf("mismatch problem: %+v", p)
	}
	var tun commands.Result
	first.decode(t, &tun)
	tok1 := e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, nil, "Idempotency-Key", "tok-1")
	tok2 := e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, nil, "Idempotency-Key", "tok-1")
	if tok1.Token == "" || tok1.Token != tok2.Token || tok1.ID != tok2.ID {
		t.Fatalf("token replay: %+v %+v", tok1, tok2)
	}

	var last atomic.Uint64
	last.Store(tok2.Position)
	for round := range 5 {
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		r := e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels/%s?wait_for=%d", tun.ID, last.Load()), alice, nil)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.call("PATCH", "/api/v1/tunnels/"+tun.ID, alice, map[string]string{"upstream": fmt.Sprintf("http://127.0.0.1:%d", 1000+10*round+i)},
					"If-Match", r.header.Get("ETag"))
				statuses[i] = r.status
				var res commands.Result
				if json.Unmarshal(r.body, &res) == nil {
					for p := last.Load(); res.Position > p && !last.CompareAndSwap(p, res.Position); p = last.Load() {
					}
				}
			}()
		}
		wg.Wait()
		slices.Sort(statuses)
		if fmt.Sprint(statuses) != "[200 412]" {
			t.Fatalf("round %d: racing PATCHes with the same If-Match: %v, want one 200 and one 412", round, statuses)
		}
		// Without If-Match both succeed (the command retries on a concurrent change).
		wg.Add(2)
		for i := range 2 {
			go func() {
				defer wg.Done()
				r := e.call("PATCH", "/api/v1/tunnels/"+tun.ID, alice, map[string]string{"upstream": fmt.Sprintf("http://127.0.0.1:%d", 2000+10*round+i)})
				statuses[i] = r.status
				var res commands.Result
				if json.Unmarshal(r.body, &res) == nil {
					for p := last.Load(); res.Position > p && !last.CompareAndSwap(p, res.Position); p = last.Load() {
					}
				}
			}()
		}
		wg.Wait()
		if fmt.Sprint(statuses) != "[200 200]" {
			t.Fatalf("round %d: PATCHes without If-Match: %v", round, statuses)
		}
	}
}

// TestReadYourWritesAndOps: wait_for makes a read see the write; a position never reached is 503
// with Retry-After; rebuilds swap in identical read models; health, readiness, metrics and the
// OpenAPI document.
func TestReadYourWritesAndOps(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *api.Config) { c.MaxWait = 2 * time.Second }) // short, yet not a race with a loaded CI machine
	root := e.superadmin()
	e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	for i := range 20 {
		res := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": fmt.Sprintf("t-%d", i), "upstream": "http://127.0.0.1:1"})
		var got api.Tunnel
		e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels/%s?wait_for=%d", res.ID, res.Position), alice, nil).decode(t, &got)
		if got.ID != res.ID {
			t.Fatalf("read after write %d: %+v", i, got)
		}
	}
	// wait_for=latest: everything the log holds when the read arrives, without knowing a position.
	e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "latest", "upstream": "http://127.0.0.1:1"})
	var latest api.List[api.Tunnel]
	e.must(200, "GET", "/api/v1/tunnels?name=latest&wait_for=latest", alice, nil).decode(t, &latest)
	if len(latest.Items) != 1 {
		t.Fatalf("wait_for=latest: %+v", latest)
	}
	r := e.must(503, "GET", "/api/v1/tunnels?wait_for=1000000", alice, nil)
	if r.header.Get("Retry-After") == "" || r.problem(t).Type != api.ProblemTypeBase+"not-caught-up" {
		t.Fatalf("wait_for timeout: %v %s", r.header, r.body)
	}

	// Rebuild through the API: the read model is the same before and after, in a new generation.
	list := func() string {
		return string(e.must(200, "GET", "/api/v1/tunnels?limit=500&state=all", alice, nil).body)
	}
	before := list()
	var st struct {
		Name       string `json:"name"`
		Generation int    `json:"generation"`
	}
	e.must(200, "POST", "/api/v1/projections/tunnels/rebuild", root, nil).decode(t, &st)
	if st.Name != "tunnels" || st.Generation != 2 {
		t.Fatalf("rebuild status: %+v", st)
	}
	if after := list(); after != before {
		t.Fatalf("rebuilt read model differs:\n%s\n%s", before, after)
	}
	e.must(404, "POST", "/api/v1/projections/nope/rebuild", root, nil).problem(t)

	var health map[string]string
	e.must(200, "GET", "/healthz", "", nil).decode(t, &health)
	var ready api.Readiness
	e.must(200, "GET", "/readyz", "", nil).decode(t, &ready)
	if !ready.Ready || len(ready.Projections) != len(projections.All()) {
		t.Fatalf("readyz: %+v", ready)
	}
	metrics := string(e.must(200, "GET", "/metrics", "", nil).body)
	for _, m := range []string{`tunnelplane_http_requests_total{code="201",method="POST",route="/api/v1/tunnels"}`, "tunnelplane_projection_position", "tunnelplane_http_request_duration_seconds_bucket"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	// With the projections stopped the instance is not ready.
	e.runner.Stop()
	r = e.must(503, "GET", "/readyz", "", nil)
	r.decode(t, &ready)
	if ready.Ready || len(ready.Problems) == 0 {
		t.Fatalf("readyz with stopped projections: %+v", ready)
	}
}

// TestOpenAPICoversRoutes fails when a route is missing from the document or the document lists
// a route that does not exist.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.must(200, "GET", "/api/v1/openapi.json", "", nil)
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	r.decode(t, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	documented, err := api.OpenAPIRoutes(r.body)
	if err != nil {
		t.Fatal(err)
	}
	routes := e.api.Routes()
	slices.Sort(routes)
	for _, rt := range routes {
		if !slices.Contains(documented, rt) {
			t.Errorf("route %s is not in the OpenAPI document", rt)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("the OpenAPI document lists %s, which is not a route", d)
		}
	}
	if len(routes) < 29 {
		t.Errorf("only %d routes: %v", len(routes), routes)
	}
}
