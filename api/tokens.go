package api

import (
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// DefaultAgentTokenTTL is the lifetime of an agent token when the request names none.
const DefaultAgentTokenTTL = 30 * 24 * time.Hour

// AgentToken is an issued agent token's record (never the token itself).
type AgentToken struct {
	ID           string     `json:"id"`
	OrgID        string     `json:"org_id"`
	TunnelID     string     `json:"tunnel_id"`
	KeyID        string     `json:"key_id"`
	IssuedBy     string     `json:"issued_by"`
	IssuedAt     time.Time  `json:"issued_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason *string    `json:"revoke_reason,omitempty"`
	Position     int64      `json:"position"`
	State        string     `json:"state"`
}

// TokenInput is the (optional) body of POST /tunnels/{id}/tokens.
type TokenInput struct {
	// TTL is a Go duration like "720h"; default 30 days, at most 365 days.
	TTL string `json:"ttl,omitempty"`
}

func (s *Server) issueToken(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in TokenInput
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	ttl := DefaultAgentTokenTTL
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil {
			return invalid("ttl", "must be a duration like \"720h\"")
		}
		ttl = d
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTokens, commands.ActIssue, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.IssueAgentToken.Handle(c.Request().Context(),
		commands.IssueAgentToken{OrgID: org, TunnelID: c.Param("id"), TTL: ttl})
	if err != nil {
		return err
	}
	// The token is shown once: no cache may keep it.
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/tokens/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

// decodeOptionalBody is decodeBody for endpoints whose body may be left out entirely.
func decodeOptionalBody(c echo.Context, dst any) error {
	req := c.Request()
	raw, err := io.ReadAll(req.Body)
	if err != nil {
		return decodeBody(c, dst) // reports the size limit or the read error
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	req.Body = io.NopCloser(bytes.NewReader(raw))
	return decodeBody(c, dst)
}

// credentialList is what a list of agent tokens or of access keys takes from its request.
type credentialList struct {
	p                    page
	org, state, tunnelID string
	after                *readmodels.AgentTokenKey
}

// credentialListOf reads a credential list's request: the page (cursor kind kind), the org the
// caller may read object in, the state filter and the tunnel, once projection shows wait_for.
func (s *Server) credentialListOf(c echo.Context, kind, object, projection string) (credentialList, error) {
	var l credentialList
	q, err := newQuery(c, "org", "tunnel_id", "state", "limit", "cursor", "wait_for")
	if err != nil {
		return l, err
	}
	if l.p, err = q.page(kind); err != nil {
		return l, err
	}
	if l.state, err = q.oneOf("state", "all", "active", "revoked", "expired", "all"); err != nil {
		return l, err
	}
	if l.state == "all" {
		l.state = ""
	}
	if l.org, err = s.orgFor(c, q.str("org"), object, commands.ActRead, true); err != nil {
		return l, err
	}
	if err := s.waitFor(c, projection); err != nil {
		return l, err
	}
	if v := q.str("tunnel_id"); v != "" {
		if !domain.ValidID(v) {
			return l, badRequest("tunnel_id", "must be a tunnel id (a UUID)")
		}
		l.tunnelID = v
	}
	if l.p.cursor != nil {
		at, err := l.p.cursorTime(0)
		if err != nil {
			return l, err
		}
		id, err := l.p.cursorID(1)
		if err != nil {
			return l, err
		}
		l.after = &readmodels.AgentTokenKey{IssuedAt: at, ID: id}
	}
	return l, nil
}

func (s *Server) listTokens(c echo.Context) error {
	l, err := s.credentialListOf(c, "tokens", commands.ObjTokens, projections.AgentTokens)
	if err != nil {
		return err
	}
	p := l.p
	f := readmodels.AgentTokenFilter{OrgID: l.org, State: l.state, TunnelID: l.tunnelID, After: l.after, Limit: p.limit + 1}
	rows, err := s.cfg.ReadModels.ListAgentTokens(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, func(t readmodels.AgentToken) AgentToken { return AgentToken(t) }),
		func(t AgentToken) []any { return []any{t.IssuedAt.Format(time.RFC3339Nano), t.ID} }))
}

func (s *Server) getToken(c echo.Context) error {
	q, err := newQuery(c, "org", "wait_for")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTokens, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.AgentTokens); err != nil {
		return err
	}
	t, err := s.cfg.ReadModels.GetAgentToken(c.Request().Context(), org, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, AgentToken(t))
}

func (s *Server) revokeToken(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjTokens, commands.ActRevoke, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RevokeAgentToken.Handle(c.Request().Context(),
		commands.RevokeAgentToken{OrgID: org, TokenID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}
