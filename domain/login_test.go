package domain

import (
	"strings"
	"testing"
	"time"
)

func TestExternalUserIDIsStableAndPerIssuer(t *testing.T) {
	a := ExternalUserID("https://idp.example", "alice")
	if a != ExternalUserID("https://idp.example", "alice") {
		t.Fatal("not stable")
	}
	if !strings.HasSuffix(a, ":alice") || !strings.HasPrefix(a, "oidc-") {
		t.Fatalf("a plain subject is kept readable: %q", a)
	}
	if b := ExternalUserID("https://other.example", "alice"); b == a {
		t.Fatal("two issuers' alice are one user")
	}
	for _, sub := range []string{"al ice", "bob\x00", strings.Repeat("x", 300), "ünï"} {
		id := ExternalUserID("https://idp.example", sub)
		if strings.ContainsAny(id, " \x00ünï") || len(id) > MaxLoginUserBytes {
			t.Errorf("subject %q maps to %q", sub, id)
		}
	}
}

func TestLogInValidates(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	id := "0190a0b0-0000-7000-8000-000000000001"
	tooMany := make([]string, MaxLoginGroups+1)
	for i := range tooMany {
		tooMany[i] = "g"
	}
	for _, tc := range []struct {
		name, user, issuer string
		groups             []string
		field              string
	}{
		{"ok", "u", "https://idp.example", []string{"ops"}, ""},
		{"no user", "", "https://idp.example", nil, "user_id"},
		{"control char", "u\n", "https://idp.example", nil, "user_id"},
		{"issuer not a URL", "u", "idp", nil, "issuer"},
		{"too many groups", "u", "https://idp.example", tooMany, "groups"},
		{"bad group", "u", "https://idp.example", []string{"a\x00"}, "groups"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LogIn(tc.user, tc.issuer, tc.groups, id, exp)
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("want a problem with %s, got %v", tc.field, err)
			}
		})
	}
}
