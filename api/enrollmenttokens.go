package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// EnrollmentToken is a node enrollment token's record (never the token, nor its hash).
type EnrollmentToken struct {
	ID           string     `json:"id"`
	IssuedBy     string     `json:"issued_by"`
	IssuedAt     time.Time  `json:"issued_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	MaxUses      int        `json:"max_uses"`
	Nodes        []string   `json:"nodes"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason *string    `json:"revoke_reason,omitempty"`
	Position     int64      `json:"position"`
	// State is active, used, expired or revoked.
	State string `json:"state"`
}

func enrollmentTokenOf(t readmodels.EnrollmentToken) EnrollmentToken {
	out := EnrollmentToken(t)
	if out.Nodes == nil {
		out.Nodes = []string{}
	}
	return out
}

// EnrollmentTokenInput is the (optional) body of POST /nodes/enrollment-tokens.
type EnrollmentTokenInput struct {
	// TTL is a Go duration like "1h" or a number of days like "2d"; default 1 hour, at most
	// 7 days.
	TTL string `json:"ttl,omitempty"`
	// Uses is how many nodes the token may enroll; default 1, at most 1000.
	Uses int `json:"uses,omitempty"`
}

func (s *Server) issueEnrollmentToken(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in EnrollmentTokenInput
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	ttl := domain.DefaultEnrollmentTokenTTL
	if in.TTL != "" {
		d, ok := ParseTTL(in.TTL)
		if !ok {
			return invalid("ttl", "must be a duration like \"1h\" or \"2d\"")
		}
		ttl = d
	}
	uses := in.Uses
	if uses == 0 {
		uses = 1
	}
	res, err := s.cfg.Service.Handlers.IssueEnrollmentToken.Handle(c.Request().Context(), commands.IssueEnrollmentToken{TTL: ttl, MaxUses: uses})
	if err != nil {
		return err
	}
	// The token is shown once: no cache may keep it.
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/nodes/enrollment-tokens/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listEnrollmentTokens(c echo.Context) error {
	q, err := newQuery(c, "state", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("enrollment_tokens")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "all", "active", "used", "expired", "revoked", "all")
	if err != nil {
		return err
	}
	if state == "all" {
		state = ""
	}
	if err := s.platform(c, commands.ObjNodes, commands.ActRead); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.EnrollmentTokens); err != nil {
		return err
	}
	f := readmodels.EnrollmentTokenFilter{State: state, Limit: p.limit + 1}
	if p.cursor != nil {
		at, err := p.cursorTime(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		f.After = &readmodels.AgentTokenKey{IssuedAt: at, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListEnrollmentTokens(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, enrollmentTokenOf),
		func(t EnrollmentToken) []any { return []any{t.IssuedAt.Format(time.RFC3339Nano), t.ID} }))
}

func (s *Server) getEnrollmentToken(c echo.Context) error {
	if _, err := newQuery(c, "wait_for"); err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjNodes, commands.ActRead); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.EnrollmentTokens); err != nil {
		return err
	}
	t, err := s.cfg.ReadModels.GetEnrollmentToken(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, enrollmentTokenOf(t))
}

func (s *Server) revokeEnrollmentToken(c echo.Context) error {
	q, err := newQuery(c, "reason")
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RevokeEnrollmentToken.Handle(c.Request().Context(),
		commands.RevokeEnrollmentToken{TokenID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

const enrollmentTokenKey = "tunnelplane.enrollment_token"

// enrollmentBearer returns the bearer credential when it is a node enrollment token.
func enrollmentBearer(c echo.Context) (string, bool) {
	scheme, raw, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
	raw = strings.TrimSpace(raw)
	if !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(raw, domain.EnrollmentTokenPrefix) {
		return "", false
	}
	return raw, true
}

// authenticateEnrollment is the middleware of the one route a node enrollment token may call
// (POST /api/v1/nodes): such a token is handed to the command, which checks it against the log;
// any other credential goes through authenticate as on every route.
func (s *Server) authenticateEnrollment(next echo.HandlerFunc) echo.HandlerFunc {
	users := s.authenticate(next)
	return func(c echo.Context) error {
		raw, ok := enrollmentBearer(c)
		if !ok {
			return users(c)
		}
		req := c.Request()
		ids := requestIDsFrom(c)
		id, _ := domain.ParseEnrollmentToken(raw)
		actor := commands.Actor{ID: commands.EnrollmentTokenActor(id), ClientIP: commands.Bounded(c.RealIP(), commands.MaxAddrBytes),
			UserAgent: commands.Bounded(req.UserAgent(), commands.MaxUserAgentBytes), RequestID: ids.request, CorrelationID: ids.correlation}.Bounded()
		c.Set(actorKey, actor)
		c.Set(enrollmentTokenKey, raw)
		c.SetRequest(req.WithContext(commands.WithActor(req.Context(), actor)))
		return next(c)
	}
}

// enrollWithToken enrolls a node on the strength of the enrollment token it presented. A refused
// token is audited as a failed authentication and answered 401 saying why.
func (s *Server) enrollWithToken(c echo.Context, raw string, in commands.EnrollNode) (commands.Result, error) {
	res, err := s.cfg.Service.Handlers.EnrollNodeWithToken.Handle(c.Request().Context(), commands.EnrollNodeWithToken{Token: raw, Node: in})
	if errors.Is(err, commands.ErrUnauthenticated) {
		reason := "enrollment_token_invalid"
		switch {
		case errors.Is(err, domain.ErrEnrollmentTokenExpired):
			reason = "enrollment_token_expired"
		case errors.Is(err, domain.ErrEnrollmentTokenRevoked):
			reason = "enrollment_token_revoked"
		case errors.Is(err, domain.ErrEnrollmentTokenUsed):
			reason = "enrollment_token_used"
		}
		a := actorOf(c)
		s.auth.auditor.AuthFailed(reason, a.ID, a.ClientIP, a.UserAgent)
		return res, &authError{code: "invalid_token", detail: strings.TrimPrefix(err.Error(), commands.ErrUnauthenticated.Error()+": ")}
	}
	return res, err
}
