package view_test

import (
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
)

// AccessUntil is when the access that allows a call ends by the clock alone: an access key's
// expiry, the latest of the grants that cover a user, never for a role that lets the user in.
func TestAccessUntil(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	f := &feed{t: t, v: v, pos: 1}
	now := time.Now().UTC().Truncate(time.Second)
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "ada", Role: domain.RoleAdmin})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "vic", Role: domain.RoleViewer})
	grant := func(id, subject string, exp time.Time) {
		f.domain(domain.GrantCreated{GrantID: id, OrgID: org, TunnelID: tun, SubjectKind: domain.GrantToUser, Subject: subject, ExpiresAt: exp, GrantedBy: "alice"})
	}
	grant("g1", "vic", now.Add(time.Hour))
	grant("g2", "vic", now.Add(2*time.Hour))
	grant("g3", "vic", now.Add(-time.Minute)) // expired by the clock, not yet by an event
	grant("g4", "ada", now.Add(time.Hour))
	f.domain(domain.AccessKeyIssued{KeyID: "k1", OrgID: org, TunnelID: tun, SecretHash: domain.HashAccessKey(domain.AccessKeyPrefix + "k1"),
		ExpiresAt: now.Add(30 * time.Minute), IssuedBy: "alice"})
	r := node.Route{OrgID: org, TunnelID: tun, Name: "llm"}
	for _, c := range []struct {
		name string
		p    node.Principal
		want time.Time
	}{
		{"a viewer with two grants: the later", node.Principal{UserID: "vic"}, now.Add(2 * time.Hour)},
		{"an admin, whatever its grants: never", node.Principal{UserID: "ada"}, time.Time{}},
		{"the owner: never", node.Principal{UserID: "alice"}, time.Time{}},
		{"a stranger: nothing allows it", node.Principal{UserID: "eve"}, time.Time{}},
		{"an access key: its expiry", node.Principal{AccessKeyID: "k1"}, now.Add(30 * time.Minute)},
		{"an admin's token: its expiry", node.Principal{UserID: "ada", Expires: now.Add(10 * time.Minute)}, now.Add(10 * time.Minute)},
		{"a grant ending before the token", node.Principal{UserID: "vic", Expires: now.Add(3 * time.Hour)}, now.Add(2 * time.Hour)},
		{"a token ending before the grant", node.Principal{UserID: "vic", Expires: now.Add(time.Minute)}, now.Add(time.Minute)},
		{"a stranger's token: nothing allows it", node.Principal{UserID: "eve", Expires: now.Add(time.Minute)}, time.Time{}},
	} {
		if got := v.AccessUntil(c.p, r); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	f.domain(domain.GrantRevoked{GrantID: "g2", OrgID: org, TunnelID: tun, RevokedBy: "alice"})
	if got := v.AccessUntil(node.Principal{UserID: "vic"}, r); !got.Equal(now.Add(time.Hour)) {
		t.Errorf("after the later grant's revocation: %v, want the other's expiry", got)
	}
}
