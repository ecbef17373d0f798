package commands

import (
	"context"

	"github.com/tunnelplane/tunnelplane/domain"
)

// AssignRole grants a user a role in an organization (PlatformOrg: superadmin).
type AssignRole struct {
	OrgID  string      `json:"org_id"`
	UserID string      `json:"user_id"`
	Role   domain.Role `json:"role"`
}

func (AssignRole) CommandName() string      { return "AssignRole" }
func (c AssignRole) Permission() Permission { return rolePermission(c.OrgID, c.Role, ActAssign) }

// rolePermission: granting or withdrawing owner (or superadmin) needs more than other roles.
func rolePermission(org string, role domain.Role, act string) Permission {
	if role == domain.RoleOwner || role == domain.RoleSuperadmin {
		return Permission{Org: org, Object: ObjRoles, Action: ActAssignOwner}
	}
	return Permission{Org: org, Object: ObjRoles, Action: act}
}

func (s *Service) assignRole(ctx context.Context, c AssignRole) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	if c.OrgID != domain.PlatformOrg {
		if err := s.requireOrg(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
	}
	return s.changeRoles(ctx, c.OrgID, c.UserID, func(ra *domain.RoleAssignment) (domain.Event, error) {
		ev, err := ra.Assign(c.Role)
		if ev == nil {
			return nil, err // nil event and nil error: already held
		}
		return ev, err
	}, g, meta)
}

// changeRoles loads a user's roles in an org, lets decide choose the event (nil: nothing to do)
// and appends it, retrying on a concurrent change.
func (s *Service) changeRoles(ctx context.Context, orgID, userID string, decide func(*domain.RoleAssignment) (domain.Event, error), g *idGen, meta []byte) (Result, error) {
	stream := domain.RoleStream(orgID, userID)
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		recs, err := s.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		ra, err := domain.RehydrateRoleAssignment(orgID, userID, recs)
		if err != nil {
			return decision{}, err
		}
		ev, err := decide(ra)
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(userID, ra.Version()), nil
		}
		return changed(userID, stream, ra.Version(), ev), nil
	})
}

// UnassignRole withdraws a role.
type UnassignRole struct {
	OrgID  string      `json:"org_id"`
	UserID string      `json:"user_id"`
	Role   domain.Role `json:"role"`
}

func (UnassignRole) CommandName() string      { return "UnassignRole" }
func (c UnassignRole) Permission() Permission { return rolePermission(c.OrgID, c.Role, ActUnassign) }

func (s *Service) unassignRole(ctx context.Context, c UnassignRole) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.changeRoles(ctx, c.OrgID, c.UserID, func(ra *domain.RoleAssignment) (domain.Event, error) {
		return ra.Unassign(c.Role)
	}, g, meta)
}
