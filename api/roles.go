package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// RoleAssignment is one user's role in one organization ("*": the platform).
type RoleAssignment struct {
	OrgID      string    `json:"org_id"`
	UserID     string    `json:"user_id"`
	Role       string    `json:"role"`
	AssignedAt time.Time `json:"assigned_at"`
	Position   int64     `json:"position"`
}

// RoleInput is the body of POST /role-assignments. The superadmin role is platform-wide: its org
// is "*" (or left out).
type RoleInput struct {
	Org    string `json:"org,omitempty"`
	UserID string `json:"user_id"`
	Role   string `json:"role"`
}

// roleOrg resolves where a role is granted: the platform for superadmin, else an organization.
func (s *Server) roleOrg(c echo.Context, given string, role domain.Role, action string) (string, error) {
	if role == domain.RoleSuperadmin || given == domain.PlatformOrg {
		if given != "" && given != domain.PlatformOrg {
			return "", invalid("org", "must be \"*\" or left out for the superadmin role (it is platform-wide)")
		}
		return domain.PlatformOrg, nil
	}
	return s.orgFor(c, given, commands.ObjRoles, action, false)
}

func (s *Server) assignRole(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in RoleInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return err
	}
	cmd := commands.AssignRole{UserID: in.UserID, Role: domain.Role(in.Role)}
	if cmd.OrgID, err = s.roleOrg(c, given, cmd.Role, cmd.Permission().Action); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.AssignRole.Handle(c.Request().Context(), cmd)
	if err != nil {
		return err
	}
	s.roleChanged(c, res)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) unassignRole(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	// User ids come from identity providers and may hold any character; clients escape them.
	user, err := url.PathUnescape(c.Param("user_id"))
	if err != nil {
		return badRequest("user_id", "is not a valid escaped path segment")
	}
	role, err := url.PathUnescape(c.Param("role"))
	if err != nil {
		return badRequest("role", "is not a valid escaped path segment")
	}
	cmd := commands.UnassignRole{UserID: user, Role: domain.Role(role)}
	if cmd.OrgID, err = s.roleOrg(c, q.str("org"), cmd.Role, cmd.Permission().Action); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.UnassignRole.Handle(c.Request().Context(), cmd)
	if err != nil {
		return err
	}
	s.roleChanged(c, res)
	return s.written(c, http.StatusOK, res)
}

func (s *Server) listRoles(c echo.Context) error {
	q, err := newQuery(c, "org", "user_id", "role", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("role-assignments")
	if err != nil {
		return err
	}
	org, err := s.scope(c, q.str("org"), commands.ObjRoles, commands.ActRead)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.RoleAssignments); err != nil {
		return err
	}
	f := readmodels.RoleAssignmentFilter{OrgID: org, UserID: q.str("user_id"), Role: q.str("role"), Limit: p.limit + 1}
	if p.cursor != nil {
		user, err := p.cursorString(0)
		if err != nil {
			return err
		}
		role, err := p.cursorString(1)
		if err != nil {
			return err
		}
		f.After = &readmodels.RoleAssignmentKey{UserID: user, Role: role}
	}
	rows, err := s.cfg.ReadModels.ListRoleAssignments(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, func(r readmodels.RoleAssignment) RoleAssignment { return RoleAssignment(r) }),
		func(r RoleAssignment) []any { return []any{r.UserID, r.Role} }))
}

// roleChanged answers a role change only once the RBAC view has applied it, so the change is in
// force for every request that follows the answer. A grant would also be found by the authorizer
// waiting on a denial, but a withdrawal would not: without this wait the withdrawn role could
// still be used for a moment.
func (s *Server) roleChanged(c echo.Context, res commands.Result) {
	if res.Noop || res.Position == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), roleChangeWait)
	defer cancel()
	if err := s.cfg.Runner.WaitFor(ctx, res.Position, projections.RoleAssignments); err != nil {
		s.log.Warn("role change recorded but not yet in force", "position", res.Position, "error", err,
			"request_id", requestIDsFrom(c).request, "correlation_id", requestIDsFrom(c).correlation)
	}
}

// roleChangeWait bounds how long a role change waits to be in force before it is answered.
const roleChangeWait = 5 * time.Second

// deleteUser removes a user from an organization (org "*": from every organization and the
// platform): their roles, grants by name and pending requests there end in one append with
// user.deleted, and nodes refuse their earlier tokens (commands.DeleteUser).
func (s *Server) deleteUser(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	user, err := url.PathUnescape(c.Param("user_id"))
	if err != nil {
		return badRequest("user_id", "is not a valid escaped path segment")
	}
	cmd := commands.DeleteUser{UserID: user, Reason: q.str("reason")}
	given := q.str("org")
	if given == domain.PlatformOrg {
		cmd.OrgID = domain.PlatformOrg
	} else if cmd.OrgID, err = s.orgFor(c, given, commands.ObjRoles, commands.ActUnassign, false); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.DeleteUser.Handle(c.Request().Context(), cmd)
	if err != nil {
		return err
	}
	s.roleChanged(c, res)
	return s.written(c, http.StatusOK, res)
}
