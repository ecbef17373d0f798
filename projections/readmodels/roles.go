package readmodels

import (
	"context"
	"fmt"
	"time"
)

// RoleAssignment is one user's role in one organization, or on the platform (org
// domain.PlatformOrg) (view role_assignments).
type RoleAssignment struct {
	OrgID      string    `db:"org_id"`
	UserID     string    `db:"user_id"`
	Role       string    `db:"role"`
	AssignedAt time.Time `db:"assigned_at"`
	Position   int64     `db:"position"`
}

// RoleAssignmentFilter selects the role assignments of one organization (or the platform's), by
// user and role.
type RoleAssignmentFilter struct {
	// OrgID is required: an organization's id, or domain.PlatformOrg for the platform's roles.
	OrgID string
	// UserID and Role, when set, are exact.
	UserID, Role string
	// After is the key of the last row of the previous page; the page starts after it.
	After *RoleAssignmentKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// RoleAssignmentKey is the sort key of the role assignments list.
type RoleAssignmentKey struct {
	UserID, Role string
}

const roleColumns = `SELECT org_id, user_id, role, assigned_at, position FROM role_assignments`

// ListRoleAssignments lists the role assignments of an organization by user and role.
func (q *Queries) ListRoleAssignments(ctx context.Context, f RoleAssignmentFilter) ([]RoleAssignment, error) {
	const op = "list role assignments"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if f.OrgID == "" {
		return nil, fmt.Errorf("%s: %w: no organization", op, ErrBadFilter)
	}
	var w where
	w.add("org_id = ?", f.OrgID)
	if f.UserID != "" {
		w.add("user_id = ?", f.UserID)
	}
	if f.Role != "" {
		w.add("role = ?", f.Role)
	}
	if f.After != nil {
		w.add("(user_id, role) > (?, ?)", f.After.UserID, f.After.Role)
	}
	return selectRows[RoleAssignment](ctx, q, op, roleColumns+w.sql()+" ORDER BY user_id, role"+w.limit(f.Limit), w.args...)
}
