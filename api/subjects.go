package api

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
)

// PersonalData opens sealed personal fields (a *pii.Keyring): the plaintext, "[erased]" when the
// subject's key was destroyed, "[unreadable]" when the value does not open.
type PersonalData interface {
	Show(ctx context.Context, field, value string) (string, error)
}

// EraseSubjectInput is the (optional) body of POST /subjects/{id}/erase.
type EraseSubjectInput struct {
	Reason string `json:"reason,omitempty"`
}

// eraseSubject destroys a subject's data keys (superadmins only: commands.ObjSubjects).
func (s *Server) eraseSubject(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in EraseSubjectInput
	if err := decodeOptionalBody(c, &in); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.EraseSubject.Handle(c.Request().Context(), commands.EraseSubject{Subject: c.Param("id"), Reason: in.Reason})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

// openAudit replaces the sealed fields of audit entries by what the keyring shows for them.
func (s *Server) openAudit(ctx context.Context, rows []AuditEntry) error {
	if s.cfg.Personal == nil {
		return nil
	}
	open := func(field string, v *string) (*string, error) {
		if v == nil {
			return nil, nil
		}
		out, err := s.cfg.Personal.Show(ctx, field, *v)
		return &out, err
	}
	for i := range rows {
		var err error
		if rows[i].ClientIP, err = open("client_ip", rows[i].ClientIP); err != nil {
			return err
		}
		if rows[i].UserAgent, err = open("user_agent", rows[i].UserAgent); err != nil {
			return err
		}
	}
	return nil
}
