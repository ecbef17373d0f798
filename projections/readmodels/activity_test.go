package readmodels_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// A tunnel's events through its organization's audit index: only its own, only the types asked,
// and a scan bound that ends a page early at the last position looked at, so that paging from
// there finds the rest.
func TestTunnelActivityScansBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	org := f.org("acme")
	mine, other := f.tunnel(org, "mine", "alice"), f.tunnel(org, "other", "alice")
	node := newID()
	var want []int64
	for i := range 6 {
		up := fmt.Sprintf("http://127.0.0.1:%d", i)
		f.append(domain.TunnelStream(other), domain.Metadata{Actor: "bob", OrgID: org}, &domain.TunnelUpdated{TunnelID: other, OrgID: org, Upstream: &up})
		f.append(domain.TunnelStream(other), domain.Metadata{Actor: "bob", OrgID: org}, &domain.TunnelUpdated{TunnelID: other, OrgID: org, Upstream: &up})
		f.append(domain.TunnelStream(mine), domain.Metadata{Actor: "alice", OrgID: org}, &domain.TunnelUpdated{TunnelID: mine, OrgID: org, Upstream: &up})
		want = append(want, int64(f.last))
		f.append(domain.NodeFactsStream(node), domain.Metadata{NodeID: node}, &domain.AgentConnected{NodeID: node, SessionID: newID(), OrgID: org, TunnelID: mine, TokenID: newID()})
	}
	f.caughtUp()
	ctx := context.Background()
	types := []string{domain.TypeTunnelUpdated}
	var got []int64
	after, queries := int64(-1), 0
	for ; queries < 100; queries++ {
		rows, last, err := f.q.TunnelActivity(ctx, readmodels.ActivityFilter{OrgID: org, TunnelID: mine, Types: types, After: after, UpTo: int64(f.last), Scan: 4, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Type != domain.TypeTunnelUpdated || r.Actor == nil || *r.Actor != "alice" || len(r.Payload) == 0 {
				t.Errorf("row %+v", r)
			}
			got = append(got, r.Position)
		}
		if last < 0 {
			break
		}
		after = last
	}
	if !slices.Equal(got, want) {
		t.Errorf("positions %v, want %v", got, want)
	}
	// 18 updates seen 4 at a time: at least 5 queries, never more than the updates plus one.
	if queries < 5 || queries > 19 {
		t.Errorf("%d queries", queries)
	}
	if _, _, err := f.q.TunnelActivity(ctx, readmodels.ActivityFilter{OrgID: org, TunnelID: mine, Types: types, UpTo: 10, Scan: 1, Limit: 2}); err == nil {
		t.Error("a scan smaller than the limit was taken")
	}
}
