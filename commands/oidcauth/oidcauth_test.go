package oidcauth_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/oidcauth"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/oidctest"
)

const cli = "tunnelplane-cli"

func TestVerifyIDTokensOfTheRealProvider(t *testing.T) {
	t.Parallel()
	many := make([]string, domain.MaxLoginGroups+1)
	for i := range many {
		many[i] = fmt.Sprintf("g%d", i)
	}
	users := []oidctest.User{
		{Subject: "u-1", Name: "Alice Doe", Username: "alice", Email: "alice@example.com", Groups: []string{"ml-team", "ops", "ops"}},
		{Subject: "u-2", Username: "bob"},
		{Subject: "u-3", Username: "many", Groups: many},
		{Subject: "u-4", Username: "evil", Groups: []string{"ok", "bad\x00group"}},
	}
	idp := oidctest.Start(t, oidctest.Options{Clients: []string{cli, "another-app"}, Users: users})
	other := oidctest.Start(t, oidctest.Options{Clients: []string{cli}, Users: users})
	v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer, ClientID: cli})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	id, err := v.Verify(ctx, idp.IssueIDToken(t, cli, "u-1", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if id.UserID != domain.ExternalUserID(idp.Issuer, "u-1") || id.Name != "Alice Doe" || strings.Join(id.Groups, ",") != "ml-team,ops" || id.Issuer != idp.Issuer {
		t.Fatalf("identity: %+v", id)
	}
	if id, err := v.Verify(ctx, idp.IssueIDToken(t, cli, "u-2", time.Minute)); err != nil || id.Name != "bob" || id.Groups != nil {
		t.Fatalf("a user without name or groups: %+v %v", id, err)
	}

	for _, tc := range []struct {
		name, raw, says string
	}{
		{"another issuer", other.IssueIDToken(t, cli, "u-1", time.Minute), "another identity provider"},
		{"another client", idp.IssueIDToken(t, "another-app", "u-1", time.Minute), "another client"},
		{"expired", idp.IssueIDToken(t, cli, "u-1", -time.Minute), "expired"},
		{"too many groups", idp.IssueIDToken(t, cli, "u-3", time.Minute), "more than 64"},
		{"a group with a control character", idp.IssueIDToken(t, cli, "u-4", time.Minute), "group 2"},
		{"not a JWT", "eyJhbGciOiJub25lIn0.e30", "not a JWT"},
		{"forged signature", forge(idp.IssueIDToken(t, cli, "u-1", time.Minute)), "signature"},
	} {
		_, err := v.Verify(ctx, tc.raw)
		if !errors.Is(err, oidcauth.ErrRefused) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.says)
		}
		if err != nil && len(tc.raw) > 20 && strings.Contains(err.Error(), tc.raw[len(tc.raw)-20:]) {
			t.Errorf("%s: the error quotes the token", tc.name)
		}
	}
}

// forge swaps the signature's last characters.
func forge(raw string) string {
	b := []byte(raw)
	for i := len(b) - 8; i < len(b); i++ {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

func TestIssuedTooLongAgoOrInTheFuture(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-1", Username: "alice"}}})
	raw := idp.IssueIDToken(t, cli, "u-1", time.Hour)
	for _, tc := range []struct {
		shift time.Duration
		says  string
	}{{30 * time.Minute, "more than 10m0s ago"}, {-5 * time.Minute, "in the future"}} {
		v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer, ClientID: cli, Now: func() time.Time { return time.Now().Add(tc.shift) }})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(context.Background(), raw); !errors.Is(err, oidcauth.ErrRefused) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("clock %s: %v, want %q", tc.shift, err, tc.says)
		}
	}
}

func TestUnreachableProviderIsUnavailable(t *testing.T) {
	t.Parallel()
	idp := oidctest.Start(t, oidctest.Options{Users: []oidctest.User{{Subject: "u-1", Username: "alice"}}})
	raw := idp.IssueIDToken(t, cli, "u-1", time.Minute)
	v, err := oidcauth.New(oidcauth.Config{Issuer: idp.Issuer + "/nowhere", ClientID: cli})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Discover(context.Background()); !errors.Is(err, oidcauth.ErrUnavailable) {
		t.Fatalf("discovery of a wrong issuer: %v", err)
	}
	// The token names the real issuer, not the configured one: refused before any fetch.
	if _, err := v.Verify(context.Background(), raw); !errors.Is(err, oidcauth.ErrRefused) {
		t.Fatalf("%v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []oidcauth.Config{
		{Issuer: "idp.example", ClientID: "x"},
		{Issuer: "https://idp.example?x=1", ClientID: "x"},
		{Issuer: "https://idp.example", ClientID: ""},
		{Issuer: "https://idp.example", ClientID: "x", Leeway: time.Hour},
	} {
		if _, err := oidcauth.New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// Whatever a caller sends as an ID token is refused (or the provider is unavailable), without a
// panic and without the error quoting it.
func FuzzVerifyHostileTokens(f *testing.F) {
	payload := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	const iss = "http://127.0.0.1:1"
	for _, s := range []string{"", "a.b.c", "eyJhbGciOiJSUzI1NiJ9." + payload(`{"iss":"`+iss+`","aud":"tunnelplane-cli"}`) + ".sig",
		"x." + payload(`{"iss":"`+iss+`","aud":["x","tunnelplane-cli"],"groups":{"a":1}}`) + ".y", "x." + payload(`{"aud":7}`) + ".y"} {
		f.Add(s)
	}
	v, err := oidcauth.New(oidcauth.Config{Issuer: iss, ClientID: cli})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		_, err := v.Verify(context.Background(), raw)
		if !errors.Is(err, oidcauth.ErrRefused) && !errors.Is(err, oidcauth.ErrUnavailable) {
			t.Fatalf("%q: %v", raw, err)
		}
		if len(raw) >= 12 && strings.Contains(err.Error(), raw) {
			t.Fatalf("the error quotes the token: %v", err)
		}
	})
}
