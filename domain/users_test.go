package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

func rolesOf(t *testing.T, org, user string, evs ...Event) *RoleAssignment {
	t.Helper()
	var recs []Recorded
	for i, e := range evs {
		b, _ := json.Marshal(e)
		recs = append(recs, Recorded{Type: e.EventType(), Payload: b, StreamVersion: uint64(i + 1)})
	}
	ra, err := RehydrateRoleAssignment(org, user, recs)
	if err != nil {
		t.Fatal(err)
	}
	return ra
}

// A deletion withdraws every role the user holds in scope, revokes the grants made to the user by
// name that have not ended, denies the user's pending requests and revokes the access keys the user
// issued, each on its own stream at the version it was read; grants to groups, other users'
// grants, requests and keys, and ended, decided or revoked ones are left alone.
func TestDeleteUserDecides(t *testing.T) {
	at := time.Unix(1000, 0).UTC()
	sh := sharingOf(t,
		GrantCreated{GrantID: shID(1), OrgID: shOrg, TunnelID: shTunnel, SubjectKind: GrantToUser, Subject: "gus", ExpiresAt: at.Add(time.Hour), GrantedBy: "alice"},
		GrantCreated{GrantID: shID(2), OrgID: shOrg, TunnelID: shTunnel, SubjectKind: GrantToGroup, Subject: "gus", ExpiresAt: at.Add(time.Hour), GrantedBy: "alice"},
		GrantCreated{GrantID: shID(3), OrgID: shOrg, TunnelID: shTunnel, SubjectKind: GrantToUser, Subject: "vic", ExpiresAt: at.Add(time.Hour), GrantedBy: "alice"},
		GrantCreated{GrantID: shID(4), OrgID: shOrg, TunnelID: shTunnel, SubjectKind: GrantToUser, Subject: "gus", ExpiresAt: at.Add(time.Hour), GrantedBy: "alice"},
		GrantRevoked{GrantID: shID(4), OrgID: shOrg, TunnelID: shTunnel, RevokedBy: "alice"},
		AccessRequested{RequestID: shID(5), OrgID: shOrg, TunnelID: shTunnel, Requester: "gus", DurationSeconds: 3600, Reason: "on call"},
		AccessRequested{RequestID: shID(6), OrgID: shOrg, TunnelID: shTunnel, Requester: "vic", DurationSeconds: 3600, Reason: "on call"},
		AccessRequested{RequestID: shID(7), OrgID: shOrg, TunnelID: shTunnel, Requester: "gus", DurationSeconds: 3600, Reason: "again"},
		AccessRequestDenied{RequestID: shID(7), OrgID: shOrg, TunnelID: shTunnel, DeniedBy: "alice", Reason: "no"},
	)
	ra := rolesOf(t, shOrg, "gus", RoleAssigned{OrgID: shOrg, UserID: "gus", Role: RoleViewer}, RoleAssigned{OrgID: shOrg, UserID: "gus", Role: RoleEditor},
		RoleUnassigned{OrgID: shOrg, UserID: "gus", Role: RoleEditor}, RoleAssigned{OrgID: shOrg, UserID: "gus", Role: RoleOperator})
	keyOf := func(id, org, by string, revoked bool) *AccessKey {
		t.Helper()
		evs := []Event{AccessKeyIssued{KeyID: id, OrgID: org, TunnelID: shTunnel, SecretHash: "h", ExpiresAt: at.Add(time.Hour), IssuedBy: by}}
		if revoked {
			evs = append(evs, AccessKeyRevoked{KeyID: id, OrgID: org, TunnelID: shTunnel})
		}
		var recs []Recorded
		for i, e := range evs {
			b, _ := json.Marshal(e)
			recs = append(recs, Recorded{Type: e.EventType(), Payload: b, StreamVersion: uint64(i + 1)})
		}
		k, err := RehydrateAccessKey(recs)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keys := []*AccessKey{keyOf(shID(20), shOrg, "gus", false), keyOf(shID(21), shOrg, "gus", true)}
	ev, changes, err := DeleteUser(UserDeletion{OrgID: shOrg, UserID: "gus", DeletedBy: "alice", Reason: "left", Roles: []*RoleAssignment{ra}, Sharing: []*Sharing{sh}, AccessKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if ev.RolesWithdrawn != 2 || ev.GrantsRevoked != 1 || ev.RequestsDenied != 1 || ev.KeysRevoked != 1 || ev.OrgID != shOrg || ev.Reason != "left" {
		t.Fatalf("user.deleted = %+v", ev)
	}
	got := map[string]string{}
	for _, c := range changes {
		got[c.Stream] = fmt.Sprintf("v%d %v", c.Version, c.Events)
	}
	want := map[string]string{
		RoleStream(shOrg, "gus"): fmt.Sprintf("v4 %v", []Event{RoleUnassigned{OrgID: shOrg, UserID: "gus", Role: RoleOperator}, RoleUnassigned{OrgID: shOrg, UserID: "gus", Role: RoleViewer}}),
		SharingStream(shTunnel): fmt.Sprintf("v9 %v", []Event{GrantRevoked{GrantID: shID(1), OrgID: shOrg, TunnelID: shTunnel, RevokedBy: "alice", Reason: CausedByUserDeletion},
			AccessRequestDenied{RequestID: shID(5), OrgID: shOrg, TunnelID: shTunnel, DeniedBy: "alice", Reason: CausedByUserDeletion}}),
		AccessKeyStream(shID(20)): fmt.Sprintf("v1 %v", []Event{AccessKeyRevoked{KeyID: shID(20), OrgID: shOrg, TunnelID: shTunnel, Reason: CausedByUserDeletion}}),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes\n got %v\nwant %v", got, want)
	}

	// Refused: deleting yourself, no reason, a bad scope, roles of another organization.
	for name, in := range map[string]UserDeletion{
		"self":         {OrgID: shOrg, UserID: "alice", DeletedBy: "alice", Reason: "x"},
		"no reason":    {OrgID: shOrg, UserID: "gus", DeletedBy: "alice"},
		"bad org":      {OrgID: "acme", UserID: "gus", DeletedBy: "alice", Reason: "x"},
		"control char": {OrgID: shOrg, UserID: "gus\x00", DeletedBy: "alice", Reason: "x"},
	} {
		var ve *ValidationError
		if _, _, err := DeleteUser(in); !errors.As(err, &ve) {
			t.Errorf("%s: err = %v, want a validation error", name, err)
		}
	}
	other := rolesOf(t, "0193f2a4-7c1e-7d3a-9b2e-00000000b0ff", "gus", RoleAssigned{OrgID: "0193f2a4-7c1e-7d3a-9b2e-00000000b0ff", UserID: "gus", Role: RoleViewer})
	if _, _, err := DeleteUser(UserDeletion{OrgID: shOrg, UserID: "gus", DeletedBy: "alice", Reason: "x", Roles: []*RoleAssignment{other}}); err == nil {
		t.Error("a deletion from one organization took roles of another")
	}
	// Keys another user issued, or issued in another organization, are not the deletion's.
	for _, k := range []*AccessKey{keyOf(shID(22), shOrg, "vic", false), keyOf(shID(23), "0193f2a4-7c1e-7d3a-9b2e-00000000b0ff", "gus", false)} {
		if _, _, err := DeleteUser(UserDeletion{OrgID: shOrg, UserID: "gus", DeletedBy: "alice", Reason: "x", AccessKeys: []*AccessKey{k}}); err == nil {
			t.Errorf("a deletion from %s revoked key %s of %s in %s", shOrg, k.ID(), k.IssuedBy(), k.OrgID())
		}
	}
	// Everywhere: every organization's roles count.
	ev, changes, err = DeleteUser(UserDeletion{OrgID: PlatformOrg, UserID: "gus", DeletedBy: "root", Reason: "left", Roles: []*RoleAssignment{ra, other}})
	if err != nil || ev.RolesWithdrawn != 3 || len(changes) != 2 {
		t.Fatalf("deletion everywhere: %+v, %d changes, %v", ev, len(changes), err)
	}
}
