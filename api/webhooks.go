package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/webhooks"
)

// WebhookReader reads the webhooks view.
type WebhookReader interface {
	ListWebhooks(ctx context.Context, f readmodels.WebhookFilter) ([]readmodels.Webhook, error)
	GetWebhook(ctx context.Context, id string) (readmodels.Webhook, error)
}

// SecretBox seals endpoint secrets for the log and opens them to show them once (a
// *siem.Secrets: the same sealing key and mechanism as SIEM sinks' secrets).
type SecretBox interface {
	Seal(field string, plain []byte) (string, error)
	Open(field, value string) ([]byte, error)
}

// WebhookInput is the body of POST /webhooks and PUT /webhooks/{id}.
type WebhookInput struct {
	Org  string `json:"org,omitempty"`
	Name string `json:"name"`
	URL  string `json:"url"`
	// Types are the notification types delivered (domain.WebhookEventTypes); none: all of them.
	Types []string `json:"types,omitempty"`
}

// Webhook is an endpoint as the API shows it: never its secret.
type Webhook struct {
	ID              string        `json:"id"`
	OrgID           string        `json:"org_id"`
	Name            string        `json:"name"`
	URL             string        `json:"url"`
	Types           []string      `json:"types"`
	SecretRotatedAt *time.Time    `json:"secret_rotated_at,omitempty"`
	CreatedBy       string        `json:"created_by"`
	CreatedAt       time.Time     `json:"created_at"`
	UpdatedAt       time.Time     `json:"updated_at"`
	DeletedAt       *time.Time    `json:"deleted_at,omitempty"`
	Version         int64         `json:"version"`
	Position        int64         `json:"position"`
	Status          WebhookStatus `json:"status"`
}

// WebhookStatus is what the endpoint's deliverer recorded, and its lag against the log's head.
type WebhookStatus struct {
	NextPosition int64 `json:"next_position"`
	Delivered    int64 `json:"delivered"`
	// Retried counts messages that needed more than one try; Failed the tries that failed.
	Retried int64 `json:"retried"`
	Failed  int64 `json:"failed"`
	// LagEvents is how many records of the log the deliverer has not looked at yet (most are not
	// the endpoint's); LagSeconds the age of the oldest of them.
	LagEvents       int64      `json:"lag_events"`
	LagSeconds      float64    `json:"lag_seconds"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
	LastDeliveredAt *time.Time `json:"last_delivered_at,omitempty"`
}

func (s *Server) webhookOf(w readmodels.Webhook) Webhook {
	st := WebhookStatus{NextPosition: w.NextPosition, Delivered: w.Delivered, Retried: w.Retried, Failed: w.Failed, LastError: w.LastError,
		LastErrorAt: w.LastErrorAt, LastDeliveredAt: w.LastDeliveredAt}
	if head := int64(s.cfg.Log.KnownHead()); head > w.NextPosition && w.DeletedAt == nil {
		st.LagEvents = head - w.NextPosition
		if w.OldestPendingAt != nil {
			st.LagSeconds = max(s.cfg.Now().Sub(*w.OldestPendingAt).Seconds(), 0)
		}
	}
	types := w.Types
	if types == nil {
		types = []string{}
	}
	return Webhook{ID: w.ID, OrgID: w.OrgID, Name: w.Name, URL: w.URL, Types: types, SecretRotatedAt: w.RotatedAt, CreatedBy: w.CreatedBy,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, DeletedAt: w.DeletedAt, Version: w.Version, Position: w.Position, Status: st}
}

// newWebhookSecret makes an endpoint secret and seals it for the log.
func (s *Server) newWebhookSecret() (string, error) {
	if s.cfg.WebhookSecrets == nil {
		return "", echo.NewHTTPError(http.StatusServiceUnavailable, "this control plane holds no key to seal webhook secrets with")
	}
	return s.cfg.WebhookSecrets.Seal(webhooks.SealField, []byte(webhooks.NewSecret()))
}

// withSecret adds the endpoint's secret, as the log now holds it, to a create's or a rotation's
// answer: shown once (and again to an idempotent repeat of the same request, which finds the
// same event), never stored in clear, never in any other answer.
func (s *Server) withSecret(c echo.Context, org string, res commands.Result) (commands.Result, error) {
	w, err := s.cfg.Service.Webhook(c.Request().Context(), org, res.ID)
	if err != nil {
		return res, err
	}
	plain, err := s.cfg.WebhookSecrets.Open(webhooks.SealField, w.Secret())
	if err != nil {
		return res, err
	}
	res.Secret = string(plain)
	return res, nil
}

// webhookInput reads the body of a create or replace and the organization (authorized for action).
func (s *Server) webhookInput(c echo.Context, action string) (string, WebhookInput, error) {
	var in WebhookInput
	q, err := newQuery(c, "org")
	if err != nil {
		return "", in, err
	}
	if err := decodeBody(c, &in); err != nil {
		return "", in, err
	}
	given, err := orgParam(q, in.Org)
	if err != nil {
		return "", in, err
	}
	org, err := s.orgFor(c, given, commands.ObjWebhooks, action, true)
	return org, in, err
}

func (s *Server) createWebhook(c echo.Context) error {
	org, in, err := s.webhookInput(c, commands.ActCreate)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	existing, err := s.cfg.ReadModels.ListWebhooks(ctx, readmodels.WebhookFilter{OrgID: org, Limit: domain.MaxWebhookEndpoints + 1})
	if err != nil {
		return err
	}
	if len(existing) >= domain.MaxWebhookEndpoints {
		return &domain.ValidationError{Fields: []domain.FieldError{{Field: "org", Message: fmt.Sprintf("has %d webhook endpoints, the most an organization may have", len(existing))}}}
	}
	secret, err := s.newWebhookSecret()
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.CreateWebhook.Handle(ctx, commands.CreateWebhook{OrgID: org, Spec: domain.WebhookSpec{Name: in.Name, URL: in.URL, Types: in.Types},
		Secret: secret, AllowPrivate: s.cfg.WebhookAllowPrivate})
	if err != nil {
		return err
	}
	if res, err = s.withSecret(c, org, res); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/webhooks/"+res.ID)
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listWebhooks(c echo.Context) error {
	q, org, err := s.webhookRead(c, "deleted", "limit", "cursor")
	if err != nil {
		return err
	}
	p, err := q.page("webhooks")
	if err != nil {
		return err
	}
	deleted, err := q.oneOf("deleted", "false", "false", "true")
	if err != nil {
		return err
	}
	f := readmodels.WebhookFilter{OrgID: org, Deleted: deleted == "true", Limit: p.limit + 1}
	if p.cursor != nil {
		if f.After, err = p.cursorID(0); err != nil {
			return err
		}
	}
	rows, err := s.cfg.ReadModels.ListWebhooks(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listOf(p, convert(rows, s.webhookOf), func(w Webhook) []any { return []any{w.ID} }))
}

// webhookIn reads an endpoint of org; one of another organization is not found.
func (s *Server) webhookIn(c echo.Context, org string) (readmodels.Webhook, error) {
	w, err := s.cfg.ReadModels.GetWebhook(c.Request().Context(), c.Param("id"))
	if err == nil && w.OrgID != org {
		return w, fmt.Errorf("webhook %q: %w", c.Param("id"), domain.ErrNotFound)
	}
	return w, err
}

// webhookRead reads the query of a read (params besides org and wait_for) and the organization,
// once the webhooks view holds wait_for.
func (s *Server) webhookRead(c echo.Context, params ...string) (*query, string, error) {
	q, err := newQuery(c, append([]string{"org", "wait_for"}, params...)...)
	if err != nil {
		return nil, "", err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjWebhooks, commands.ActRead, true)
	if err != nil {
		return nil, "", err
	}
	return q, org, s.waitFor(c, projections.Webhooks)
}

func (s *Server) getWebhook(c echo.Context) error {
	_, org, err := s.webhookRead(c)
	if err != nil {
		return err
	}
	w, err := s.webhookIn(c, org)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(w.Version))
	return c.JSON(http.StatusOK, s.webhookOf(w))
}

func (s *Server) updateWebhook(c echo.Context) error {
	pinned, err := ifMatch(c)
	if err != nil {
		return err
	}
	org, in, err := s.webhookInput(c, commands.ActUpdate)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.UpdateWebhook.Handle(c.Request().Context(), commands.UpdateWebhook{OrgID: org, EndpointID: c.Param("id"),
		Spec: domain.WebhookSpec{Name: in.Name, URL: in.URL, Types: in.Types}, ExpectedVersion: pinned, AllowPrivate: s.cfg.WebhookAllowPrivate})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) rotateWebhookSecret(c echo.Context) error {
	q, err := newQuery(c, "org")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjWebhooks, commands.ActRotate, true)
	if err != nil {
		return err
	}
	secret, err := s.newWebhookSecret()
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RotateWebhookSecret.Handle(c.Request().Context(), commands.RotateWebhookSecret{OrgID: org, EndpointID: c.Param("id"), Secret: secret})
	if err != nil {
		return err
	}
	if res, err = s.withSecret(c, org, res); err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) deleteWebhook(c echo.Context) error {
	q, err := newQuery(c, "org", "reason")
	if err != nil {
		return err
	}
	org, err := s.orgFor(c, q.str("org"), commands.ObjWebhooks, commands.ActDelete, true)
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.DeleteWebhook.Handle(c.Request().Context(), commands.DeleteWebhook{OrgID: org, EndpointID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}
