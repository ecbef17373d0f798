package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// DefaultAgentTokenTTL is the lifetime of an agent token when the request names none.
const DefaultAgentTokenTTL = 30 * 24 * time.Hour

// AgentToken is an issued agent token's record (never the token itself).
type AgentToken struct {
	ID           string     `json:"id" db:"token_id"`
	OrgID        string     `json:"org_id" db:"org_id"`
	TunnelID     string     `json:"tunnel_id" db:"tunnel_id"`
	KeyID        string     `json:"key_id" db:"key_id"`
	IssuedBy     string     `json:"issued_by" db:"issued_by"`
	IssuedAt     time.Time  `json:"issued_at" db:"issued_at"`
	ExpiresAt    time.Time  `json:"expires_at" db:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty" db:"revoked_at"`
	RevokeReason *string    `json:"revoke_reason,omitempty" db:"revoke_reason"`
	Position     int64      `json:"position" db:"position"`
	State        string     `json:"state" db:"state"`
}

const tokenColumns = `SELECT token_id::text AS token_id, org_id::text AS org_id, tunnel_id::text AS tunnel_id, key_id, issued_by, issued_at,
	expires_at, revoked_at, revoke_reason, position,
	CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'active' END AS state
	FROM agent_tokens`

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

func (s *Server) listTokens(c echo.Context) error {
	q, err := newQuery(c, "org", "tunnel_id", "state", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("tokens")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "all", "active", "revoked", "expired", "all")
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
	var w where
	w.add("org_id = ?::uuid", org)
	if v := q.str("tunnel_id"); v != "" {
		if !domain.ValidID(v) {
			return badRequest("tunnel_id", "must be a tunnel id (a UUID)")
		}
		w.add("tunnel_id = ?::uuid", v)
	}
	switch state {
	case "active":
		w.add("revoked_at IS NULL AND expires_at > now()")
	case "revoked":
		w.add("revoked_at IS NOT NULL")
	case "expired":
		w.add("revoked_at IS NULL AND expires_at <= now()")
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
		w.add("(issued_at, token_id) > (?, ?::uuid)", at, id)
	}
	rows, err := selectRows[AgentToken](c.Request().Context(), s, "list agent tokens", tokenColumns+w.sql()+" ORDER BY issued_at, token_id"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, rows, func(t AgentToken) []any { return []any{t.IssuedAt.Format(time.RFC3339Nano), t.ID} }))
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
	id := c.Param("id")
	if !domain.ValidID(id) {
		return fmt.Errorf("agent token %q: %w", id, domain.ErrNotFound)
	}
	t, err := selectOne[AgentToken](c.Request().Context(), s, "get agent token", "agent token "+id, tokenColumns+" WHERE token_id = $1::uuid AND org_id = $2::uuid", id, org)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, t)
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
