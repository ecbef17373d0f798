package commands_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// nodeView is a node's view fed with the log of a harness, as the relay would.
type nodeView struct {
	t         *testing.T
	h         *harness
	v         *view.View
	next      uint64
	withdrawn atomic.Int32
}

func newNodeView(t *testing.T, h *harness) *nodeView {
	n := &nodeView{t: t, h: h}
	n.v = view.New(token.DefaultIssuer, view.Hooks{AccessWithdrawn: func() { n.withdrawn.Add(1) }})
	return n
}

// catchUp applies everything the log holds.
func (n *nodeView) catchUp() {
	n.t.Helper()
	recs, err := n.h.store.ReadAll(context.Background(), n.next, 10000)
	if err != nil {
		n.t.Fatal(err)
	}
	for _, r := range recs {
		if err := n.v.Apply(view.Event{Position: r.Position, EventID: r.EventID.String(), StreamID: r.StreamID, Type: r.Type, Payload: r.Payload,
			RecordedAt: r.RecordedAt}); err != nil {
			n.t.Fatal(err)
		}
		n.next = r.Position + 1
	}
}

// call is the ingress's question for a caller with a user token (of the given groups) calling
// the tunnel by its id.
func (n *nodeView) call(user string, groups []string, tunnelID string) error {
	n.t.Helper()
	raw, err := token.MintUserInGroups(n.h.svc.TokenKey(), token.DefaultIssuer, user, "", groups, time.Hour, time.Now())
	if err != nil {
		n.t.Fatal(err)
	}
	p, err := n.v.AuthenticateCaller(context.Background(), raw)
	if err != nil {
		return err
	}
	r, ok := n.v.Resolve(tunnelID, p)
	if !ok {
		return node.ErrUnknownTunnel
	}
	return n.v.AuthorizeIngress(context.Background(), p, r)
}

// TestGrantsAtTheNode: a node's view, fed the real log, lets a viewer with a grant call and one
// without not; a group grant lets any user whose token carries the group call, even without a
// role; an expiry refuses by the clock before grant.expired is appended; a revocation refuses at
// the next request and tells the node to re-check what it allowed.
func TestGrantsAtTheNode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"vic", "wen"} {
		if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: user, Role: domain.RoleViewer}); err != nil {
			t.Fatal(err)
		}
	}
	n := newNodeView(t, h)
	n.catchUp()
	if err := n.call("alice", nil, tun.ID); err != nil {
		t.Fatalf("the owner: %v", err)
	}
	if err := n.call("vic", nil, tun.ID); !errors.Is(err, node.ErrForbidden) {
		t.Fatalf("a viewer without a grant: %v", err)
	}
	if err := n.call("gus", []string{"ml-team"}, tun.ID); !errors.Is(err, node.ErrUnknownTunnel) {
		t.Fatalf("a stranger before the group grant: %v", err)
	}

	vg, err := h.svc.Handlers.CreateGrant.Handle(as("alice"), commands.CreateGrant{OrgID: org, TunnelID: tun.ID, User: "vic", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.CreateGrant.Handle(as("alice"), commands.CreateGrant{OrgID: org, TunnelID: tun.ID, Group: "ml-team", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	n.catchUp()
	for _, c := range []struct {
		user   string
		groups []string
		want   error
	}{
		{"vic", nil, nil},                                     // the viewer with a grant
		{"wen", nil, node.ErrForbidden},                       // the viewer without one
		{"wen", []string{"ops", "ml-team"}, nil},              // the group's
		{"gus", []string{"ml-team"}, nil},                     // the group's, with no role at all
		{"gus", []string{"ml-team-2"}, node.ErrUnknownTunnel}, // learns nothing of the tunnel
	} {
		if err := n.call(c.user, c.groups, tun.ID); (c.want == nil && err != nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Fatalf("%s in %v: %v, want %v", c.user, c.groups, err, c.want)
		}
	}

	// Expiry: refused from the deadline on, with no event.
	short, err := h.svc.Handlers.CreateGrant.Handle(as("alice"), commands.CreateGrant{OrgID: org, TunnelID: tun.ID, User: "wen", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n.catchUp()
	sh, err := h.svc.Sharing(context.Background(), org, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := sh.Grant(short.ID)
	if time.Now().Before(g.ExpiresAt) {
		if err := n.call("wen", nil, tun.ID); err != nil {
			t.Fatalf("wen before the expiry: %v", err)
		}
	}
	poll.Until(t, 3*time.Second, "the view refusing an expired grant", func() bool { return errors.Is(n.call("wen", nil, tun.ID), node.ErrForbidden) })
	head, _ := h.store.Head(context.Background())
	if n.next != head {
		t.Fatal("the view took events it was not fed")
	}

	// Revocation: refused at the next request; the node is told to re-check.
	before := n.withdrawn.Load()
	if _, err := h.svc.Handlers.RevokeGrant.Handle(as("alice"), commands.RevokeGrant{OrgID: org, TunnelID: tun.ID, GrantID: vg.ID}); err != nil {
		t.Fatal(err)
	}
	n.catchUp()
	if err := n.call("vic", nil, tun.ID); !errors.Is(err, node.ErrForbidden) {
		t.Fatalf("vic after the revocation: %v", err)
	}
	if n.withdrawn.Load() == before {
		t.Fatal("the revocation did not call AccessWithdrawn")
	}
	if err := n.call("gus", []string{"ml-team"}, tun.ID); err != nil {
		t.Fatalf("the group grant after another's revocation: %v", err)
	}
	// A snapshot keeps the grants.
	b, _, err := n.v.Snapshot("origin")
	if err != nil {
		t.Fatal(err)
	}
	n2 := newNodeView(t, h)
	if err := n2.v.Restore(b, "origin"); err != nil {
		t.Fatal(err)
	}
	if err := n2.call("gus", []string{"ml-team"}, tun.ID); err != nil {
		t.Fatalf("the group grant from a snapshot: %v", err)
	}
	if err := n2.call("vic", nil, tun.ID); !errors.Is(err, node.ErrForbidden) {
		t.Fatalf("a revoked grant from a snapshot: %v", err)
	}
}
