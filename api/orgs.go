package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Org is an organization as the orgs view holds it.
type Org struct {
	ID        string    `json:"id" db:"org_id"`
	Name      string    `json:"name" db:"name"`
	CreatedBy string    `json:"created_by" db:"created_by"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	Position  int64     `json:"position" db:"position"`
}

// where builds a SQL WHERE clause; each ? in a condition becomes the next $n.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	for _, a := range args {
		w.args = append(w.args, a)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(w.args)), 1)
	}
	w.conds = append(w.conds, cond)
}

func (w *where) sql() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// limit appends LIMIT n+1 (one more than the page, to know whether there is a next page).
func (w *where) limit(p page) string {
	w.args = append(w.args, p.limit+1)
	return " LIMIT $" + strconv.Itoa(len(w.args))
}

func dbErr(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w: %w", op, eventstore.ErrUnavailable, err)
}

func selectRows[T any](ctx context.Context, s *Server, op, sql string, args ...any) ([]T, error) {
	rows, err := s.cfg.Pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		return nil, dbErr(op, err)
	}
	return out, nil
}

func selectOne[T any](ctx context.Context, s *Server, op, what, sql string, args ...any) (T, error) {
	rows, err := selectRows[T](ctx, s, op, sql, args...)
	if err != nil {
		var zero T
		return zero, err
	}
	if len(rows) == 0 {
		var zero T
		return zero, fmt.Errorf("%s: %w", what, domain.ErrNotFound)
	}
	return rows[0], nil
}

const orgColumns = `SELECT org_id::text AS org_id, name, created_by, created_at, position FROM orgs`

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
	var w where
	all, err := s.isSuperadmin(c, commands.ObjOrgs)
	if err != nil {
		return err
	}
	if !all {
		// Everyone may list; each sees the organizations where they hold a role.
		orgs, err := s.cfg.Service.Authorizer().OrgsOf(commands.ActorFrom(ctx).ID)
		if err != nil {
			return err
		}
		w.add("org_id::text = ANY(?)", orgs)
	}
	if v := q.str("name"); v != "" {
		w.add("name = ?", v)
	}
	if p.cursor != nil {
		name, err := p.cursorString(0)
		if err != nil {
			return err
		}
		w.add("name > ?", name)
	}
	rows, err := selectRows[Org](ctx, s, "list organizations", orgColumns+w.sql()+" ORDER BY name"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(o Org) []any { return []any{o.Name} }))
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
	o, err := selectOne[Org](c.Request().Context(), s, "get organization", "organization "+org, orgColumns+" WHERE org_id = $1::uuid", org)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, o)
}
