package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// SIEMSinkReader reads the SIEM sinks view.
type SIEMSinkReader interface {
	ListSIEMSinks(ctx context.Context, f readmodels.SIEMSinkFilter) ([]readmodels.SIEMSink, error)
	GetSIEMSink(ctx context.Context, sinkID string) (readmodels.SIEMSink, error)
}

// SecretSealer seals what a caller sends in clear (a HEC token, a client key) before it enters a
// command, so the log never holds it (a *siem.Secrets is one).
type SecretSealer interface {
	Seal(field string, plain []byte) (string, error)
	NewRedactKey() (string, error)
}

// SIEMSinkInput is the body of POST /siem/sinks and PUT /siem/sinks/{id} (the whole sink; on
// PUT a secret left out keeps its value).
type SIEMSinkInput struct {
	Org       string `json:"org,omitempty"`
	Name      string `json:"name"`
	Transport string `json:"transport"`
	Address   string `json:"address,omitempty"`
	URL       string `json:"url,omitempty"`
	Profile   string `json:"profile,omitempty"`
	Format    string `json:"format"`
	// Token and ClientKey are sealed by the control plane; TokenRef and ClientKeyRef name
	// where the control plane reads them instead (env:NAME, file:PATH; platform sinks only).
	Token         string `json:"token,omitempty"`
	TokenRef      string `json:"token_ref,omitempty"`
	ClientKey     string `json:"client_key,omitempty"`
	ClientKeyRef  string `json:"client_key_ref,omitempty"`
	ServerName    string `json:"server_name,omitempty"`
	CACertPEM     string `json:"ca_cert_pem,omitempty"`
	ClientCertPEM string `json:"client_cert_pem,omitempty"`
	// RedactClientIPs hashes client addresses with a key of the sink's own (made by the control
	// plane, kept across updates).
	RedactClientIPs bool     `json:"redact_client_ips,omitempty"`
	Types           []string `json:"types,omitempty"`
	MinSeverity     int      `json:"min_severity,omitempty"`
}

// SIEMSkipInput is the body of POST /siem/sinks/{id}/skips.
type SIEMSkipInput struct {
	Position uint64 `json:"position"`
	Reason   string `json:"reason"`
}

// SIEMSink is a sink as the API shows it: its secrets only as "sealed" or the reference.
type SIEMSink struct {
	ID              string         `json:"id"`
	OrgID           string         `json:"org_id,omitempty"`
	Platform        bool           `json:"platform"`
	Name            string         `json:"name"`
	Transport       string         `json:"transport"`
	Address         string         `json:"address,omitempty"`
	URL             string         `json:"url,omitempty"`
	Profile         string         `json:"profile,omitempty"`
	Format          string         `json:"format"`
	ServerName      string         `json:"server_name,omitempty"`
	CACert          bool           `json:"ca_cert"`
	ClientCert      bool           `json:"client_cert"`
	Token           string         `json:"token,omitempty"`
	ClientKey       string         `json:"client_key,omitempty"`
	RedactClientIPs bool           `json:"redact_client_ips"`
	Types           []string       `json:"types,omitempty"`
	MinSeverity     int            `json:"min_severity,omitempty"`
	Skipped         []int64        `json:"skipped,omitempty"`
	ConfiguredBy    string         `json:"configured_by"`
	ConfiguredAt    time.Time      `json:"configured_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
	RemovedAt       *time.Time     `json:"removed_at,omitempty"`
	Version         int64          `json:"version"`
	Position        int64          `json:"position"`
	Status          SIEMSinkStatus `json:"status"`
}

// SIEMSinkStatus is what the sink's forwarder recorded, and its lag against the log's head.
type SIEMSinkStatus struct {
	// NextPosition is the next log position to forward; Seq the last sequence number delivered.
	NextPosition int64 `json:"next_position"`
	Seq          int64 `json:"seq"`
	Delivered    int64 `json:"delivered"`
	Retries      int64 `json:"retries"`
	// LagEvents is how many records of the log the sink has not forwarded; LagSeconds the age
	// of the oldest of them.
	LagEvents   int64      `json:"lag_events"`
	LagSeconds  float64    `json:"lag_seconds"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Refused: the receiver refuses a record for good (StuckPosition, once found); the sink
	// retries it until an operator skips it.
	Refused       bool       `json:"refused"`
	StuckPosition *int64     `json:"stuck_position,omitempty"`
	ForwardedAt   *time.Time `json:"forwarded_at,omitempty"`
}

// shownSecret is how a secret appears: whether it is sealed, or the reference it is.
func shownSecret(v string) string {
	if strings.HasPrefix(v, domain.SealedPrefix) {
		return "sealed"
	}
	return v
}

func (s *Server) siemSinkOf(k readmodels.SIEMSink) SIEMSink {
	st := SIEMSinkStatus{NextPosition: k.NextPosition, Seq: k.Seq, Delivered: k.Delivered, Retries: k.Retries, LastError: k.LastError,
		LastErrorAt: k.LastErrorAt, Refused: k.Refused, StuckPosition: k.StuckPosition, ForwardedAt: k.ForwardedAt}
	if head := int64(s.cfg.Log.KnownHead()); head > k.NextPosition && k.RemovedAt == nil {
		st.LagEvents = head - k.NextPosition
		if k.OldestPendingAt != nil {
			st.LagSeconds = max(s.cfg.Now().Sub(*k.OldestPendingAt).Seconds(), 0)
		}
	}
	sp := k.Spec
	return SIEMSink{ID: k.ID, OrgID: k.OrgID, Platform: k.OrgID == "", Name: k.Name, Transport: sp.Transport, Address: sp.Address, URL: sp.URL,
		Profile: sp.Profile, Format: sp.Format, ServerName: sp.ServerName, CACert: sp.CACertPEM != "", ClientCert: sp.ClientCertPEM != "",
		Token: shownSecret(sp.Token), ClientKey: shownSecret(sp.ClientKey), RedactClientIPs: sp.RedactKey != "", Types: sp.Types,
		MinSeverity: sp.MinSeverity, Skipped: k.Skipped, ConfiguredBy: k.ConfiguredBy, ConfiguredAt: k.ConfiguredAt, UpdatedAt: k.UpdatedAt,
		RemovedAt: k.RemovedAt, Version: k.Version, Position: k.Position, Status: st}
}

// siemScope resolves the sink's scope: "*" is the platform (superadmins), else an organization
// (its owners and admins). It returns "" for the platform, as commands take it.
func (s *Server) siemScope(c echo.Context, given, action string) (string, error) {
	org, err := s.scope(c, given, commands.ObjSIEM, action)
	if err != nil {
		return "", err
	}
	if org == domain.PlatformOrg {
		return "", nil
	}
	return org, nil
}

// siemSpec seals the secrets a caller sent in clear and builds the spec commands take.
func (s *Server) siemSpec(in SIEMSinkInput) (domain.SIEMSinkSpec, error) {
	spec := domain.SIEMSinkSpec{Name: in.Name, Transport: in.Transport, Address: in.Address, URL: in.URL, Profile: in.Profile, Format: in.Format,
		ServerName: in.ServerName, CACertPEM: in.CACertPEM, ClientCertPEM: in.ClientCertPEM, Types: in.Types, MinSeverity: in.MinSeverity}
	var errs []domain.FieldError
	secret := func(field, clear, ref string) string {
		switch {
		case clear != "" && ref != "":
			errs = append(errs, domain.FieldError{Field: field, Message: "give the secret or a reference to it (" + field + "_ref), not both"})
		case ref != "":
			if !strings.HasPrefix(ref, domain.RefEnvPrefix) && !strings.HasPrefix(ref, domain.RefFilePrefix) {
				errs = append(errs, domain.FieldError{Field: field + "_ref", Message: "must be env:NAME or file:PATH"})
			}
			return ref
		case clear != "":
			if s.cfg.SIEMSecrets == nil {
				errs = append(errs, domain.FieldError{Field: field, Message: "this control plane holds no key to seal secrets with; give " + field + "_ref"})
				return ""
			}
			sealed, err := s.cfg.SIEMSecrets.Seal(field, []byte(clear))
			if err != nil {
				errs = append(errs, domain.FieldError{Field: field, Message: "could not be sealed"})
			}
			return sealed
		}
		return ""
	}
	spec.Token = secret("token", in.Token, in.TokenRef)
	spec.ClientKey = secret("client_key", in.ClientKey, in.ClientKeyRef)
	if in.RedactClientIPs {
		if s.cfg.SIEMSecrets == nil {
			errs = append(errs, domain.FieldError{Field: "redact_client_ips", Message: "this control plane holds no key to seal the redaction key with"})
		} else if k, err := s.cfg.SIEMSecrets.NewRedactKey(); err == nil {
			spec.RedactKey = k
		} else {
			return spec, err
		}
	}
	if len(errs) > 0 {
		return spec, &domain.ValidationError{Fields: errs}
	}
	return spec, nil
}

// siemInput reads the body of a create or replace: the sink's scope (authorized for action) and
// its spec, secrets sealed.
func (s *Server) siemInput(c echo.Context, action string) (org string, in SIEMSinkInput, spec domain.SIEMSinkSpec, err error) {
	q, err := newQuery(c, "org")
	if err != nil {
		return "", in, spec, err
	}
	if err := decodeBody(c, &in); err != nil {
		return "", in, spec, err
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return "", in, spec, err
	}
	if org, err = s.siemScope(c, given, action); err != nil {
		return "", in, spec, err
	}
	spec, err = s.siemSpec(in)
	return org, in, spec, err
}

func (s *Server) createSIEMSink(c echo.Context) error {
	org, _, spec, err := s.siemInput(c, commands.ActCreate)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.ConfigureSIEMSink.Handle(c.Request().Context(), commands.ConfigureSIEMSink{OrgID: org, Spec: spec})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/siem/sinks/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listSIEMSinks(c echo.Context) error {
	q, err := newQuery(c, "org", "removed", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("siem_sinks")
	if err != nil {
		return err
	}
	removed, err := q.oneOf("removed", "false", "false", "true")
	if err != nil {
		return err
	}
	org, err := s.siemScope(c, q.str("org"), commands.ActRead)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.SIEMSinks); err != nil {
		return err
	}
	f := readmodels.SIEMSinkFilter{OrgID: org, Platform: org == "", Removed: removed == "true", Limit: p.limit + 1}
	if p.cursor != nil {
		if f.After, err = p.cursorID(0); err != nil {
			return err
		}
	}
	rows, err := s.cfg.ReadModels.ListSIEMSinks(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, s.siemSinkOf), func(k SIEMSink) []any { return []any{k.ID} }))
}

// siemSinkIn reads a sink of the scope; one of another scope is not found.
func (s *Server) siemSinkIn(c echo.Context, org string) (readmodels.SIEMSink, error) {
	k, err := s.cfg.ReadModels.GetSIEMSink(c.Request().Context(), c.Param("id"))
	if err == nil && k.OrgID != org {
		return k, fmt.Errorf("siem sink %q: %w", c.Param("id"), domain.ErrNotFound)
	}
	return k, err
}

func (s *Server) getSIEMSink(c echo.Context) error {
	q, err := newQuery(c, "org", "wait_for")
	if err != nil {
		return err
	}
	org, err := s.siemScope(c, q.str("org"), commands.ActRead)
	if err != nil {
		return err
	}
	if err := s.waitFor(c, projections.SIEMSinks); err != nil {
		return err
	}
	k, err := s.siemSinkIn(c, org)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(k.Version))
	return c.JSON(http.StatusOK, s.siemSinkOf(k))
}

func (s *Server) updateSIEMSink(c echo.Context) error {
	pinned, err := ifMatch(c)
	if err != nil {
		return err
	}
	org, in, spec, err := s.siemInput(c, commands.ActUpdate)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.UpdateSIEMSink.Handle(c.Request().Context(), commands.UpdateSIEMSink{OrgID: org, SinkID: c.Param("id"),
		Spec: spec, RedactClientIPs: in.RedactClientIPs, ExpectedVersion: pinned})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) removeSIEMSink(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	org, err := s.siemScope(c, q.str("org"), commands.ActDelete)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RemoveSIEMSink.Handle(c.Request().Context(), commands.RemoveSIEMSink{OrgID: org, SinkID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) skipSIEMDelivery(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	var in SIEMSkipInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	org, err := s.siemScope(c, q.str("org"), commands.ActSkip)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.SkipSIEMDelivery.Handle(c.Request().Context(),
		commands.SkipSIEMDelivery{OrgID: org, SinkID: c.Param("id"), Position: in.Position, Reason: in.Reason})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusCreated, res)
}
