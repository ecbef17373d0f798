package token_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	key, _ := ledger.GenerateSigningKey()
	other, _ := ledger.GenerateSigningKey()
	keys := token.NewKeySet()
	keys.Put(key.ID(), key.Public())
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
