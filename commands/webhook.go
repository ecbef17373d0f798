package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Webhook endpoints are an organization's owners' and admins' (ObjWebhooks).
func webhookPermission(orgID, action string) Permission {
	return Permission{Org: orgID, Object: ObjWebhooks, Action: action}
}

// CreateWebhook starts delivering an organization's notifications to a URL. Secret is sealed (the
// API makes and seals it); AllowPrivate is the operator's flag, never the caller's. Neither is
// part of the request an Idempotency-Key stands for (json "-"): a repeat makes a new random
// secret, and must still be the same request.
type CreateWebhook struct {
	OrgID        string             `json:"org_id"`
	Spec         domain.WebhookSpec `json:"spec"`
	Secret       string             `json:"-"`
	AllowPrivate bool               `json:"-"`
}

func (CreateWebhook) CommandName() string      { return "CreateWebhook" }
func (c CreateWebhook) Permission() Permission { return webhookPermission(c.OrgID, ActCreate) }

func (s *Service) createWebhook(ctx context.Context, c CreateWebhook) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	id := g.next().String()
	if err := s.requireOrg(ctx, c.OrgID); err != nil {
		return Result{}, err
	}
	ev, err := domain.CreateWebhook(domain.NewWebhook{EndpointID: id, OrgID: c.OrgID, Spec: c.Spec, Secret: c.Secret, AllowPrivate: c.AllowPrivate})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		return changed(id, domain.WebhookStream(id), 0, ev), nil
	})
}

// UpdateWebhook replaces an endpoint's name, URL and types.
type UpdateWebhook struct {
	OrgID           string             `json:"org_id"`
	EndpointID      string             `json:"endpoint_id"`
	Spec            domain.WebhookSpec `json:"spec"`
	ExpectedVersion *uint64            `json:"expected_version,omitempty"`
	AllowPrivate    bool               `json:"-"`
}

func (UpdateWebhook) CommandName() string      { return "UpdateWebhook" }
func (c UpdateWebhook) Permission() Permission { return webhookPermission(c.OrgID, ActUpdate) }

func (s *Service) updateWebhook(ctx context.Context, c UpdateWebhook) (Result, error) {
	return s.onWebhook(ctx, c.CommandName(), c.OrgID, c.EndpointID, c.ExpectedVersion, func(w *domain.Webhook) (domain.Event, error) {
		ev, err := w.Update(c.Spec, c.AllowPrivate)
		if ev == nil || err != nil {
			return nil, err
		}
		return ev, nil
	})
}

// RotateWebhookSecret gives an endpoint a new secret (sealed by the API).
type RotateWebhookSecret struct {
	OrgID      string `json:"org_id"`
	EndpointID string `json:"endpoint_id"`
	Secret     string `json:"-"`
}

func (RotateWebhookSecret) CommandName() string      { return "RotateWebhookSecret" }
func (c RotateWebhookSecret) Permission() Permission { return webhookPermission(c.OrgID, ActRotate) }

func (s *Service) rotateWebhookSecret(ctx context.Context, c RotateWebhookSecret) (Result, error) {
	return s.onWebhook(ctx, c.CommandName(), c.OrgID, c.EndpointID, nil, func(w *domain.Webhook) (domain.Event, error) {
		return w.RotateSecret(c.Secret)
	})
}

// DeleteWebhook ends an endpoint.
type DeleteWebhook struct {
	OrgID      string `json:"org_id"`
	EndpointID string `json:"endpoint_id"`
	Reason     string `json:"reason,omitempty"`
}

func (DeleteWebhook) CommandName() string      { return "DeleteWebhook" }
func (c DeleteWebhook) Permission() Permission { return webhookPermission(c.OrgID, ActDelete) }

func (s *Service) deleteWebhook(ctx context.Context, c DeleteWebhook) (Result, error) {
	return s.onWebhook(ctx, c.CommandName(), c.OrgID, c.EndpointID, nil, func(w *domain.Webhook) (domain.Event, error) {
		return w.Delete(c.Reason)
	})
}

func (s *Service) onWebhook(ctx context.Context, command, orgID, id string, expected *uint64, decide func(*domain.Webhook) (domain.Event, error)) (Result, error) {
	g := newIDGen(ctx, command)
	meta := metadata(ctx, command, orgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryUnlessPinned(expected), func() (decision, error) {
		w, err := s.Webhook(ctx, orgID, id)
		if err != nil {
			return decision{}, err
		}
		if expected != nil && *expected != w.Version() {
			return decision{}, fmt.Errorf("webhook %s is at version %d, not %d: %w", id, w.Version(), *expected, domain.ErrConflict)
		}
		ev, err := decide(w)
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(w.ID(), w.Version()), nil
		}
		return changed(w.ID(), domain.WebhookStream(w.ID()), w.Version(), ev), nil
	})
}

// Webhook loads an endpoint of orgID; one of another organization is not found. The API reads
// its sealed secret here to show it once, after a create or a rotation (so an idempotent replay
// shows the secret the log holds, not a new one).
func (s *Service) Webhook(ctx context.Context, orgID, id string) (*domain.Webhook, error) {
	if !domain.ValidID(id) {
		return nil, fmt.Errorf("webhook %q: %w", id, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.WebhookStream(id))
	if err != nil {
		return nil, err
	}
	w, err := domain.RehydrateWebhook(recs)
	if err != nil {
		return nil, err
	}
	if w.OrgID() != orgID {
		return nil, fmt.Errorf("webhook %s: %w", id, domain.ErrNotFound)
	}
	return w, nil
}

// noticeNamespace derives grant.expiring's event id from the grant id.
var noticeNamespace = uuid.MustParse("5b0e6c1d-2f4a-4e7b-8c3d-9a1f6e2b7c54")

// GrantNoticeEventID is the event id of grant grantID's grant.expiring.
func GrantNoticeEventID(grantID string) uuid.UUID {
	return uuid.NewSHA1(noticeNamespace, []byte(domain.TypeGrantExpiring+"\x00"+grantID))
}

// NoticeGrantExpiring records that a grant ends soon (the notice process manager's command, like
// ExpireGrant: no authorization, it decides nothing a clock has not). Nothing is appended for a
// grant that ended or whose deadline passed. It goes to the grant's notice stream at version 0
// under an id derived from the grant, so it is appended once whoever tries, and how often.
func (s *Service) NoticeGrantExpiring(ctx context.Context, orgID, tunnelID, grantID string) (Result, error) {
	const command = "NoticeGrantExpiring"
	sh, err := s.Sharing(ctx, orgID, tunnelID)
	if err != nil {
		return Result{}, err
	}
	g, ok := sh.Grant(grantID)
	if !ok || !g.ActiveAt(s.cfg.Now()) {
		return Result{ID: grantID, Noop: true}, nil
	}
	ev := domain.GrantExpiring{GrantID: grantID, OrgID: orgID, TunnelID: tunnelID, SubjectKind: g.SubjectKind, Subject: g.Subject, ExpiresAt: g.ExpiresAt}
	b, err := json.Marshal(ev)
	if err != nil {
		return Result{}, err
	}
	data := eventstore.EventData{ID: GrantNoticeEventID(grantID), Type: ev.EventType(), Payload: b,
		Metadata: causedBy(ctx, command, orgID, s.cfg.Now(), grantID)}
	res, err := s.appendMulti(ctx, nil, eventstore.StreamAppend{StreamID: domain.GrantNoticeStream(grantID), Expected: eventstore.Exact(0), Events: []eventstore.EventData{data}})
	if errors.Is(err, eventstore.ErrDuplicateEventID) || errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		return Result{ID: grantID, Noop: true}, nil
	}
	if err != nil {
		return Result{}, err
	}
	return Result{ID: grantID, Position: res[0].LastPosition, Version: res[0].StreamVersion}, nil
}

// MayDecideAccess tells whether user may approve or deny the request requestID of a tunnel's
// sharing state: the notifications feed tells them of the request. Never their own.
func (s *Service) MayDecideAccess(user, org string, sh *domain.Sharing, requestID string) bool {
	q, ok := sh.Request(requestID)
	if !ok || q.Requester == user {
		return false
	}
	if err := s.authz.refresh(false); err != nil {
		return false
	}
	superadmin := s.authz.rolesIn(user, domain.PlatformOrg)[domain.RoleSuperadmin]
	return domain.PolicyAdmits(sh.Policy(), s.authz.rolesIn(user, org), superadmin)
}
