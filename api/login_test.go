package api_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
)

func withOIDC(t *testing.T, issuer string) func(*api.Config) {
	return func(c *api.Config) {
		v, err := oidcauth.New(oidcauth.Config{Issuer: issuer, ClientID: "tunnelplane-cli"})
		if err != nil {
			t.Fatal(err)
		}
		c.OIDC, c.LoginTTL = v, 2*time.Hour
	}
}

// An ID token of the configured provider becomes a user token that works on the API, recorded as
// user.logged_in; refused ID tokens get a 401 problem that does not quote them, audited as failed
// logins.
func TestOIDCLogin(t *testing.T) {
	t.Parallel()
	users := []oidctest.User{{Subject: "u-1", Name: "Alice Doe", Username: "alice", Groups: []string{"ml-team"}}}
	idp := oidctest.Start(t, oidctest.Options{Clients: []string{"tunnelplane-cli", "another-app"}, Users: users})
	other := oidctest.Start(t, oidctest.Options{Users: users})
	e := newEnv(t, withOIDC(t, idp.Issuer))

	var settings api.OIDCSettings
	e.must(200, "GET", "/api/v1/auth/oidc", "", nil).decode(t, &settings)
	if settings.Issuer != idp.Issuer || settings.ClientID != "tunnelplane-cli" {
		t.Fatalf("settings: %+v", settings)
	}

	var login api.OIDCLogin
	idToken := idp.IssueIDToken(t, "tunnelplane-cli", "u-1", time.Minute)
	e.must(200, "POST", "/api/v1/auth/oidc/token", "", api.OIDCLoginInput{IDToken: idToken}).decode(t, &login)
	want := domain.ExternalUserID(idp.Issuer, "u-1")
	if login.UserID != want || login.Name != "Alice Doe" || strings.Join(login.Groups, ",") != "ml-team" || login.TokenType != "Bearer" {
		t.Fatalf("login: %+v", login)
	}
	if d := time.Until(login.ExpiresAt); d < time.Hour+50*time.Minute || d > 2*time.Hour {
		t.Fatalf("the token lives %s, want the configured 2h", d)
	}
	// The token is a user token like any: the user holds no role yet, so they see no organization
	// but are authenticated.
	var orgs api.List[api.Org]
	e.must(200, "GET", "/api/v1/orgs", login.Token, nil).decode(t, &orgs)
	root := e.superadmin()
	e.createOrg(root, "acme", want)
	e.must(200, "GET", "/api/v1/orgs/acme", login.Token, nil)

	recs, err := e.store.ReadAll(context.Background(), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var logins []domain.UserLoggedIn
	for _, r := range recs {
		if r.Type != domain.TypeUserLoggedIn {
			continue
		}
		var ev domain.UserLoggedIn
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		var md domain.Metadata
		_ = json.Unmarshal(r.Metadata, &md)
		if md.Actor != want || md.RequestID == "" {
			t.Fatalf("the login's metadata: %+v", md)
		}
		if strings.Contains(string(r.Payload), login.Token) {
			t.Fatal("the log holds the token")
		}
		logins = append(logins, ev)
	}
	if len(logins) != 1 || logins[0].UserID != want || logins[0].Issuer != idp.Issuer || logins[0].Method != "oidc" || logins[0].Groups[0] != "ml-team" {
		t.Fatalf("logins recorded: %+v", logins)
	}

	for _, tc := range []struct{ name, raw, says string }{
		{"another issuer", other.IssueIDToken(t, "tunnelplane-cli", "u-1", time.Minute), "another identity provider"},
		{"wrong audience", idp.IssueIDToken(t, "another-app", "u-1", time.Minute), "another client"},
		{"expired", idp.IssueIDToken(t, "tunnelplane-cli", "u-1", -time.Minute), "expired"},
		{"our own user token", login.Token, "another identity provider"},
		// An ID token is exchanged once: one seen on its way mints nothing more.
		{"exchanged again", idToken, "exchanged already"},
	} {
		r := e.must(401, "POST", "/api/v1/auth/oidc/token", "", api.OIDCLoginInput{IDToken: tc.raw})
		p := r.problem(t)
		if !strings.Contains(p.Detail, tc.says) || p.Type != api.ProblemTypeBase+"unauthenticated" {
			t.Errorf("%s: %+v", tc.name, p)
		}
		if strings.Contains(string(r.body), tc.raw[strings.LastIndexByte(tc.raw, '.')+1:]) {
			t.Errorf("%s: the answer quotes the token", tc.name)
		}
	}
	e.must(400, "POST", "/api/v1/auth/oidc/token", "", `{"id_token":"x","extra":1}`).problem(t)

	e.svc.Auditor.Flush(context.Background())
	recs, err = e.store.ReadAll(context.Background(), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	refusals := 0
	for _, r := range recs {
		var ev domain.AuthFailed
		if r.Type == domain.TypeAuthFailed && json.Unmarshal(r.Payload, &ev) == nil && ev.Reason == "oidc_id_token_refused" {
			refusals += ev.Count
		}
	}
	if refusals != 5 {
		t.Errorf("%d refused logins audited, want 5", refusals)
	}
}

// Without --oidc-issuer both routes say so (404), whoever asks.
func TestOIDCLoginNotConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tok := range []string{"", e.superadmin()} {
		p := e.must(404, "GET", "/api/v1/auth/oidc", tok, nil).problem(t)
		if !strings.Contains(p.Detail, "--oidc-issuer") {
			t.Errorf("detail: %s", p.Detail)
		}
		e.must(404, "POST", "/api/v1/auth/oidc/token", tok, api.OIDCLoginInput{IDToken: "x"}).problem(t)
	}
}
