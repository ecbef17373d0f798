package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
)

// Deleting a user: the user leaves an organization (or every organization and the platform),
// and with them go their roles there, the grants made to them by name on its tunnels, their
// pending access requests and the access keys they issued, all in one append with the deletion. Nodes also refuse the user's
// tokens issued before the deletion there (a group grant would otherwise still admit them).

// UserDeleted records a user's deletion from OrgID (PlatformOrg: from every organization and
// the platform). The counts say what it ended; each ended thing has its own event (role.unassigned,
// grant.revoked, access.denied, access_key.revoked) whose causation_id is this event's id.
type UserDeleted struct {
	OrgID          string `json:"org_id"`
	UserID         string `json:"user_id"`
	DeletedBy      string `json:"deleted_by"`
	Reason         string `json:"reason"`
	RolesWithdrawn int    `json:"roles_withdrawn"`
	GrantsRevoked  int    `json:"grants_revoked"`
	RequestsDenied int    `json:"requests_denied"`
	// KeysRevoked counts the access keys the user issued there that were still valid (absent in
	// deletions recorded before keys were revoked with their issuer).
	KeysRevoked int `json:"keys_revoked,omitempty"`
}

func (UserDeleted) EventType() string { return TypeUserDeleted }

// UserStream is the stream of a user's deletions. User ids come from identity providers and may
// hold any character, so the stream uses a digest of it.
func UserStream(userID string) string {
	sum := sha256.Sum256([]byte(userID))
	return "user-" + hex.EncodeToString(sum[:16])
}

// UserDeletion is what a deletion decides on: the user's roles in the organizations in scope, the
// sharing state of the tunnels where the user holds a grant by name or made a request, and the
// access keys the user issued in scope (any others are left alone).
type UserDeletion struct {
	OrgID, UserID, DeletedBy, Reason string
	Roles                            []*RoleAssignment
	Sharing                          []*Sharing
	AccessKeys                       []*AccessKey
}

// CausedByUserDeletion is the reason a deletion's grant.revoked, access.denied and
// access_key.revoked give (theirs
// points to the user.deleted with the operator's reason by causation_id).
const CausedByUserDeletion = "user deleted"

// StreamChange is events for one aggregate's stream, decided at its version.
type StreamChange struct {
	Stream  string
	Version uint64
	Events  []Event
}

// DeleteUser decides a user's deletion: UserDeleted and the changes it causes, stream by stream
// (sorted by stream, so that a repeated decision lists them alike). Nobody deletes themselves.
func DeleteUser(in UserDeletion) (UserDeleted, []StreamChange, error) {
	var p problems
	checkUser(&p, "user_id", in.UserID)
	checkUser(&p, "deleted_by", in.DeletedBy)
	if in.OrgID != PlatformOrg {
		checkID(&p, "org", in.OrgID)
	}
	checkSharingText(&p, "reason", in.Reason, true)
	if in.UserID != "" && in.UserID == in.DeletedBy {
		p.add("user_id", "is you: nobody deletes themselves (ask another owner or admin)")
	}
	if err := p.err(); err != nil {
		return UserDeleted{}, nil, err
	}
	inScope := func(org string) bool { return in.OrgID == PlatformOrg || org == in.OrgID }
	ev := UserDeleted{OrgID: in.OrgID, UserID: in.UserID, DeletedBy: in.DeletedBy, Reason: in.Reason}
	var out []StreamChange
	for _, ra := range in.Roles {
		if ra.userID != in.UserID || !inScope(ra.orgID) {
			return UserDeleted{}, nil, fmt.Errorf("delete user: roles of %s in %s are not the deletion's", ra.userID, ra.orgID)
		}
		var evs []Event
		for _, r := range ra.Roles() {
			evs = append(evs, RoleUnassigned{OrgID: ra.orgID, UserID: in.UserID, Role: r})
		}
		if len(evs) > 0 {
			ev.RolesWithdrawn += len(evs)
			out = append(out, StreamChange{Stream: RoleStream(ra.orgID, in.UserID), Version: ra.version, Events: evs})
		}
	}
	for _, sh := range in.Sharing {
		if !inScope(sh.orgID) {
			return UserDeleted{}, nil, fmt.Errorf("delete user: tunnel %s of %s is not in the deletion's scope", sh.tunnelID, sh.orgID)
		}
		var evs []Event
		for _, g := range sh.Grants() {
			if g.Ended || g.SubjectKind != GrantToUser || g.Subject != in.UserID {
				continue
			}
			r, err := sh.RevokeGrant(g.GrantID, in.DeletedBy, CausedByUserDeletion)
			if err != nil {
				return UserDeleted{}, nil, err
			}
			evs = append(evs, r)
			ev.GrantsRevoked++
		}
		for _, q := range sh.Requests() {
			if q.State != RequestPending || q.Requester != in.UserID {
				continue
			}
			d, err := sh.Deny(q.RequestID, in.DeletedBy, CausedByUserDeletion)
			if err != nil {
				return UserDeleted{}, nil, err
			}
			evs = append(evs, d)
			ev.RequestsDenied++
		}
		if len(evs) > 0 {
			out = append(out, StreamChange{Stream: SharingStream(sh.tunnelID), Version: sh.version, Events: evs})
		}
	}
	for _, k := range in.AccessKeys {
		if k.issuedBy != in.UserID || !inScope(k.orgID) {
			return UserDeleted{}, nil, fmt.Errorf("delete user: access key %s issued by %s in %s is not the deletion's", k.id, k.issuedBy, k.orgID)
		}
		if k.revoked {
			continue
		}
		r, err := k.Revoke(CausedByUserDeletion)
		if err != nil {
			return UserDeleted{}, nil, err
		}
		ev.KeysRevoked++
		out = append(out, StreamChange{Stream: AccessKeyStream(k.id), Version: k.version, Events: []Event{r}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return ev, out, nil
}
