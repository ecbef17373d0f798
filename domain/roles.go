package domain

import (
	"fmt"
	"sort"
)

// Role is a set of permissions in an organization.
type Role string

// Roles. Superadmin exists only in PlatformOrg.
const (
	RoleOwner      Role = "owner"
	RoleAdmin      Role = "admin"
	RoleOperator   Role = "operator"
	RoleEditor     Role = "editor"
	RoleViewer     Role = "viewer"
	RoleAuditor    Role = "auditor"
	RoleSuperadmin Role = "superadmin"
)

// PlatformOrg is the domain of platform-wide roles (superadmin).
const PlatformOrg = "*"

// OrgRoles are the roles an organization can grant.
var OrgRoles = []Role{RoleOwner, RoleAdmin, RoleOperator, RoleEditor, RoleViewer, RoleAuditor}

// ValidRole reports whether role may be granted in orgID.
func ValidRole(orgID string, role Role) bool {
	if orgID == PlatformOrg {
		return role == RoleSuperadmin
	}
	for _, r := range OrgRoles {
		if r == role {
			return true
		}
	}
	return false
}

// RoleAssignment is one user's roles in one organization.
type RoleAssignment struct {
	orgID, userID string
	roles         map[Role]bool
	version       uint64
}

// RehydrateRoleAssignment rebuilds a user's roles in an org; an empty stream has no roles.
func RehydrateRoleAssignment(orgID, userID string, events []Recorded) (*RoleAssignment, error) {
	a := &RoleAssignment{orgID: orgID, userID: userID, roles: map[Role]bool{}}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *RoleAssigned:
			a.roles[ev.Role] = true
		case *RoleUnassigned:
			delete(a.roles, ev.Role)
		default:
			return nil, fmt.Errorf("role assignment: %w: %s", ErrUnknownEvent, r.Type)
		}
		a.version = r.StreamVersion
	}
	return a, nil
}

// Assign decides granting role; nil when the user already has it.
func (a *RoleAssignment) Assign(role Role) (*RoleAssigned, error) {
	var p problems
	checkUser(&p, "user_id", a.userID)
	if a.orgID != PlatformOrg {
		checkID(&p, "org_id", a.orgID)
	}
	if !ValidRole(a.orgID, role) {
		p.add("role", "must be one of owner, admin, operator, editor, viewer, auditor (superadmin only platform-wide)")
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	if a.roles[role] {
		return nil, nil
	}
	return &RoleAssigned{OrgID: a.orgID, UserID: a.userID, Role: role}, nil
}

// Unassign decides withdrawing role.
func (a *RoleAssignment) Unassign(role Role) (RoleUnassigned, error) {
	if !a.roles[role] {
		return RoleUnassigned{}, fmt.Errorf("unassign %s: %w: user %q does not have it", role, ErrNotFound, a.userID)
	}
	return RoleUnassigned{OrgID: a.orgID, UserID: a.userID, Role: role}, nil
}

// Roles lists the user's roles, sorted.
func (a *RoleAssignment) Roles() []Role {
	out := make([]Role, 0, len(a.roles))
	for r := range a.roles {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (a *RoleAssignment) Version() uint64 { return a.version }
