package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// DefaultAccessKeyTTL is the lifetime of an access key when the request names none.
const DefaultAccessKeyTTL = 30 * 24 * time.Hour

// AccessKey is an issued tunnel access key's record (never the secret, nor its hash).
type AccessKey struct {
	ID       string `json:"id"`
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id"` // "" for a key scoped by selector
	// Selector, for a key scoped by labels, are the labels a tunnel must carry for it to call it.
	Selector     map[string]string `json:"selector,omitempty"`
	CIDRs        []string          `json:"cidrs"`
	RateTier     *string           `json:"rate_tier,omitempty"`
	IssuedBy     string            `json:"issued_by"`
	IssuedAt     time.Time         `json:"issued_at"`
	ExpiresAt    time.Time         `json:"expires_at"`
	RevokedAt    *time.Time        `json:"revoked_at,omitempty"`
	RevokeReason *string           `json:"revoke_reason,omitempty"`
	Position     int64             `json:"position"`
	State        string            `json:"state"`
}

// AccessKeyInput is the (optional) body of POST /tunnels/{id}/access-keys.
type AccessKeyInput struct {
	// TTL is a Go duration like "720h" or a number of days like "30d"; default 30 days, at most
	// 365 days.
	TTL string `json:"ttl,omitempty"`
	// CIDRs, when given, are the only source addresses the key is accepted from.
	CIDRs    []string `json:"cidrs,omitempty"`
	RateTier string   `json:"rate_tier,omitempty"`
}

// LabelAccessKeyInput is the body of POST /access-keys: a key that calls every tunnel of the
// organization whose labels match Selector when it calls (tunnels labelled later included).
type LabelAccessKeyInput struct {
	Org      string            `json:"org,omitempty"`
	Selector map[string]string `json:"selector"`
	AccessKeyInput
}

// ParseTTL reads a lifetime as a Go duration ("720h") or a whole number of days ("30d").
func ParseTTL(s string) (time.Duration, bool) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := time.ParseDuration(days + "h")
		if err != nil || n <= 0 || strings.ContainsAny(days, ".-+") {
			return 0, false
		}
		return n * 24, true
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

func (s *Server) issueAccessKey(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in AccessKeyInput
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	return s.issueAccessKeyAs(c, q.str("org"), in, commands.IssueAccessKey{TunnelID: c.Param("id")})
}

// issueLabelAccessKey issues a key for a label selector (POST /access-keys).
func (s *Server) issueLabelAccessKey(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in LabelAccessKeyInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.Selector == nil {
		return invalid("selector", "is required: the labels a tunnel must carry, like {\"team\": \"ml\"}")
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return err
	}
	return s.issueAccessKeyAs(c, given, in.AccessKeyInput, commands.IssueAccessKey{Selector: in.Selector})
}

// issueAccessKeyAs issues the key cmd scopes (a tunnel or a selector) with in's lifetime and
// limits, in the organization given.
func (s *Server) issueAccessKeyAs(c echo.Context, givenOrg string, in AccessKeyInput, cmd commands.IssueAccessKey) error {
	ttl := DefaultAccessKeyTTL
	if in.TTL != "" {
		d, ok := ParseTTL(in.TTL)
		if !ok {
			return invalid("ttl", "must be a duration like \"720h\" or \"30d\"")
		}
		ttl = d
	}
	org, err := s.orgFor(c, givenOrg, commands.ObjAccessKeys, commands.ActIssue, false)
	if err != nil {
		return err
	}
	cmd.OrgID, cmd.TTL, cmd.CIDRs, cmd.RateTier = org, ttl, in.CIDRs, in.RateTier
	res, err := s.cfg.Service.Handlers.IssueAccessKey.Handle(c.Request().Context(), cmd)
	if err != nil {
		return err
	}
	// The secret is shown once: no cache may keep it.
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/access-keys/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listAccessKeys(c echo.Context) error {
	l, err := s.credentialListOf(c, "access_keys", commands.ObjAccessKeys, projections.AccessKeys)
	if err != nil {
		return err
	}
	p := l.p
	f := readmodels.AccessKeyFilter{OrgID: l.org, State: l.state, TunnelID: l.tunnelID, After: l.after, Limit: p.limit + 1}
	rows, err := s.cfg.ReadModels.ListAccessKeys(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, accessKeyOf),
		func(k AccessKey) []any { return []any{k.IssuedAt.Format(time.RFC3339Nano), k.ID} }))
}

func accessKeyOf(k readmodels.AccessKey) AccessKey {
	out := AccessKey(k)
	if out.CIDRs == nil {
		out.CIDRs = []string{}
	}
	return out
}

func (s *Server) getAccessKey(c echo.Context) error {
	q, err := newQuery(c, "org", "wait_for")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAccessKeys, commands.ActRead, true)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.AccessKeys); err != nil {
		return err
	}
	k, err := s.cfg.ReadModels.GetAccessKey(c.Request().Context(), org, c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, accessKeyOf(k))
}

func (s *Server) revokeAccessKey(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjAccessKeys, commands.ActRevoke, false)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RevokeAccessKey.Handle(c.Request().Context(),
		commands.RevokeAccessKey{OrgID: org, KeyID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}
