package reach

import (
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// The one rule both sources feed: who counts at a time.
func TestAnswerRule(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ref := func(p uint64) Ref { return Ref{Type: domain.TypeRoleAssigned, Position: p, RecordedAt: t0} }
	base := func() *facts {
		f := newFacts()
		created := ref(1)
		f.tunnel = TunnelInfo{ID: "t", OrgID: "o", Owner: "bob", State: TunnelActive, Created: &created}
		f.roles["alice"] = map[domain.Role]Ref{domain.RoleOwner: ref(2)}
		f.roles["bob"] = map[domain.Role]Ref{domain.RoleViewer: ref(3)}
		f.roles["victor"] = map[domain.Role]Ref{domain.RoleViewer: ref(4)}
		f.supers["root"] = ref(5)
		grant := func(id, kind, subject string, expires time.Time, ended bool) grantFact {
			return grantFact{state: domain.GrantState{GrantCreated: domain.GrantCreated{GrantID: id, SubjectKind: kind, Subject: subject, ExpiresAt: expires}, Ended: ended},
				chain: Grant{GrantID: id, ExpiresAt: expires}}
		}
		f.grants = []grantFact{grant("g1", domain.GrantToUser, "gina", t0.Add(time.Hour), false), grant("g2", domain.GrantToUser, "hank", t0.Add(time.Hour), true),
			grant("g3", domain.GrantToGroup, "oncall", t0.Add(time.Minute), false)}
		f.keys = []keyFact{{id: "k1", key: Key{ExpiresAt: t0.Add(time.Hour)}}, {id: "k2", revoked: true, key: Key{ExpiresAt: t0.Add(time.Hour)}}}
		return f
	}
	for _, c := range []struct {
		name   string
		change func(*facts)
		at     time.Time
		want   string
	}{
		{"all", func(*facts) {}, t0,
			"access_key:k1=access_key group:oncall=grant user:alice=org_role user:bob=tunnel_owner user:gina=grant user:root=superadmin"},
		// The group grant's expiry has passed though nothing recorded it; so has every key's and grant's an hour on.
		{"expiry by the clock", func(*facts) {}, t0.Add(time.Minute),
			"access_key:k1=access_key user:alice=org_role user:bob=tunnel_owner user:gina=grant user:root=superadmin"},
		{"an hour on", func(*facts) {}, t0.Add(time.Hour), "user:alice=org_role user:bob=tunnel_owner user:root=superadmin"},
		{"owner without a role", func(f *facts) { delete(f.roles, "bob") }, t0.Add(time.Hour), "user:alice=org_role user:root=superadmin"},
		{"owner also admin", func(f *facts) { f.roles["bob"][domain.RoleAdmin] = ref(6) }, t0.Add(time.Hour),
			"user:alice=org_role user:bob=org_role+tunnel_owner user:root=superadmin"},
		{"deleted", func(f *facts) { f.tunnel.State = TunnelDeleted }, t0, ""},
		// A key for a label selector counts while the tunnel carries its labels.
		{"label key, labels match", func(f *facts) {
			f.labels = map[string]string{"team": "ml", "env": "dev"}
			f.keys = append(f.keys, keyFact{id: "k3", selector: map[string]string{"team": "ml"}, key: Key{ExpiresAt: t0.Add(time.Hour)}})
		}, t0.Add(time.Minute), "access_key:k1=access_key access_key:k3=access_key user:alice=org_role user:bob=tunnel_owner user:gina=grant user:root=superadmin"},
		{"label key, other labels", func(f *facts) {
			f.labels = map[string]string{"team": "cv"}
			f.keys = append(f.keys, keyFact{id: "k3", selector: map[string]string{"team": "ml"}, key: Key{ExpiresAt: t0.Add(time.Hour)}})
		}, t0.Add(time.Minute), "access_key:k1=access_key user:alice=org_role user:bob=tunnel_owner user:gina=grant user:root=superadmin"},
	} {
		f := base()
		c.change(f)
		a, err := f.answer(c.at, SourceLive, 9)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.Brief(), " "); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}
