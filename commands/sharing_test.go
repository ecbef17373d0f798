package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// TestAccessRequestTwoOfThree: a viewer asks for a tunnel; the policy wants 2 of the 3 editors;
// the requester cannot approve, nor a viewer; the second editor's approval creates the grant, and
// the log links grant → approvals → request by causation ids.
func TestAccessRequestTwoOfThree(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]domain.Role{"vic": domain.RoleViewer, "wen": domain.RoleViewer, "e1": domain.RoleEditor, "e2": domain.RoleEditor, "e3": domain.RoleEditor} {
		if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: user, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	// Only who may share sets the policy.
	policy := commands.SetAccessPolicy{OrgID: org, TunnelID: tun.ID, ApproverRole: domain.RoleEditor, RequiredApprovals: 2}
	if _, err := h.svc.Handlers.SetAccessPolicy.Handle(as("e1"), policy); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an editor sets the policy: %v", err)
	}
	if _, err := h.svc.Handlers.SetAccessPolicy.Handle(as("alice"), policy); err != nil {
		t.Fatal(err)
	}

	if _, err := h.svc.Handlers.RequestAccess.Handle(as("vic"), commands.RequestAccess{OrgID: org, TunnelID: tun.ID, Duration: time.Hour}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a request without a reason: %v", err)
	}
	req, err := h.svc.Handlers.RequestAccess.Handle(as("vic"), commands.RequestAccess{OrgID: org, TunnelID: tun.ID, Duration: time.Hour, Reason: "debug the chat UI"})
	if err != nil {
		t.Fatal(err)
	}
	approve := func(user string) (commands.Result, error) {
		return h.svc.Handlers.ApproveAccess.Handle(as(user), commands.ApproveAccess{OrgID: org, TunnelID: tun.ID, RequestID: req.ID})
	}
	if _, err := approve("vic"); !errors.Is(err, commands.ErrForbidden) || !errors.Is(err, domain.ErrSelfApproval) {
		t.Fatalf("self-approval: %v", err)
	}
	if _, err := approve("wen"); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("a viewer approves under an editor policy: %v", err)
	}
	if _, err := approve("e1"); err != nil {
		t.Fatal(err)
	}
	sh, err := h.svc.Sharing(context.Background(), org, tun.ID)
	if err != nil || len(sh.Grants()) != 0 {
		t.Fatalf("one of two approvals made a grant: %v %v", sh.Grants(), err)
	}
	if _, err := approve("e1"); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("the same approver twice: %v", err)
	}
	before := time.Now()
	if _, err := approve("e2"); err != nil {
		t.Fatal(err)
	}
	if _, err := approve("e3"); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("approving an approved request: %v", err)
	}
	sh, err = h.svc.Sharing(context.Background(), org, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	grants := sh.Grants()
	if len(grants) != 1 || grants[0].Subject != "vic" || grants[0].SubjectKind != domain.GrantToUser || grants[0].RequestID != req.ID ||
		grants[0].ExpiresAt.Before(before.Add(time.Hour-2*time.Second)) || !sh.Allows("vic", nil, time.Now()) || sh.Allows("wen", nil, time.Now()) {
		t.Fatalf("grants %+v", grants)
	}
	if q, _ := sh.Request(req.ID); q.State != domain.RequestApproved || q.GrantID != grants[0].GrantID || !slices.Equal(q.Approvers, []string{"e1", "e2"}) {
		t.Fatalf("request %+v", q)
	}

	// The causal chain, as the log holds it.
	recs, err := h.store.ReadStream(context.Background(), domain.SharingStream(tun.ID), 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]eventstore.Record{}
	var grantRec eventstore.Record
	for _, r := range recs {
		byID[r.EventID.String()] = r
		if r.Type == domain.TypeGrantCreated {
			grantRec = r
		}
	}
	cause := func(r eventstore.Record) string {
		var m domain.Metadata
		if err := json.Unmarshal(r.Metadata, &m); err != nil {
			t.Fatal(err)
		}
		return m.CausationID
	}
	if grantRec.EventID.String() != grants[0].GrantID {
		t.Fatalf("grant.created's event id %s is not the grant id %s", grantRec.EventID, grants[0].GrantID)
	}
	last := byID[cause(grantRec)]
	if last.Type != domain.TypeAccessApproved || !slices.Equal(grants[0].Approvals[1:], []string{last.EventID.String()}) {
		t.Fatalf("the grant's cause is %s %s, approvals %v", last.Type, last.EventID, grants[0].Approvals)
	}
	for _, id := range grants[0].Approvals {
		a := byID[id]
		if a.Type != domain.TypeAccessApproved {
			t.Fatalf("approval %s is %q", id, a.Type)
		}
		r := byID[cause(a)]
		if r.Type != domain.TypeAccessRequested || r.EventID.String() != req.ID {
			t.Fatalf("approval %s is caused by %s %s, want the request %s", id, r.Type, r.EventID, req.ID)
		}
	}

	// A denial needs a reason, and nobody denies their own request.
	req2, err := h.svc.Handlers.RequestAccess.Handle(as("wen"), commands.RequestAccess{OrgID: org, TunnelID: tun.ID, Duration: 30 * time.Minute, Reason: "curious"})
	if err != nil {
		t.Fatal(err)
	}
	deny := commands.DenyAccess{OrgID: org, TunnelID: tun.ID, RequestID: req2.ID}
	if _, err := h.svc.Handlers.DenyAccess.Handle(as("e3"), deny); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a denial without a reason: %v", err)
	}
	deny.Reason = "not this week"
	if _, err := h.svc.Handlers.DenyAccess.Handle(as("wen"), deny); !errors.Is(err, domain.ErrSelfApproval) {
		t.Fatalf("denying one's own request: %v", err)
	}
	if _, err := h.svc.Handlers.DenyAccess.Handle(as("e3"), deny); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.ApproveAccess.Handle(as("e1"), commands.ApproveAccess{OrgID: org, TunnelID: tun.ID, RequestID: req2.ID}); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("approving a denied request: %v", err)
	}
}

// TestGrants: who may grant and revoke, a group grant, and grant.expired recorded once.
func TestGrants(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]domain.Role{"vic": domain.RoleViewer, "ed": domain.RoleEditor, "op": domain.RoleOperator} {
		if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: user, Role: role}); err != nil {
			t.Fatal(err)
		}
	}
	grant := commands.CreateGrant{OrgID: org, TunnelID: tun.ID, Group: "ml-team", TTL: time.Hour}
	for _, user := range []string{"vic", "ed", "op"} {
		if _, err := h.svc.Handlers.CreateGrant.Handle(as(user), grant); !errors.Is(err, commands.ErrForbidden) {
			t.Fatalf("%s grants: %v", user, err)
		}
	}
	g, err := h.svc.Handlers.CreateGrant.Handle(as("alice"), grant)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.CreateGrant.Handle(as("alice"), commands.CreateGrant{OrgID: org, TunnelID: tun.ID, User: "x", Group: "y", TTL: time.Hour}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a user and a group: %v", err)
	}
	sh, err := h.svc.Sharing(context.Background(), org, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !sh.Allows("anyone", []string{"other", "ml-team"}, time.Now()) || sh.Allows("anyone", []string{"other"}, time.Now()) || sh.Allows("ml-team", nil, time.Now()) {
		t.Fatal("a group grant covers the wrong callers")
	}
	// Expiry before the deadline is refused; revocation ends the grant; expiring it then is a no-op.
	if _, err := h.svc.ExpireGrant(context.Background(), org, tun.ID, g.ID); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("expiring early: %v", err)
	}
	if _, err := h.svc.Handlers.RevokeGrant.Handle(as("alice"), commands.RevokeGrant{OrgID: org, TunnelID: tun.ID, GrantID: g.ID, Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.RevokeGrant.Handle(as("alice"), commands.RevokeGrant{OrgID: org, TunnelID: tun.ID, GrantID: g.ID}); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("revoking twice: %v", err)
	}
	if res, err := h.svc.ExpireGrant(context.Background(), org, tun.ID, g.ID); err != nil || !res.Noop {
		t.Fatalf("expiring a revoked grant: %+v %v", res, err)
	}
}
