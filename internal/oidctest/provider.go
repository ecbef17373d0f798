// Package oidctest runs a real OpenID Connect provider for tests: zitadel/oidc's op package (the
// provider's discovery, keys, authorization, device authorization and token endpoints are the
// library's) over an in-memory storage of a few users and public clients, with a device approval
// form at /device and a login page at /login (the authorization code flow; PKCE is required of
// public clients by the library) as a provider would have.
//
// It is test support: nothing but tests may import it.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is someone who can log in at the provider.
type User struct {
	Subject, Name, Username, Email string
	Groups                         []string
}

// Provider is a running provider.
type Provider struct {
	Issuer string
	srv    *httptest.Server
	op     *op.Provider
	st     *storage
}

// Options tune a provider.
type Options struct {
	// Clients are the public clients (device flow); default "tunnelplane-cli".
	Clients []string
	Users   []User
	// PollInterval is the device flow's interval (default 1s); DeviceLifetime how long a code
	// lives (default 1m).
	PollInterval, DeviceLifetime time.Duration
	// SlowDownFirst answers the first token poll of every device code with slow_down.
	SlowDownFirst bool
	// RedirectURIs are the clients' registered redirect URIs (the authorization code flow).
	RedirectURIs []string
}

// Start runs a provider on a loopback port until the test ends.
func Start(t testing.TB, o Options) *Provider {
	t.Helper()
	if len(o.Clients) == 0 {
		o.Clients = []string{"tunnelplane-cli"}
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.DeviceLifetime == 0 {
		o.DeviceLifetime = time.Minute
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	st := &storage{key: key, kid: fmt.Sprintf("k-%d", time.Now().UnixNano()), users: map[string]User{}, clients: map[string]bool{},
		devices: map[string]*device{}, slowDownFirst: o.SlowDownFirst, redirects: o.RedirectURIs, authReqs: map[string]*authReq{}, codes: map[string]string{}}
	for _, u := range o.Users {
		st.users[u.Subject] = u
	}
	for _, c := range o.Clients {
		st.clients[c] = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{Issuer: "http://" + ln.Addr().String(), st: st}
	var cryptoKey [32]byte
	_, _ = rand.Read(cryptoKey[:])
	cfg := &op.Config{CryptoKey: cryptoKey, SupportedScopes: []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, "groups"},
		DeviceAuthorization: op.DeviceAuthorizationConfig{Lifetime: o.DeviceLifetime, PollInterval: o.PollInterval, UserFormPath: "/device",
			UserCode: op.UserCodeBase20}}
	p.op, err = op.NewOpenIDProvider(p.Issuer, cfg, st, op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /device", st.approve)
	mux.HandleFunc("GET /login", st.loginPage)
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) { st.logIn(w, r, p.Issuer) })
	mux.Handle("/", p.op)
	p.srv = httptest.NewUnstartedServer(mux)
	_ = p.srv.Listener.Close()
	p.srv.Listener = ln
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// IssueIDToken signs an ID token for user and client through the provider's own token code
// (op.CreateIDToken), valid for validity (negative: already expired).
func (p *Provider) IssueIDToken(t testing.TB, clientID, subject string, validity time.Duration) string {
	t.Helper()
	req := &device{clientID: clientID, scopes: []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, "groups"}, subject: subject, done: true,
		authTime: time.Now()}
	raw, err := op.CreateIDToken(context.Background(), p.Issuer, req.state(), validity, "", "", p.st, client{id: clientID})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Approvals is how many device codes users approved.
func (p *Provider) Approvals() int {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.approvals
}

// ---- storage ----

var errUnsupported = errors.New("oidctest: not supported by this provider")

type device struct {
	clientID, userCode string
	scopes             []string
	expires            time.Time
	subject            string
	done, denied       bool
	authTime           time.Time
	polled             int
}

func (d *device) state() *op.DeviceAuthorizationState {
	return &op.DeviceAuthorizationState{ClientID: d.clientID, Scopes: d.scopes, Expires: d.expires, Done: d.done, Denied: d.denied,
		Subject: d.subject, AMR: []string{"pwd"}, AuthTime: d.authTime}
}

type storage struct {
	key           *rsa.PrivateKey
	kid           string
	slowDownFirst bool

	redirects []string

	mu        sync.Mutex
	users     map[string]User
	clients   map[string]bool
	devices   map[string]*device // by device code
	approvals int
	authReqs  map[string]*authReq // by id
	codes     map[string]string   // code → auth request id
	logins    int
}

// approve is the provider's device page: the user gives the code, who they are and whether they
// allow it (a real provider would authenticate them here).
func (s *storage) approve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	code, user, action := r.PostForm.Get("user_code"), r.PostForm.Get("username"), r.PostForm.Get("action")
	s.mu.Lock()
	defer s.mu.Unlock()
	var subject string
	for _, u := range s.users {
		if u.Username == user {
			subject = u.Subject
		}
	}
	if subject == "" {
		http.Error(w, "unknown user", http.StatusForbidden)
		return
	}
	for _, d := range s.devices {
		if d.userCode == code && !d.done && !d.denied && time.Now().Before(d.expires) {
			d.subject, d.authTime = subject, time.Now()
			if action == "deny" {
				d.denied = true
			} else {
				d.done = true
				s.approvals++
			}
			_, _ = fmt.Fprintln(w, "done; return to your terminal")
			return
		}
	}
	http.Error(w, "no such code", http.StatusNotFound)
}

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[clientID] {
		return errors.New("unknown client")
	}
	for _, d := range s.devices {
		if d.userCode == userCode {
			return op.ErrDuplicateUserCode
		}
	}
	s.devices[deviceCode] = &device{clientID: clientID, userCode: userCode, scopes: scopes, expires: expires}
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(_ context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[deviceCode]
	if !ok || d.clientID != clientID {
		return nil, errors.New("no such device code")
	}
	d.polled++
	if s.slowDownFirst && d.polled == 1 {
		return nil, context.DeadlineExceeded // the op package answers slow_down
	}
	st := d.state()
	if d.done {
		delete(s.devices, deviceCode) // a device code is redeemed once
	}
	return st, nil
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[id] {
		return nil, errors.New("unknown client")
	}
	return client{id: id, redirects: s.redirects}, nil
}

func (s *storage) setUserinfo(userinfo *oidc.UserInfo, subject string, scopes []string) error {
	s.mu.Lock()
	u, ok := s.users[subject]
	s.mu.Unlock()
	if !ok {
		return errors.New("unknown user")
	}
	userinfo.Subject = u.Subject
	if slices.Contains(scopes, oidc.ScopeProfile) {
		userinfo.Name, userinfo.PreferredUsername = u.Name, u.Username
	}
	if slices.Contains(scopes, oidc.ScopeEmail) {
		userinfo.Email = u.Email
	}
	if slices.Contains(scopes, "groups") && u.Groups != nil {
		userinfo.AppendClaims("groups", u.Groups)
	}
	return nil
}

func (s *storage) SetUserinfoFromRequest(_ context.Context, userinfo *oidc.UserInfo, r op.IDTokenRequest, scopes []string) error {
	return s.setUserinfo(userinfo, r.GetSubject(), scopes)
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil // SetUserinfoFromRequest does it
}

func (s *storage) SetUserinfoFromToken(_ context.Context, userinfo *oidc.UserInfo, _, subject, _ string) error {
	return s.setUserinfo(userinfo, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, "groups"})
}

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return fmt.Sprintf("at-%d", time.Now().UnixNano()), time.Now().Add(5 * time.Minute), nil
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return signingKey{s}, nil }
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}
func (s *storage) KeySet(context.Context) ([]op.Key, error) { return []op.Key{publicKey{s}}, nil }
func (s *storage) Health(context.Context) error             { return nil }

// What this provider does not do (refresh, introspection, JWT profile): the device flow, the
// authorization code flow and ID tokens need none of it.
func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errUnsupported
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errUnsupported }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType()
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}
func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errUnsupported
}
func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errUnsupported
}
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}

type signingKey struct{ s *storage }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.s.key }
func (k signingKey) ID() string                                  { return k.s.kid }

type publicKey struct{ s *storage }

func (k publicKey) ID() string                         { return k.s.kid }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.s.key.PublicKey }

// client is a public native client allowed the device flow and the authorization code flow
// (with PKCE, which the library requires of a client without a secret).
type client struct {
	id        string
	redirects []string
}

func (c client) GetID() string                       { return c.id }
func (c client) RedirectURIs() []string              { return c.redirects }
func (c client) PostLogoutRedirectURIs() []string    { return nil }
func (c client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeDeviceCode, oidc.GrantTypeCode}
}
func (c client) LoginURL(id string) string            { return "/login?id=" + url.QueryEscape(id) }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c client) IDTokenLifetime() time.Duration       { return 5 * time.Minute }
func (c client) DevMode() bool                        { return false }
func (c client) IsScopeAllowed(string) bool           { return true }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
