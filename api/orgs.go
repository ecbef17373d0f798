package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Org is an organization as the orgs view holds it.
type Org struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	Position  int64     `json:"position"`
}

// OrgInput is the body of POST /orgs.
type OrgInput struct {
	Name string `json:"name"`
	// Owner, when set, becomes the organization's first owner.
	Owner string `json:"owner,omitempty"`
}

func (s *Server) createOrg(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in OrgInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.CreateOrganization.Handle(c.Request().Context(), commands.CreateOrganization{Name: in.Name, Owner: in.Owner})
	if err != nil {
		return err
	}
	if in.Owner != "" {
		s.roleChanged(c, res)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/orgs/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listOrgs(c echo.Context) error {
	q, err := newQuery(c, "name", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("orgs")
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Orgs, projections.RoleAssignments); err != nil {
		return err
	}
	ctx := c.Request().Context()
	f := readmodels.OrgFilter{Name: q.str("name"), Limit: p.limit + 1}
	if f.All, err = s.isSuperadmin(c, commands.ObjOrgs); err != nil {
		return err
	}
	if !f.All {
		// Everyone may list; each sees the organizations where they hold a role.
		if f.IDs, err = s.cfg.Service.Authorizer().OrgsOf(commands.ActorFrom(ctx).ID); err != nil {
			return err
		}
	}
	if p.cursor != nil {
		name, err := p.cursorString(0)
		if err != nil {
			return err
		}
		f.After = &readmodels.OrgKey{Name: name}
	}
	rows, err := s.cfg.ReadModels.ListOrgs(ctx, f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, func(o readmodels.Org) Org { return Org(o) }), func(o Org) []any { return []any{o.Name} }))
}

func (s *Server) getOrg(c echo.Context) error {
	if _, err := newQuery(c, "wait_for"); err != nil {
		return err
	}
	org, err := s.orgFor(c, c.Param("org"), commands.ObjOrgs, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Orgs); err != nil {
		return err
	}
	o, err := s.cfg.ReadModels.GetOrg(c.Request().Context(), org)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, Org(o))
}
