package view_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// A user's deletion shuts out every token of the user issued before it, in the organization it
// names (or in every one), even where a group grant would still admit them; a token issued after
// it is decided as anyone's; the view's hook has live calls decided again; a snapshot keeps it.
func TestUserDeletionRefusesEarlierTokens(t *testing.T) {
	t.Parallel()
	var withdrawn atomic.Int32
	v := view.New(token.DefaultIssuer, view.Hooks{AccessWithdrawn: func() { withdrawn.Add(1) }})
	f := &feed{t: t, v: v}
	key, _ := ledger.GenerateSigningKey()
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", key))
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.OrganizationCreated{OrgID: org2, Name: "globex"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelCreated{TunnelID: tun2, OrgID: org2, Owner: "zed", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})
	f.domain(domain.RoleAssigned{OrgID: org2, UserID: "carol", Role: domain.RoleAdmin})
	f.domain(domain.GrantCreated{GrantID: "g-ml", OrgID: org, TunnelID: tun, SubjectKind: domain.GrantToGroup, Subject: "ml", ExpiresAt: time.Now().Add(time.Hour), GrantedBy: "alice"})

	mint := func(sub string, groups []string, at time.Time) string {
		s, err := token.MintUserInGroups(key, token.DefaultIssuer, sub, "", groups, time.Hour, at)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	acme, _ := v.Resolve("llm.acme", node.Principal{})
	globex, _ := v.Resolve("llm.globex", node.Principal{})
	before := time.Now().Add(-10 * time.Second)
	gus, carol := mint("gus", []string{"ml"}, before), mint("carol", nil, before)
	for name, c := range map[string]struct {
		bearer string
		r      node.Route
	}{"gus by the group grant": {gus, acme}, "carol in acme": {carol, acme}, "carol in globex": {carol, globex}} {
		if err := authorizeBearer(v, c.bearer, c.r); err != nil {
			t.Fatalf("%s before any deletion: %v", name, err)
		}
	}

	// gus deleted from acme: no role or grant of his own was there, the group grant still is.
	n := withdrawn.Load()
	f.domain(domain.UserDeleted{OrgID: org, UserID: "gus", DeletedBy: "alice", Reason: "left"})
	if withdrawn.Load() == n {
		t.Error("user.deleted did not fire AccessWithdrawn: live calls would not be decided again")
	}
	if err := authorizeBearer(v, gus, acme); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("gus's earlier token after his deletion: %v, want ErrUnauthenticated", err)
	}
	// A token issued after the deletion (the identity provider still lists the group) is anyone's.
	if err := authorizeBearer(v, mint("gus", []string{"ml"}, time.Now().Add(2*time.Second)), acme); err != nil {
		t.Fatalf("gus's token issued after the deletion: %v", err)
	}

	// carol deleted from acme only: her earlier token still works in globex.
	f.domain(domain.RoleUnassigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})
	f.domain(domain.UserDeleted{OrgID: org, UserID: "carol", DeletedBy: "alice", Reason: "moved to globex"})
	if err := authorizeBearer(v, carol, acme); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("carol's earlier token in acme after her deletion there: %v", err)
	}
	if err := authorizeBearer(v, carol, globex); err != nil {
		t.Fatalf("carol's earlier token in globex (she was deleted from acme only): %v", err)
	}
	// Deleted everywhere: globex refuses it too (her role there is still in the view).
	f.domain(domain.UserDeleted{OrgID: domain.PlatformOrg, UserID: "carol", DeletedBy: "root", Reason: "left the company"})
	if err := authorizeBearer(v, carol, globex); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("carol's earlier token in globex after her deletion everywhere: %v", err)
	}

	// A restored snapshot refuses the same tokens.
	b, _, err := v.Snapshot("o")
	if err != nil {
		t.Fatal(err)
	}
	r := view.New(token.DefaultIssuer, view.Hooks{})
	if err := r.Restore(b, "o"); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		bearer string
		r      node.Route
	}{"gus": {gus, acme}, "carol": {carol, globex}} {
		if err := authorizeBearer(r, c.bearer, c.r); !errors.Is(err, node.ErrUnauthenticated) {
			t.Errorf("restored view, %s's earlier token: %v, want ErrUnauthenticated", name, err)
		}
	}
}
