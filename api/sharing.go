package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// GrantInput is the body of POST /tunnels/{id}/grants: a user or a group, and a lifetime.
type GrantInput struct {
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
	// TTL is a Go duration ("8h") or days ("7d"); at most 365 days.
	TTL string `json:"ttl"`
}

// Grant is a grant on a tunnel as its sharing stream holds it.
type Grant struct {
	ID          string    `json:"id"`
	TunnelID    string    `json:"tunnel_id"`
	SubjectKind string    `json:"subject_kind"`
	Subject     string    `json:"subject"`
	ExpiresAt   time.Time `json:"expires_at"`
	GrantedBy   string    `json:"granted_by"`
	RequestID   string    `json:"request_id,omitempty"`
	Approvals   []string  `json:"approvals,omitempty"`
	// State is active, revoked or expired (by the clock, or recorded).
	State string `json:"state"`
}

// Grants is a tunnel's access policy and grants.
type Grants struct {
	Policy domain.AccessPolicy `json:"policy"`
	Items  []Grant             `json:"items"`
}

// AccessPolicyInput is the body of PUT /tunnels/{id}/access-policy.
type AccessPolicyInput struct {
	ApproverRole      domain.Role `json:"approver_role"`
	RequiredApprovals int         `json:"required_approvals"`
}

// AccessRequestInput is the body of POST /access-requests.
type AccessRequestInput struct {
	Org      string `json:"org,omitempty"`
	TunnelID string `json:"tunnel_id"`
	// Duration is a Go duration ("8h") or days ("7d"): how long the grant would last.
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

// AccessDecisionInput is the body of POST /access-requests/{id}/approve (comment, optional)
// and …/deny (reason, required).
type AccessDecisionInput struct {
	Comment string `json:"comment,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// AccessRequest is an access request and what was decided on it.
type AccessRequest struct {
	ID              string     `json:"id"`
	OrgID           string     `json:"org_id"`
	TunnelID        string     `json:"tunnel_id"`
	Requester       string     `json:"requester"`
	DurationSeconds int64      `json:"duration_seconds"`
	Reason          string     `json:"reason"`
	State           string     `json:"state"`
	Approvers       []string   `json:"approvers"`
	GrantID         *string    `json:"grant_id,omitempty"`
	DeniedBy        *string    `json:"denied_by,omitempty"`
	Denial          *string    `json:"denial,omitempty"`
	RequestedAt     time.Time  `json:"requested_at"`
	DecidedAt       *time.Time `json:"decided_at,omitempty"`
	Position        int64      `json:"position"`
}

func (s *Server) createGrant(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in GrantInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	ttl, ok := ParseTTL(in.TTL)
	if !ok {
		return invalid("ttl", "must be a duration like \"8h\" or \"7d\"")
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActShare, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.CreateGrant.Handle(c.Request().Context(),
		commands.CreateGrant{OrgID: org, TunnelID: c.Param("id"), User: in.User, Group: in.Group, TTL: ttl})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listGrants(c echo.Context) error {
	// wait_for is accepted and needs no wait: grants are read from the log itself.
	q, err := newQuery(c, "org", "state", "wait_for")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "active", "active", "all")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActRead, true)
	if err != nil {
		return err
	}
	sh, err := s.cfg.Service.Sharing(c.Request().Context(), org, c.Param("id"))
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	out := Grants{Policy: sh.Policy(), Items: []Grant{}}
	for _, g := range sh.Grants() {
		st := "active"
		switch {
		case g.EndedBy == domain.TypeGrantRevoked:
			st = "revoked"
		case !g.ActiveAt(now):
			st = "expired"
		}
		if state == "active" && st != "active" {
			continue
		}
		out.Items = append(out.Items, Grant{ID: g.GrantID, TunnelID: g.TunnelID, SubjectKind: g.SubjectKind, Subject: g.Subject, ExpiresAt: g.ExpiresAt,
			GrantedBy: g.GrantedBy, RequestID: g.RequestID, Approvals: g.Approvals, State: st})
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) revokeGrant(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActShare, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RevokeGrant.Handle(c.Request().Context(),
		commands.RevokeGrant{OrgID: org, TunnelID: c.Param("id"), GrantID: c.Param("grant_id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) setAccessPolicy(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in AccessPolicyInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTunnels, commands.ActShare, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.SetAccessPolicy.Handle(c.Request().Context(),
		commands.SetAccessPolicy{OrgID: org, TunnelID: c.Param("id"), ApproverRole: in.ApproverRole, RequiredApprovals: in.RequiredApprovals})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) requestAccess(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in AccessRequestInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	d, ok := ParseTTL(in.Duration)
	if !ok {
		return invalid("duration", "must be a duration like \"8h\" or \"7d\"")
	}
	org, err := s.orgFor(c, in.Org, commands.ObjAccessRequests, commands.ActCreate, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RequestAccess.Handle(c.Request().Context(),
		commands.RequestAccess{OrgID: org, TunnelID: in.TunnelID, Duration: d, Reason: in.Reason})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listAccessRequests(c echo.Context) error {
	q, err := newQuery(c, "org", "tunnel_id", "requester", "state", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("access_requests")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "all", domain.RequestPending, domain.RequestApproved, domain.RequestDenied, "all")
	if err != nil {
		return err
	}
	if state == "all" {
		state = ""
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAccessRequests, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.AccessRequests); err != nil {
		return err
	}
	f := readmodels.AccessRequestFilter{OrgID: org, State: state, Requester: q.str("requester"), Limit: p.limit + 1}
	if v := q.str("tunnel_id"); v != "" {
		if !domain.ValidID(v) {
			return badRequest("tunnel_id", "must be a tunnel id (a UUID)")
		}
		f.TunnelID = v
	}
	if len(f.Requester) > 256 {
		return badRequest("requester", "is longer than 256 bytes")
	}
	if p.cursor != nil {
		at, err := p.cursorTime(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		f.After = &readmodels.AccessRequestKey{RequestedAt: at, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListAccessRequests(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, accessRequestOf),
		func(r AccessRequest) []any { return []any{r.RequestedAt.Format(time.RFC3339Nano), r.ID} }))
}

func accessRequestOf(r readmodels.AccessRequest) AccessRequest {
	out := AccessRequest(r)
	if out.Approvers == nil {
		out.Approvers = []string{}
	}
	return out
}

// accessRequestFor finds the tunnel of a request in an organization the caller may read requests
// in; a request made a moment ago (or by another process) is waited for.
func (s *Server) accessRequestFor(c echo.Context, given string) (readmodels.AccessRequest, error) {
	ctx := c.Request().Context()
	org, err := s.orgFor(c, given, commands.ObjAccessRequests, commands.ActRead, true)
	if err != nil {
		return readmodels.AccessRequest{}, err
	}
	r, err := s.cfg.ReadModels.GetAccessRequest(ctx, org, c.Param("id"))
	if errors.Is(err, domain.ErrNotFound) && domain.ValidID(c.Param("id")) {
		if err := s.catchUp(ctx, projections.AccessRequests); err != nil {
			return readmodels.AccessRequest{}, err
		}
		r, err = s.cfg.ReadModels.GetAccessRequest(ctx, org, c.Param("id"))
	}
	return r, err
}

func (s *Server) decideAccess(c echo.Context, approve bool) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in AccessDecisionInput
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	r, err := s.accessRequestFor(c, q.str("org"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	var res commands.Result
	if approve {
		res, err = s.cfg.Service.Handlers.ApproveAccess.Handle(ctx, commands.ApproveAccess{OrgID: r.OrgID, TunnelID: r.TunnelID, RequestID: r.ID, Comment: in.Comment})
	} else {
		res, err = s.cfg.Service.Handlers.DenyAccess.Handle(ctx, commands.DenyAccess{OrgID: r.OrgID, TunnelID: r.TunnelID, RequestID: r.ID, Reason: in.Reason})
	}
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) approveAccess(c echo.Context) error { return s.decideAccess(c, true) }
func (s *Server) denyAccess(c echo.Context) error    { return s.decideAccess(c, false) }
