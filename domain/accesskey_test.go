package domain

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAccessKeys(t *testing.T) {
	t.Parallel()
	created, _ := CreateTunnel(NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "", nil})
	tun, _ := RehydrateTunnel([]Recorded{rec(created, 1)})
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	hash := HashAccessKey(AccessKeyPrefix + "secret")
	ok := NewAccessKey{KeyID: tokenID, IssuedBy: "alice", SecretHash: hash, Now: now, TTL: 30 * 24 * time.Hour,
		CIDRs: []string{"10.1.2.3/8", "192.0.2.7", "::ffff:198.51.100.1", "2001:db8::/32"}, RateTier: "free"}
	issued, err := IssueAccessKey(tun, ok)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.0.2.7/32", "198.51.100.1/32", "2001:db8::/32"}
	if !issued.ExpiresAt.Equal(now.Add(30*24*time.Hour)) || issued.OrgID != orgID || issued.TunnelID != tunnelID ||
		issued.SecretHash != hash || strings.Join(issued.CIDRs, ",") != strings.Join(want, ",") {
		t.Fatalf("issued = %+v", issued)
	}
	cases := []struct {
		name string
		edit func(*NewAccessKey)
		bad  string
	}{
		{"no ttl", func(n *NewAccessKey) { n.TTL = 0 }, "ttl"},
		{"ttl too long", func(n *NewAccessKey) { n.TTL = MaxAccessKeyTTL + time.Hour }, "ttl"},
		{"secret instead of hash", func(n *NewAccessKey) { n.SecretHash = AccessKeyPrefix + "secret" }, "secret_hash"},
		{"upper-case hash", func(n *NewAccessKey) { n.SecretHash = strings.ToUpper(hash) }, "secret_hash"},
		{"bad cidr", func(n *NewAccessKey) { n.CIDRs = []string{"10.0.0.0/33"} }, "cidrs"},
		{"host name", func(n *NewAccessKey) { n.CIDRs = []string{"example.com"} }, "cidrs"},
		{"too many cidrs", func(n *NewAccessKey) { n.CIDRs = make([]string, MaxAccessKeyCIDRs+1) }, "cidrs"},
		{"bad tier", func(n *NewAccessKey) { n.RateTier = "Gold Tier" }, "rate_tier"},
		{"no issuer", func(n *NewAccessKey) { n.IssuedBy = "" }, "issued_by"},
		{"bad id", func(n *NewAccessKey) { n.KeyID = "x" }, "key_id"},
		{"control bytes in derived_from", func(n *NewAccessKey) { n.DerivedFrom = "ed25519:\x00" }, "derived_from"},
	}
	for _, c := range cases {
		in := ok
		c.edit(&in)
		if _, err := IssueAccessKey(tun, in); !fields(err)[c.bad] {
			t.Errorf("%s: %v, want a problem with %s", c.name, err, c.bad)
		}
	}
	del, _ := tun.Delete("")
	gone, _ := RehydrateTunnel([]Recorded{rec(created, 1), rec(del, 2)})
	if _, err := IssueAccessKey(gone, ok); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("key for a deleted tunnel: %v", err)
	}
	a, _ := RehydrateAccessKey([]Recorded{rec(issued, 1)})
	if a.TunnelID() != tunnelID || a.OrgID() != orgID || a.Revoked() {
		t.Fatalf("rehydrated %+v", a)
	}
	rv, err := a.Revoke("leaked")
	if err != nil || rv.KeyID != tokenID || rv.TunnelID != tunnelID {
		t.Fatalf("revoke: %+v %v", rv, err)
	}
	a, _ = RehydrateAccessKey([]Recorded{rec(issued, 1), rec(rv, 2)})
	if _, err := a.Revoke("again"); !errors.Is(err, ErrInvalidState) || !a.Revoked() || a.Version() != 2 {
		t.Fatalf("revoke twice: %v", err)
	}
}

func TestAccessKeyAllows(t *testing.T) {
	t.Parallel()
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	cases := []struct {
		cidrs []netip.Prefix
		addr  string
		ok    bool
	}{
		{nil, "203.0.113.9", true},
		{pfx("10.0.0.0/8"), "10.200.1.1", true},
		{pfx("10.0.0.0/8"), "11.0.0.1", false},
		{pfx("10.0.0.0/8"), "::ffff:10.0.0.1", true}, // a v4 caller on a dual-stack socket
		{pfx("2001:db8::/32"), "2001:db8::1", true},
		{pfx("2001:db8::/32", "127.0.0.1/32"), "127.0.0.1", true},
		{pfx("2001:db8::/32"), "2001:db9::1", false},
	}
	for _, c := range cases {
		if got := AccessKeyAllows(c.cidrs, netip.MustParseAddr(c.addr)); got != c.ok {
			t.Errorf("%v allows %s = %v", c.cidrs, c.addr, got)
		}
	}
	if AccessKeyAllows(pfx("10.0.0.0/8"), netip.Addr{}) {
		t.Error("an unknown address passed an allow-list")
	}
}
