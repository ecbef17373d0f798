package api

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// errOrgUnknown: no organization has that name or id (answered as 403 or 404, see orgFor).
var errOrgUnknown = errors.New("unknown organization")

// lookupOrg maps an organization name or id to its id via the orgs view.
func (s *Server) lookupOrg(ctx context.Context, ref string) (string, error) {
	if id, ok := s.orgIDs.Load(ref); ok {
		return id.(string), nil
	}
	find := func() (string, error) {
		id, err := s.cfg.ReadModels.ResolveOrg(ctx, ref)
		if errors.Is(err, domain.ErrNotFound) {
			return "", errOrgUnknown
		}
		return id, err
	}
	id, err := find()
	if errors.Is(err, errOrgUnknown) {
		// Look again once the view holds everything the log does (it may have caught up between
		// the miss and now, so look again in any case).
		if err := s.catchUp(ctx, projections.Orgs); err != nil {
			return "", err
		}
		id, err = find()
	}
	if err != nil {
		return "", err
	}
	s.orgIDs.Store(ref, id)
	return id, nil
}

// catchUp waits (at most MaxWait) until the named projections have applied everything the log
// holds. Read models that stay behind are ErrNotCaughtUp (503): a lookup that missed then proves
// nothing.
func (s *Server) catchUp(ctx context.Context, names ...string) error {
	// The head from the database, not the one this process knows of: the write that the lookup
	// missed may come from another process (`admin token create`) whose notification is on its way.
	head, err := s.cfg.Log.Head(ctx)
	if err != nil || head == 0 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.MaxWait)
	defer cancel()
	err = s.cfg.Runner.WaitFor(wctx, head-1, names...)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("%s behind the log: %w", strings.Join(names, ", "), ErrNotCaughtUp)
	}
	return err
}

// orgFor resolves the organization a request is about: the given name or id, or else the
// caller's only organization (422 when the caller has none or several). When check is set the
// caller must hold perm there (reads; commands check their own permission). An organization that
// does not exist is answered like one the caller may not act in (403, audited) unless the caller
// could act there if it existed (a superadmin), who gets 404.
func (s *Server) orgFor(c echo.Context, given string, object, action string, check bool) (string, error) {
	ctx := c.Request().Context()
	actor := commands.ActorFrom(ctx)
	authz := s.cfg.Service.Authorizer()
	if given == "" {
		orgs, err := authz.OrgsOf(actor.ID)
		if err != nil {
			return "", err
		}
		if len(orgs) == 0 {
			if err := s.catchUp(ctx, projections.RoleAssignments); err != nil {
				return "", err
			}
			if orgs, err = authz.OrgsOf(actor.ID); err != nil {
				return "", err
			}
		}
		switch len(orgs) {
		case 1:
			given = orgs[0]
		case 0:
			return "", invalid("org", "is required: you hold a role in no organization")
		default:
			return "", invalid("org", "is required: you hold roles in %d organizations; name one", len(orgs))
		}
	}
	org, err := s.lookupOrg(ctx, given)
	if errors.Is(err, errOrgUnknown) {
		if err := authz.Check(ctx, commands.Permission{Org: given, Object: object, Action: action}); err != nil {
			return "", err
		}
		return "", fmt.Errorf("organization %q: %w", given, domain.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	if check {
		if err := authz.Check(ctx, commands.Permission{Org: org, Object: object, Action: action}); err != nil {
			return "", err
		}
	}
	return org, nil
}

// platform checks a permission on a platform object (nodes, keys, projections, the platform's
// roles and audit): only superadmins hold those.
func (s *Server) platform(c echo.Context, object, action string) error {
	return s.cfg.Service.Authorizer().Check(c.Request().Context(), commands.Permission{Org: domain.PlatformOrg, Object: object, Action: action})
}

// isSuperadmin reports whether the caller holds the platform role (without auditing a denial).
func (s *Server) isSuperadmin(c echo.Context, object string) (bool, error) {
	ctx := c.Request().Context()
	return s.cfg.Service.Authorizer().Allowed(ctx, commands.ActorFrom(ctx).ID,
		commands.Permission{Org: domain.PlatformOrg, Object: object, Action: commands.ActRead})
}

// scope resolves the org of an endpoint that also has a platform-wide form (org "*"): role
// assignments and the audit log. It returns domain.PlatformOrg for "*".
func (s *Server) scope(c echo.Context, given, object, action string) (string, error) {
	if given == domain.PlatformOrg {
		if err := s.platform(c, object, action); err != nil {
			return "", err
		}
		return domain.PlatformOrg, nil
	}
	return s.orgFor(c, given, object, action, true)
}

// written answers a command's result: status, the position to wait for, and the ETag of the new
// version where there is one.
func (s *Server) written(c echo.Context, status int, res commands.Result) error {
	if res.Noop && res.Position == 0 {
		// Nothing was written; everything this process knows of is a safe position to wait for.
		if h := s.cfg.Log.KnownHead(); h > 0 {
			res.Position = h - 1
		}
	}
	if res.Version > 0 {
		c.Response().Header().Set(headerETag, etag(int64(res.Version)))
	}
	return c.JSON(status, res)
}
