package view_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

const (
	keyValid   = "0193f2a4-7c1e-7d3a-9b2e-0000000000a1"
	keyCIDR    = "0193f2a4-7c1e-7d3a-9b2e-0000000000a2"
	keyExpired = "0193f2a4-7c1e-7d3a-9b2e-0000000000a3"
	keyOther   = "0193f2a4-7c1e-7d3a-9b2e-0000000000a4"
	keyDerived = "0193f2a4-7c1e-7d3a-9b2e-0000000000a5"
)

// secretOf is a test key's secret; the view only ever sees its hash.
func secretOf(id string) string { return domain.AccessKeyPrefix + "test-" + id }

func issueKey(f *feed, id, orgID, tunnelID string, expires time.Time, cidrs ...string) {
	f.t.Helper()
	f.domain(domain.AccessKeyIssued{KeyID: id, OrgID: orgID, TunnelID: tunnelID, SecretHash: domain.HashAccessKey(secretOf(id)),
		ExpiresAt: expires, CIDRs: cidrs, IssuedBy: "alice"})
}

// callWithKey is what the ingress asks the view for a request with an access key from addr.
func callWithKey(v *view.View, secret, ref, addr string) error {
	p, err := v.AuthenticateCaller(context.Background(), secret)
	if err != nil {
		return err
	}
	p.RemoteIP = netip.MustParseAddr(addr)
	r, ok := v.Resolve(ref, p)
	if !ok {
		return node.ErrUnknownTunnel
	}
	return v.AuthorizeIngress(context.Background(), p, r)
}

// TestAccessKeysInTheView: an access key calls its own tunnel and nothing else, only before its
// expiry and from its prefixes, and a revocation counts from the next request on, even for a
// caller whose authentication the ingress cached.
func TestAccessKeysInTheView(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	f := &feed{t: t, v: v}
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.OrganizationCreated{OrgID: org2, Name: "globex"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelCreated{TunnelID: tun2, OrgID: org2, Owner: "zed", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	later := time.Now().Add(time.Hour)
	issueKey(f, keyValid, org, tun, later)
	issueKey(f, keyCIDR, org, tun, later, "10.0.0.0/8", "2001:db8::/32")
	issueKey(f, keyExpired, org, tun, time.Now().Add(-time.Second))
	issueKey(f, keyOther, org2, tun2, later)

	cases := []struct {
		name, key, ref, addr string
		want                 error
	}{
		{"own tunnel by name.org", keyValid, "llm.acme", "203.0.113.5", nil},
		{"own tunnel by id", keyValid, tun, "203.0.113.5", nil},
		{"own tunnel by bare name", keyValid, "llm", "203.0.113.5", nil},
		{"another org's tunnel of the same name", keyValid, "llm.globex", "203.0.113.5", node.ErrUnknownTunnel},
		{"another tunnel by id", keyValid, tun2, "203.0.113.5", node.ErrUnknownTunnel},
		{"the other key on its own", keyOther, "llm", "203.0.113.5", nil},
		{"the other key on acme's", keyOther, "llm.acme", "203.0.113.5", node.ErrUnknownTunnel},
		{"inside the prefix", keyCIDR, "llm.acme", "10.20.30.40", nil},
		{"inside the v6 prefix", keyCIDR, "llm.acme", "2001:db8::7", nil},
		{"outside the prefix", keyCIDR, "llm.acme", "192.0.2.1", node.ErrForbidden},
		{"expired", keyExpired, "llm.acme", "203.0.113.5", node.ErrUnauthenticated},
	}
	for _, c := range cases {
		err := callWithKey(v, secretOf(c.key), c.ref, c.addr)
		if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if err := callWithKey(v, secretOf(keyExpired), tun, "203.0.113.5"); !errors.Is(err, token.ErrExpired) || !strings.Contains(token.Reason(err), "expired") {
		t.Errorf("expired key: %v (reason %q)", err, token.Reason(err))
	}
	for _, bad := range []string{domain.AccessKeyPrefix + "unknown", domain.AccessKeyPrefix, domain.HashAccessKey(secretOf(keyValid))} {
		if _, err := v.AuthenticateCaller(context.Background(), bad); !errors.Is(err, node.ErrUnauthenticated) {
			t.Errorf("credential %q authenticated: %v", bad, err)
		}
	}

	// The ingress caches the principal: the revocation must count when it authorizes.
	cached, err := v.AuthenticateCaller(context.Background(), secretOf(keyValid))
	if err != nil || cached.AccessKeyID != keyValid || cached.UserID != "" {
		t.Fatalf("principal %+v %v", cached, err)
	}
	route, _ := v.Resolve("llm.acme", cached)
	f.domain(domain.AccessKeyRevoked{KeyID: keyValid, OrgID: org, TunnelID: tun, Reason: "leaked"})
	err = v.AuthorizeIngress(context.Background(), cached, route)
	if !errors.Is(err, node.ErrUnauthenticated) || !strings.Contains(token.Reason(err), "revoked") {
		t.Fatalf("a revoked key authorized: %v", err)
	}
	if _, err := v.AuthenticateCaller(context.Background(), secretOf(keyValid)); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("a revoked key authenticated: %v", err)
	}
	// A revocation naming another organization revokes nothing.
	f.domain(domain.AccessKeyRevoked{KeyID: keyCIDR, OrgID: org2, TunnelID: tun, Reason: "forged"})
	if err := callWithKey(v, secretOf(keyCIDR), "llm.acme", "10.0.0.1"); err != nil {
		t.Fatalf("a revocation of another org counted: %v", err)
	}
	// A key derived from a token key works until that key is revoked (a rotation leaves it be):
	// whoever holds the token key can derive its secret.
	tk, _ := ledger.GenerateSigningKey()
	tk2, _ := ledger.GenerateSigningKey()
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", tk))
	f.domain(domain.AccessKeyIssued{KeyID: keyDerived, OrgID: org, TunnelID: tun, SecretHash: domain.HashAccessKey(secretOf(keyDerived)),
		ExpiresAt: later, DerivedFrom: tk.ID(), IssuedBy: "alice"})
	if err := callWithKey(v, secretOf(keyDerived), "llm.acme", "10.0.0.1"); err != nil {
		t.Fatalf("a derived key: %v", err)
	}
	f.log(ledger.TypeKeyRotated, ledger.NewKeyRotation("o", ledger.PurposeToken, "control-plane", tk, tk2))
	if err := callWithKey(v, secretOf(keyDerived), "llm.acme", "10.0.0.1"); err != nil {
		t.Fatalf("a derived key after its token key was rotated: %v", err)
	}
	f.log(ledger.TypeKeyRevoked, ledger.KeyRevokedPayload{KeyID: tk.ID(), Reason: "leaked"})
	if err := callWithKey(v, secretOf(keyDerived), "llm.acme", "10.0.0.1"); !errors.Is(err, node.ErrUnauthenticated) || !strings.Contains(token.Reason(err), "token key") {
		t.Fatalf("a key derived from a revoked token key: %v", err)
	}
	// The tunnel deleted: its keys call nothing.
	f.domain(domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "llm"})
	if err := callWithKey(v, secretOf(keyCIDR), tun, "10.0.0.1"); !errors.Is(err, node.ErrUnknownTunnel) {
		t.Fatalf("a deleted tunnel's key: %v", err)
	}
}
