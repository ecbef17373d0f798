package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// UserLoggedIn records an interactive login: an identity provider's ID token was exchanged for a
// tunnelplane user token. The token itself is never recorded, only its id and expiry; who logged
// in from where is in the record's metadata (actor, client address, user agent).
type UserLoggedIn struct {
	UserID string `json:"user_id"`
	// Issuer is the identity provider (its OIDC issuer URL); Method how the login was made.
	Issuer string `json:"issuer"`
	Method string `json:"method"`
	// Groups is the provider's groups claim as the token carries it.
	Groups    []string  `json:"groups,omitempty"`
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
	// Host is the one host the token is valid on (a browser login for a tunnel host or the
	// API's own host); empty for a token valid everywhere (the CLI's).
	Host string `json:"host,omitempty"`
}

func (UserLoggedIn) EventType() string { return TypeUserLoggedIn }

// Login methods: an OIDC ID token exchanged at the control plane (the CLI's device flow), or a
// browser's authorization code flow ending in a cookie for one host.
const (
	LoginMethodOIDC        = "oidc"
	LoginMethodOIDCBrowser = "oidc_browser"
)

// MaxLoginHostBytes bounds a login's host (a DNS name and a port).
const MaxLoginHostBytes = 253 + 6

// CheckLoginHost validates the host a browser login's token is bound to: a lower-case DNS name
// or IP literal with an optional port, as a browser sends it in Host.
func CheckLoginHost(host string) error {
	if host == "" || len(host) > MaxLoginHostBytes || strings.ToLower(host) != host {
		return fmt.Errorf("login host: want a lower-case host[:port] of at most %d bytes", MaxLoginHostBytes)
	}
	o, err := CanonicalOrigin("https://" + host)
	if err != nil || (o != "https://"+host && o+":443" != "https://"+host) {
		return fmt.Errorf("login host %.100q is not a host[:port]", host)
	}
	return nil
}

// BrowserLogIn is LogIn for a browser login bound to host (CheckLoginHost).
func BrowserLogIn(userID, issuer string, groups []string, tokenID string, expires time.Time, host string) (UserLoggedIn, error) {
	e, err := LogIn(userID, issuer, groups, tokenID, expires)
	if err != nil {
		return e, err
	}
	if err := CheckLoginHost(host); err != nil {
		var p problems
		p.add("host", "%s", err.Error())
		return UserLoggedIn{}, p.err()
	}
	e.Method, e.Host = LoginMethodOIDCBrowser, host
	return e, nil
}

// Bounds of a login: a provider's groups claim may list many groups; the token (and the nodes'
// view, which keeps 256 per token) carries at most MaxLoginGroups.
const (
	MaxLoginGroups    = 64
	MaxIssuerBytes    = 512
	MaxLoginUserBytes = MaxSubjectBytes
)

// LoginStream is the stream of one login (a new stream per login: logins do not contend).
func LoginStream(tokenID string) string { return "login-" + tokenID }

// ExternalUserID maps an identity provider's (issuer, subject) to a tunnelplane user id: stable,
// distinct per issuer, and valid as an actor and a grant's user. It is "<prefix>:<sub>" where prefix
// is the first 8 bytes of SHA-256 of the issuer in hex, so two providers' "alice" differ; a
// subject with characters a user id may not hold is replaced by its digest.
func ExternalUserID(issuer, subject string) string {
	is := sha256.Sum256([]byte(issuer))
	prefix := "oidc-" + hex.EncodeToString(is[:8]) + ":"
	if len(prefix)+len(subject) > MaxLoginUserBytes || !plainSubject(subject) {
		sum := sha256.Sum256([]byte(subject))
		return prefix + "sha256-" + hex.EncodeToString(sum[:16])
	}
	return prefix + subject
}

// plainSubject: printable ASCII without spaces (what providers' subjects are: ids, UUIDs, emails).
func plainSubject(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// LogIn validates a login and builds its event.
func LogIn(userID, issuer string, groups []string, tokenID string, expires time.Time) (UserLoggedIn, error) {
	var p problems
	switch {
	case userID == "":
		p.add("user_id", "is required")
	case len(userID) > MaxLoginUserBytes || !utf8.ValidString(userID) || strings.IndexFunc(userID, unicode.IsControl) >= 0:
		p.add("user_id", "must be UTF-8 of at most %d bytes without control characters", MaxLoginUserBytes)
	}
	if u, err := url.Parse(issuer); err != nil || len(issuer) > MaxIssuerBytes || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add("issuer", "must be an http(s) URL of at most %d bytes", MaxIssuerBytes)
	}
	if len(groups) > MaxLoginGroups {
		p.add("groups", "more than %d", MaxLoginGroups)
	}
	for _, g := range groups {
		if err := CheckGroup(g); err != nil {
			p.add("groups", "%s", err.Error())
			break
		}
	}
	if !ValidID(tokenID) {
		p.add("token_id", "is not an id")
	}
	if expires.IsZero() {
		p.add("expires_at", "is required")
	}
	if err := p.err(); err != nil {
		return UserLoggedIn{}, err
	}
	return UserLoggedIn{UserID: userID, Issuer: issuer, Method: LoginMethodOIDC, Groups: groups, TokenID: tokenID, ExpiresAt: expires.UTC()}, nil
}

// Browser sessions (a browser login's token kept in a cookie): the names nodes and the API share.
const (
	// SessionCookie holds a host-bound user token (UserClaims.Host) on a tunnel host or the API's
	// host. __Host-: Secure, Path=/, no Domain, so no other host can set or read it.
	SessionCookie = "__Host-tunnelplane"
	// LoginNonceCookie is a tunnel host's login-CSRF nonce, set before the browser is sent to log
	// in and checked when the token comes back.
	LoginNonceCookie = "__Host-tunnelplane-login"
	// ReservedPathPrefix is the path a node keeps for itself on every tunnel host (the login's
	// return, the logout): the upstream's own paths under it are not reachable by host routing.
	ReservedPathPrefix = "/.tunnelplane/"
	// LoginReturnPath receives a browser login's token (a form POST); LogoutPath clears the
	// session cookie.
	LoginReturnPath = ReservedPathPrefix + "login"
	LogoutPath      = ReservedPathPrefix + "logout"
)

// MaxLocalPathBytes bounds the path a browser login returns to.
const MaxLocalPathBytes = 2048

// LocalPath tells whether p is a path on the same origin to return to after a login: it starts
// with one "/" (not "//" or "/\", which browsers read as another host), holds no spaces, control
// characters or backslashes, and is bounded.
func LocalPath(p string) bool {
	if p == "" || len(p) > MaxLocalPathBytes || p[0] != '/' || strings.HasPrefix(p, "//") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] == 0x7f || p[i] == '\\' {
			return false
		}
	}
	return true
}
