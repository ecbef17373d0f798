package readmodels_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

func TestAccessKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme, globex := f.org("acme"), f.org("globex")
	llm, web := f.tunnel(acme, "llm", "alice"), f.tunnel(acme, "web", "alice")
	issue := func(org, tunnel string, expires time.Time, cidrs ...string) string {
		id := newID()
		f.append(domain.AccessKeyStream(id), domain.Metadata{Actor: "alice", OrgID: org},
			&domain.AccessKeyIssued{KeyID: id, OrgID: org, TunnelID: tunnel, SecretHash: domain.HashAccessKey(id), ExpiresAt: expires,
				CIDRs: cidrs, IssuedBy: "alice"})
		return id
	}
	later := time.Now().Add(time.Hour)
	active, revoked := issue(acme, llm, later, "10.0.0.0/8"), issue(acme, llm, later)
	expired := issue(acme, web, time.Now().Add(-time.Minute))
	foreign := issue(globex, newID(), later)
	f.append(domain.AccessKeyStream(revoked), domain.Metadata{Actor: "alice", OrgID: acme},
		&domain.AccessKeyRevoked{KeyID: revoked, OrgID: acme, TunnelID: llm, Reason: "leaked"})
	f.caughtUp()

	for _, tc := range []struct {
		name   string
		filter readmodels.AccessKeyFilter
		want   []string
	}{
		{"any", readmodels.AccessKeyFilter{OrgID: acme}, []string{active, revoked, expired}},
		{"active", readmodels.AccessKeyFilter{OrgID: acme, State: readmodels.TokenActive}, []string{active}},
		{"revoked", readmodels.AccessKeyFilter{OrgID: acme, State: readmodels.TokenRevoked}, []string{revoked}},
		{"expired", readmodels.AccessKeyFilter{OrgID: acme, State: readmodels.TokenExpired}, []string{expired}},
		{"by tunnel", readmodels.AccessKeyFilter{OrgID: acme, TunnelID: llm}, []string{active, revoked}},
		{"another org", readmodels.AccessKeyFilter{OrgID: globex}, []string{foreign}},
	} {
		tc.filter.Limit = 10
		got, err := f.q.ListAccessKeys(ctx, tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ids []string
		for _, k := range got {
			ids = append(ids, k.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Fatalf("%s: %v, want %v", tc.name, ids, tc.want)
		}
	}
	var paged []string
	for _, k := range pages(t, 1, func(after *readmodels.AgentTokenKey, limit int) ([]readmodels.AccessKey, error) {
		return f.q.ListAccessKeys(ctx, readmodels.AccessKeyFilter{OrgID: acme, After: after, Limit: limit})
	}, func(k readmodels.AccessKey) *readmodels.AgentTokenKey {
		return &readmodels.AgentTokenKey{IssuedAt: k.IssuedAt, ID: k.ID}
	}) {
		paged = append(paged, k.ID)
	}
	if !reflect.DeepEqual(paged, []string{active, revoked, expired}) {
		t.Fatalf("pages: %v", paged)
	}
	k, err := f.q.GetAccessKey(ctx, acme, revoked)
	if err != nil {
		t.Fatal(err)
	}
	if k.State != "revoked" || k.RevokedAt == nil || k.RevokeReason == nil || *k.RevokeReason != "leaked" || k.TunnelID != llm || len(k.CIDRs) != 0 {
		t.Fatalf("GetAccessKey = %+v", k)
	}
	if k, _ := f.q.GetAccessKey(ctx, acme, active); !reflect.DeepEqual(k.CIDRs, []string{"10.0.0.0/8"}) || k.State != "active" {
		t.Fatalf("GetAccessKey(active) = %+v", k)
	}
	for _, id := range []string{foreign, newID(), "x"} {
		if _, err := f.q.GetAccessKey(ctx, acme, id); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("GetAccessKey(acme, %q): %v, want ErrNotFound", id, err)
		}
	}
}
