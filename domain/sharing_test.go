package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	shOrg    = "0193f2a4-7c1e-7d3a-9b2e-00000000b001"
	shTunnel = "0193f2a4-7c1e-7d3a-9b2e-00000000b002"
)

func shID(n int) string { return fmt.Sprintf("0193f2a4-7c1e-7d3a-9b2e-0000000c%04d", n) }

// sharingOf folds evs into a tunnel's sharing state, as the log would hold them.
func sharingOf(t *testing.T, evs ...Event) *Sharing {
	t.Helper()
	var recs []Recorded
	for i, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, Recorded{Type: e.EventType(), Payload: b, StreamVersion: uint64(i + 1), RecordedAt: time.Unix(int64(i), 0)})
	}
	s, err := RehydrateSharing(shOrg, shTunnel, recs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func activeTestTunnel() *Tunnel {
	return &Tunnel{id: shTunnel, orgID: shOrg, owner: "alice", name: "llm", state: TunnelActive}
}

func TestSharingDecisions(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	tun := activeTestTunnel()
	gone := &Tunnel{id: shTunnel, orgID: shOrg, state: TunnelGone}
	req := AccessRequested{RequestID: shID(1), OrgID: shOrg, TunnelID: shTunnel, Requester: "vic", DurationSeconds: 3600, Reason: "debug"}
	twoEditors := AccessPolicySet{OrgID: shOrg, TunnelID: shTunnel, ApproverRole: RoleEditor, RequiredApprovals: 2, SetBy: "alice"}
	approval := func(n int, who string) AccessApproved {
		return AccessApproved{ApprovalID: shID(n), RequestID: shID(1), OrgID: shOrg, TunnelID: shTunnel, Approver: who}
	}
	grant := GrantCreated{GrantID: shID(9), OrgID: shOrg, TunnelID: shTunnel, SubjectKind: GrantToGroup, Subject: "ml", ExpiresAt: now.Add(time.Hour), GrantedBy: "alice"}

	cases := []struct {
		name    string
		state   []Event
		decide  func(s *Sharing) (any, error)
		wantErr error
		check   func(t *testing.T, out any)
	}{
		{"a grant to a user", nil, func(s *Sharing) (any, error) {
			return s.CreateGrant(tun, NewGrant{GrantID: shID(9), SubjectKind: GrantToUser, Subject: "vic", GrantedBy: "alice", Now: now, TTL: time.Hour})
		}, nil, func(t *testing.T, out any) {
			if g := out.(GrantCreated); !g.ExpiresAt.Equal(now.Add(time.Hour)) || g.Subject != "vic" {
				t.Fatalf("%+v", g)
			}
		}},
		{"a grant past the maximum", nil, func(s *Sharing) (any, error) {
			return s.CreateGrant(tun, NewGrant{GrantID: shID(9), SubjectKind: GrantToUser, Subject: "vic", GrantedBy: "alice", Now: now, TTL: MaxGrantTTL + time.Hour})
		}, ErrValidation, nil},
		{"a group with a control byte", nil, func(s *Sharing) (any, error) {
			return s.CreateGrant(tun, NewGrant{GrantID: shID(9), SubjectKind: GrantToGroup, Subject: "ml\n", GrantedBy: "alice", Now: now, TTL: time.Hour})
		}, ErrValidation, nil},
		{"a grant on a deleted tunnel", nil, func(s *Sharing) (any, error) {
			return s.CreateGrant(gone, NewGrant{GrantID: shID(9), SubjectKind: GrantToUser, Subject: "vic", GrantedBy: "alice", Now: now, TTL: time.Hour})
		}, ErrInvalidState, nil},
		{"a request without a reason", nil, func(s *Sharing) (any, error) {
			return s.RequestAccess(tun, NewAccessRequest{RequestID: shID(1), Requester: "vic", Reason: "  ", Duration: time.Hour, Now: now})
		}, ErrValidation, nil},
		{"a second pending request of one user", []Event{req}, func(s *Sharing) (any, error) {
			return s.RequestAccess(tun, NewAccessRequest{RequestID: shID(2), Requester: "vic", Reason: "again", Duration: time.Hour, Now: now})
		}, ErrConflict, nil},
		{"a request longer than 90 days", nil, func(s *Sharing) (any, error) {
			return s.RequestAccess(tun, NewAccessRequest{RequestID: shID(1), Requester: "vic", Reason: "x", Duration: 91 * 24 * time.Hour, Now: now})
		}, ErrValidation, nil},
		{"self-approval", []Event{req}, func(s *Sharing) (any, error) {
			_, g, err := s.Approve(tun, Approval{RequestID: shID(1), ApprovalID: shID(2), GrantID: shID(9), Approver: "vic", Now: now})
			return g, err
		}, ErrSelfApproval, nil},
		{"the first of two approvals makes no grant", []Event{twoEditors, req}, func(s *Sharing) (any, error) {
			_, g, err := s.Approve(tun, Approval{RequestID: shID(1), ApprovalID: shID(2), GrantID: shID(9), Approver: "e1", Now: now})
			return g, err
		}, nil, func(t *testing.T, out any) {
			if out.(*GrantCreated) != nil {
				t.Fatal("a grant after one of two approvals")
			}
		}},
		{"the same approver twice", []Event{twoEditors, req, approval(2, "e1")}, func(s *Sharing) (any, error) {
			_, g, err := s.Approve(tun, Approval{RequestID: shID(1), ApprovalID: shID(3), GrantID: shID(9), Approver: "e1", Now: now})
			return g, err
		}, ErrConflict, nil},
		{"the second approval grants the requester for the duration", []Event{twoEditors, req, approval(2, "e1")}, func(s *Sharing) (any, error) {
			_, g, err := s.Approve(tun, Approval{RequestID: shID(1), ApprovalID: shID(3), GrantID: shID(9), Approver: "e2", Now: now})
			return g, err
		}, nil, func(t *testing.T, out any) {
			g := out.(*GrantCreated)
			if g == nil || g.Subject != "vic" || !g.ExpiresAt.Equal(now.Add(time.Hour)) || g.RequestID != shID(1) || strings.Join(g.Approvals, ",") != shID(2)+","+shID(3) {
				t.Fatalf("%+v", g)
			}
		}},
		{"approving a denied request", []Event{req, AccessRequestDenied{RequestID: shID(1), OrgID: shOrg, TunnelID: shTunnel, DeniedBy: "alice", Reason: "no"}}, func(s *Sharing) (any, error) {
			_, g, err := s.Approve(tun, Approval{RequestID: shID(1), ApprovalID: shID(3), GrantID: shID(9), Approver: "alice", Now: now})
			return g, err
		}, ErrInvalidState, nil},
		{"a denial without a reason", []Event{req}, func(s *Sharing) (any, error) { return s.Deny(shID(1), "alice", "") }, ErrValidation, nil},
		{"denying one's own request", []Event{req}, func(s *Sharing) (any, error) { return s.Deny(shID(1), "vic", "changed my mind") }, ErrSelfApproval, nil},
		{"expiring before the deadline", []Event{grant}, func(s *Sharing) (any, error) { return s.ExpireGrant(shID(9), now) }, ErrInvalidState, nil},
		{"expiring at the deadline", []Event{grant}, func(s *Sharing) (any, error) { return s.ExpireGrant(shID(9), now.Add(time.Hour)) }, nil, func(t *testing.T, out any) {
			if out.(*GrantExpired) == nil {
				t.Fatal("no expiry")
			}
		}},
		{"expiring a revoked grant", []Event{grant, GrantRevoked{GrantID: shID(9), OrgID: shOrg, TunnelID: shTunnel, RevokedBy: "alice"}}, func(s *Sharing) (any, error) {
			return s.ExpireGrant(shID(9), now.Add(2*time.Hour))
		}, nil, func(t *testing.T, out any) {
			if out.(*GrantExpired) != nil {
				t.Fatal("a revoked grant expires")
			}
		}},
		{"revoking an expired grant", []Event{grant, GrantExpired{GrantID: shID(9), OrgID: shOrg, TunnelID: shTunnel, ExpiresAt: now.Add(time.Hour)}}, func(s *Sharing) (any, error) {
			return s.RevokeGrant(shID(9), "alice", "")
		}, ErrInvalidState, nil},
		{"a policy of 11 approvals", nil, func(s *Sharing) (any, error) {
			return s.SetPolicy(tun, AccessPolicy{ApproverRole: RoleAdmin, RequiredApprovals: 11}, "alice")
		}, ErrValidation, nil},
		{"a superadmin approver role", nil, func(s *Sharing) (any, error) {
			return s.SetPolicy(tun, AccessPolicy{ApproverRole: RoleSuperadmin, RequiredApprovals: 1}, "alice")
		}, ErrValidation, nil},
		{"the default policy again", nil, func(s *Sharing) (any, error) { return s.SetPolicy(tun, DefaultAccessPolicy, "alice") }, nil, func(t *testing.T, out any) {
			if out.(*AccessPolicySet) != nil {
				t.Fatal("setting the policy in force appends")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := c.decide(sharingOf(t, c.state...))
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				c.check(t, out)
			}
		})
	}
}

func TestGrantCoversAndPolicyAdmits(t *testing.T) {
	t.Parallel()
	now := time.Now()
	user := GrantState{GrantCreated: GrantCreated{SubjectKind: GrantToUser, Subject: "vic", ExpiresAt: now.Add(time.Minute)}}
	group := GrantState{GrantCreated: GrantCreated{SubjectKind: GrantToGroup, Subject: "ml", ExpiresAt: now.Add(time.Minute)}}
	for _, c := range []struct {
		g      GrantState
		user   string
		groups []string
		want   bool
	}{
		{user, "vic", nil, true}, {user, "wen", []string{"vic"}, false}, {user, "", nil, false},
		{group, "anyone", []string{"x", "ml"}, true}, {group, "ml", nil, false}, {group, "anyone", []string{"ML"}, false},
	} {
		if got := c.g.Covers(c.user, c.groups); got != c.want {
			t.Errorf("%s:%s covers %s %v: %v", c.g.SubjectKind, c.g.Subject, c.user, c.groups, got)
		}
	}
	if user.ActiveAt(now.Add(time.Minute)) || !user.ActiveAt(now) {
		t.Error("a grant is active until, not at, its expiry")
	}
	ended := user
	ended.Ended = true
	if ended.ActiveAt(now) {
		t.Error("an ended grant is active")
	}
	editors := AccessPolicy{ApproverRole: RoleEditor, RequiredApprovals: 2}
	for _, c := range []struct {
		roles      map[Role]bool
		superadmin bool
		want       bool
	}{
		{map[Role]bool{RoleEditor: true}, false, true}, {map[Role]bool{RoleOwner: true}, false, true}, {nil, true, true},
		{map[Role]bool{RoleAdmin: true}, false, false}, {map[Role]bool{RoleViewer: true}, false, false}, {map[Role]bool{RoleEditor: false}, false, false},
	} {
		if got := PolicyAdmits(editors, c.roles, c.superadmin); got != c.want {
			t.Errorf("roles %v superadmin %v: %v", c.roles, c.superadmin, got)
		}
	}
}
