package token_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// trustedAndUntrusted is a key in the returned key set and one that is not.
func trustedAndUntrusted(t *testing.T) (trusted, untrusted *ledger.SigningKey, keys *token.KeySet) {
	t.Helper()
	trusted, err := ledger.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if untrusted, err = ledger.GenerateSigningKey(); err != nil {
		t.Fatal(err)
	}
	keys = token.NewKeySet()
	keys.Put(trusted.ID(), trusted.Public())
	return trusted, untrusted, keys
}

func TestTokens(t *testing.T) {
	t.Parallel()
	key, other, keys := trustedAndUntrusted(t)
	now := time.Now()
	v := &token.Verifier{Keys: keys, Issuer: token.DefaultIssuer}

	user, err := token.MintUser(key, token.DefaultIssuer, "alice", "Alice", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.VerifyUser(user)
	if err != nil || c.Subject != "alice" || c.Name != "Alice" {
		t.Fatalf("verify user: %+v %v", c, err)
	}
	agent, err := token.MintAgent(key, token.DefaultIssuer, "tok-1", "org-1", "tun-1", now.Add(time.Hour), now)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := v.VerifyAgent(agent)
	if err != nil || ac.Org != "org-1" || ac.Tunnel != "tun-1" || ac.ID != "tok-1" {
		t.Fatalf("verify agent: %+v %v", ac, err)
	}
	// An agent token is not a user token and vice versa.
	if _, err := v.VerifyUser(agent); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("agent token as user token: %v", err)
	}
	if _, err := v.VerifyAgent(user); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("user token as agent token: %v", err)
	}
	expired, _ := token.MintUser(key, token.DefaultIssuer, "bob", "", time.Minute, now.Add(-2*time.Hour))
	if _, err := v.VerifyUser(expired); !errors.Is(err, token.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	stranger, _ := token.MintUser(other, token.DefaultIssuer, "eve", "", time.Hour, now)
	if _, err := v.VerifyUser(stranger); !errors.Is(err, token.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	wrongIss, _ := token.MintUser(key, "someone-else", "eve", "", time.Hour, now)
	if _, err := v.VerifyUser(wrongIss); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("wrong issuer: %v", err)
	}
	parts := strings.Split(user, ".")
	if _, err := v.VerifyUser(parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("bad signature: %v", err)
	}
	keys.Delete(key.ID())
	if _, err := v.VerifyUser(user); !errors.Is(err, token.ErrUnknownKey) {
		t.Fatalf("after the key is removed: %v", err)
	}
}

func TestRS256FromAnIdentityProvider(t *testing.T) {
	t.Parallel()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys := token.NewKeySet()
	keys.Put("idp-1", &rk.PublicKey)
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{Issuer: "https://idp.example", Subject: "carol",
		Audience: jwt.ClaimStrings{token.AudienceAPI}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	tok.Header["kid"] = "idp-1"
	raw, err := tok.SignedString(rk)
	if err != nil {
		t.Fatal(err)
	}
	v := &token.Verifier{Keys: keys, Issuer: "https://idp.example"}
	if c, err := v.VerifyUser(raw); err != nil || c.Subject != "carol" {
		t.Fatalf("RS256: %+v %v", c, err)
	}
	// Algorithm confusion: an HS256 token "signed" with the public key is refused.
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Issuer: "https://idp.example", Subject: "mallory",
		Audience: jwt.ClaimStrings{token.AudienceAPI}, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	hs.Header["kid"] = "idp-1"
	hraw, _ := hs.SignedString([]byte("secret"))
	if _, err := v.VerifyUser(hraw); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("HS256: %v", err)
	}
}

// A refusal says what happened in the user's words, never in the JWT library's, and never quotes
// the token; the leeway past expiry is what the verifier is given.
func TestRefusalsInTheUsersWords(t *testing.T) {
	t.Parallel()
	key, other, keys := trustedAndUntrusted(t)
	now := time.Now()
	v := &token.Verifier{Keys: keys, Issuer: token.DefaultIssuer, Leeway: token.DefaultLeeway, Now: func() time.Time { return now }}
	mint := func(k *ledger.SigningKey, iss string, ttl time.Duration, at time.Time) string {
		s, err := token.MintUser(k, iss, "alice", "", ttl, at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	agent, _ := token.MintAgent(key, token.DefaultIssuer, "tok-1", "org-1", "tun-1", now.Add(time.Hour), now)
	cases := []struct {
		name, raw, want string
	}{
		{"expired", mint(key, token.DefaultIssuer, time.Minute, now.Add(-4*time.Minute)), "token expired 3m ago"},
		{"expired long ago", mint(key, token.DefaultIssuer, time.Hour, now.Add(-74*time.Hour)), "token expired 3 days ago"},
		{"garbage", "hello", "invalid token: not a tunnelplane token (not a JWT)"},
		{"an agent token", agent, "invalid token: this is an agent token, not a user token"},
		{"another installation's", mint(other, token.DefaultIssuer, time.Hour, now), "it is signed by a key this installation does not trust"},
		{"another issuer's", mint(key, "evil-issuer", time.Hour, now), `issued by someone else than "tunnelplane"`},
		{"tampered", tamper(mint(key, token.DefaultIssuer, time.Hour, now)), "invalid token: its signature does not verify"},
	}
	for _, tc := range cases {
		_, err := v.VerifyUser(tc.raw)
		reason := token.Reason(err)
		if err == nil || !strings.Contains(reason, tc.want) {
			t.Errorf("%s: reason %q (error %v), want %q", tc.name, reason, err, tc.want)
		}
		for _, jargon := range []string{"keyfunc", "malformed", "could not", "evil-issuer", other.ID()} {
			if strings.Contains(reason, jargon) {
				t.Errorf("%s: reason %q says %q", tc.name, reason, jargon)
			}
		}
	}
	// The leeway: 20s past expiry passes with 30s, not with 10s.
	late := mint(key, token.DefaultIssuer, time.Minute, now.Add(-80*time.Second))
	if _, err := v.VerifyUser(late); err != nil {
		t.Fatalf("20s past expiry with a 30s leeway: %v", err)
	}
	strict := *v
	strict.Leeway = 10 * time.Second
	_, err := strict.VerifyUser(late)
	if !errors.Is(err, token.ErrExpired) || !strings.HasPrefix(token.Reason(err), "token expired 2") {
		t.Fatalf("20s past expiry with a 10s leeway: %v", err)
	}
	// Wrapped beside another error (as the node's ingress wraps it), the reason is still found.
	beside := fmt.Errorf("%w: %w", errors.New("unauthenticated"), err)
	if r := token.Reason(beside); !strings.HasPrefix(r, "token expired 2") {
		t.Fatalf("the reason of a token error wrapped beside another: %q", r)
	}
}

// tamper flips a character in the middle of the signature.
func tamper(jwt string) string {
	i := strings.LastIndex(jwt, ".") + 10
	c := byte('A')
	if jwt[i] == 'A' {
		c = 'B'
	}
	return jwt[:i] + string(c) + jwt[i+1:]
}

func TestAccessKeySecret(t *testing.T) {
	t.Parallel()
	trusted, untrusted, _ := trustedAndUntrusted(t)
	id := "0193f2a4-7c1e-7d3a-9b2e-000000000004"
	a, err := token.AccessKeySecret(trusted, id)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := token.AccessKeySecret(trusted, id)
	other, _ := token.AccessKeySecret(trusted, "0193f2a4-7c1e-7d3a-9b2e-000000000005")
	foreign, _ := token.AccessKeySecret(untrusted, id)
	if a != again {
		t.Fatal("the same key and id derived two secrets: a replayed issue could not show the secret again")
	}
	if a == other || a == foreign {
		t.Fatal("different ids or token keys derived the same secret")
	}
	if !strings.HasPrefix(a, domain.AccessKeyPrefix) || len(a) != len(domain.AccessKeyPrefix)+43 || strings.ContainsAny(a, ".=+/ ") {
		t.Fatalf("secret %q: want %s and 43 base64url characters", a, domain.AccessKeyPrefix)
	}
	if _, err := token.AccessKeySecret(trusted, ""); !errors.Is(err, token.ErrInvalid) {
		t.Fatalf("empty id: %v", err)
	}
}
