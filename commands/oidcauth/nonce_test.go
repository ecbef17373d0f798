package oidcauth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
)

// An ID token of the authorization code flow verifies only with the nonce its login sent: a
// token of another login (or one without a nonce) is refused, and the signature still covers the
// nonce (a token whose nonce was changed does not verify).
func TestVerifyNonce(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-1", Username: "alice"}}})
	v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer, ClientID: cli})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	raw := idp.IssueIDTokenWithNonce(t, cli, "u-1", "nonce-of-this-login-0123456789", time.Minute)
	if _, err := v.VerifyNonce(ctx, raw, "nonce-of-this-login-0123456789"); err != nil {
		t.Fatalf("the right nonce: %v", err)
	}
	for name, c := range map[string]struct{ raw, nonce string }{
		"another login's nonce": {raw, "nonce-of-another-login-012345"},
		"no nonce expected":     {raw, ""},
		"token without a nonce": {idp.IssueIDToken(t, cli, "u-1", time.Minute), "nonce-of-this-login-0123456789"},
		"nonce edited":          {tamperNonce(t, raw, "nonce-of-another-login-012345"), "nonce-of-another-login-012345"},
	} {
		_, err := v.VerifyNonce(ctx, c.raw, c.nonce)
		if !errors.Is(err, oidcauth.ErrRefused) {
			t.Errorf("%s: %v, want refused", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "nonce-of") {
			t.Errorf("%s: the error quotes a nonce: %v", name, err)
		}
	}
}

func tamperNonce(t *testing.T, raw, nonce string) string {
	parts := strings.Split(raw, ".")
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "nonce-of-this-login-0123456789", nonce, 1)
	return parts[0] + "." + b64.EncodeToString([]byte(s)) + "." + parts[2]
}

var b64 = base64.RawURLEncoding
