package oidctest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The authorization code flow: the library validates the request (client, redirect URI, scopes,
// PKCE) and calls CreateAuthRequest, then sends the browser to the client's LoginURL (/login
// here); the form there names the user, and the browser goes on to the library's callback, which
// makes the code (SaveAuthCode) and redirects to the client. The code is exchanged once at the
// token endpoint (AuthRequestByCode, the PKCE verifier checked by the library, DeleteAuthRequest).

// authReq is an authorization request under way.
type authReq struct {
	id       string
	req      oidc.AuthRequest
	subject  string
	authTime time.Time
	done     bool
	expires  time.Time
}

func (a *authReq) GetID() string                         { return a.id }
func (a *authReq) GetACR() string                        { return "" }
func (a *authReq) GetAMR() []string                      { return []string{"pwd"} }
func (a *authReq) GetAudience() []string                 { return []string{a.req.ClientID} }
func (a *authReq) GetAuthTime() time.Time                { return a.authTime }
func (a *authReq) GetClientID() string                   { return a.req.ClientID }
func (a *authReq) GetNonce() string                      { return a.req.Nonce }
func (a *authReq) GetRedirectURI() string                { return a.req.RedirectURI }
func (a *authReq) GetResponseType() oidc.ResponseType    { return a.req.ResponseType }
func (a *authReq) GetResponseMode() oidc.ResponseMode    { return a.req.ResponseMode }
func (a *authReq) GetScopes() []string                   { return a.req.Scopes }
func (a *authReq) GetState() string                      { return a.req.State }
func (a *authReq) GetSubject() string                    { return a.subject }
func (a *authReq) Done() bool                            { return a.done }
func (a *authReq) GetCodeChallenge() *oidc.CodeChallenge { return codeChallenge(a.req) }

func codeChallenge(r oidc.AuthRequest) *oidc.CodeChallenge {
	if r.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: r.CodeChallenge, Method: r.CodeChallengeMethod}
}

// authReqLifetime bounds how long a user may take on the login page.
const authReqLifetime = 5 * time.Minute

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

var errNoAuthRequest = errors.New("oidctest: no such authorization request")

func (s *storage) CreateAuthRequest(_ context.Context, r *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if r.CodeChallenge == "" || r.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		// A provider for public clients that demands PKCE with S256 (RFC 9700 2.1.1).
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with S256 is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for id, a := range s.authReqs {
		if now.After(a.expires) {
			delete(s.authReqs, id)
		}
	}
	if len(s.authReqs) > 1000 {
		return nil, errors.New("oidctest: too many authorization requests")
	}
	a := &authReq{id: randomID(), req: *r, expires: now.Add(authReqLifetime)}
	s.authReqs[a.id] = a
	return a, nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.authReqs[id]
	if !ok || time.Now().After(a.expires) {
		return nil, errNoAuthRequest
	}
	return a, nil
}

func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.codes[code]
	if !ok {
		return nil, errNoAuthRequest
	}
	a, ok := s.authReqs[id]
	if !ok || time.Now().After(a.expires) {
		return nil, errNoAuthRequest
	}
	return a, nil
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.authReqs[id]; !ok {
		return errNoAuthRequest
	}
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest ends a request once its code was exchanged: a code is redeemed once.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authReqs, id)
	for c, rid := range s.codes {
		if rid == id {
			delete(s.codes, c)
		}
	}
	return nil
}

var loginForm = template.Must(template.New("login").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Test provider: log in</title></head>
<body><h1>Log in</h1>
<form method="post" action="/login"><input type="hidden" name="id" value="{{.}}">
<label>Username <input id="username" name="username" autocomplete="username"></label>
<button id="login" type="submit">Log in</button></form></body></html>
`))

// loginPage is the provider's login page for an authorization request.
func (s *storage) loginPage(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	s.mu.Lock()
	_, ok := s.authReqs[id]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no such authorization request", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = loginForm.Execute(w, id)
}

// logIn takes the login page's form: the user named (a real provider would authenticate them)
// completes the request, and the browser goes on to the library's callback.
func (s *storage) logIn(w http.ResponseWriter, r *http.Request, issuer string) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	id, user := r.PostForm.Get("id"), r.PostForm.Get("username")
	s.mu.Lock()
	var subject string
	for _, u := range s.users {
		if u.Username == user {
			subject = u.Subject
		}
	}
	a, ok := s.authReqs[id]
	if ok && subject != "" {
		a.subject, a.authTime, a.done = subject, time.Now(), true
		s.logins++
	}
	s.mu.Unlock()
	switch {
	case subject == "":
		http.Error(w, "unknown user", http.StatusForbidden)
	case !ok:
		http.Error(w, "no such authorization request", http.StatusNotFound)
	default:
		http.Redirect(w, r, issuer+"/authorize/callback?id="+id, http.StatusFound)
	}
}

// Logins is how many users logged in on the login page.
func (p *Provider) Logins() int {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.logins
}

// SetGroups changes the groups claim a user's next tokens carry.
func (p *Provider) SetGroups(subject string, groups []string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if u, ok := p.st.users[subject]; ok {
		u.Groups = slices.Clone(groups)
		p.st.users[subject] = u
	}
}

// IssueIDTokenWithNonce is IssueIDToken for the authorization code flow: the token carries nonce.
func (p *Provider) IssueIDTokenWithNonce(t testing.TB, clientID, subject, nonce string, validity time.Duration) string {
	t.Helper()
	a := &authReq{id: randomID(), req: oidc.AuthRequest{ClientID: clientID, Nonce: nonce,
		Scopes: []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, "groups"}}, subject: subject, authTime: time.Now(), done: true}
	raw, err := op.CreateIDToken(context.Background(), p.Issuer, a, validity, "", "", p.st, client{id: clientID})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
