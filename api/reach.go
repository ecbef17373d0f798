package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/compliance/reach"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// AccessAnswer is the answer of GET /api/v1/access: who could reach a tunnel at a time, and why.
type AccessAnswer = reach.Answer

// whoCanReach answers GET /api/v1/access?tunnel=T[&at=TIME]. With at, the log is replayed up to
// the position recorded at that time; without it, the read models answer for now. Authorized like
// the audit log: the organization's owners, admins and auditors, and superadmins.
func (s *Server) whoCanReach(c echo.Context) error {
	q, err := newQuery(c, "org", "tunnel", "at", "wait_for")
	if err != nil {
		return err
	}
	tunnel := q.str("tunnel")
	if tunnel == "" {
		return badRequest("tunnel", "is required (a tunnel id)")
	}
	at, err := q.time("at")
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	if at != nil && at.After(now) {
		return badRequest("at", "is in the future (%s); ask about a time that has passed", at.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"))
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAudit, commands.ActRead, true)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := s.waitFor(c, projections.Tunnels); err != nil {
		return err
	}
	// The tunnel must be the organization's (now, in any state), past or live answer alike.
	if err := s.knownTunnel(ctx, org, tunnel); err != nil {
		return err
	}
	var ans reach.Answer
	if at != nil {
		ans, err = reach.Replay(ctx, s.cfg.Log, org, tunnel, *at, now)
	} else {
		// The live answer is as of everything the log holds as it is asked.
		head, herr := s.cfg.Log.Head(ctx)
		if herr != nil {
			return herr
		}
		if err := s.catchUp(ctx, projections.Tunnels, projections.RoleAssignments, projections.AccessKeys); err != nil {
			return err
		}
		var pos uint64
		if head > 0 {
			pos = head - 1
		}
		ans, err = reach.Live(ctx, s.cfg.ReadModels, s.cfg.Log, org, tunnel, s.cfg.Now(), pos)
	}
	switch {
	case errors.Is(err, reach.ErrTooMany):
		return &domain.ValidationError{Fields: []domain.FieldError{{Field: "tunnel", Message: err.Error()}}}
	case errors.Is(err, reach.ErrInvalid):
		return badRequest("at", "%s", err.Error())
	case err != nil:
		return err
	}
	return c.JSON(http.StatusOK, ans)
}

// knownTunnel tells whether the organization has (or had) the tunnel; a miss is looked up again
// once the tunnels view holds everything the log does.
func (s *Server) knownTunnel(ctx context.Context, org, id string) error {
	_, err := s.cfg.ReadModels.GetTunnel(ctx, org, id)
	if errors.Is(err, domain.ErrNotFound) && domain.ValidID(id) {
		if err := s.catchUp(ctx, projections.Tunnels); err != nil {
			return err
		}
		_, err = s.cfg.ReadModels.GetTunnel(ctx, org, id)
	}
	return err
}
