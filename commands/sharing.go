package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Sharing a tunnel: its access policy, grants and access requests (domain.Sharing, one stream per
// tunnel). The events that name an aggregate's own id use it as their event id (grant.created:
// the grant id; access.requested: the request id; access.approved: the approval id), so that a
// causation_id names them: an approval's is its request, a grant's from a request is the approval
// that completed it, an expiry's is its grant.

// SetAccessPolicy sets how many approvals, from which role, the tunnel's access requests need.
type SetAccessPolicy struct {
	OrgID             string      `json:"org_id"`
	TunnelID          string      `json:"tunnel_id"`
	ApproverRole      domain.Role `json:"approver_role"`
	RequiredApprovals int         `json:"required_approvals"`
}

func (SetAccessPolicy) CommandName() string { return "SetAccessPolicy" }
func (c SetAccessPolicy) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}
}

// CreateGrant lets a user, or every user whose token carries a group, call a tunnel for TTL.
type CreateGrant struct {
	OrgID    string        `json:"org_id"`
	TunnelID string        `json:"tunnel_id"`
	User     string        `json:"user,omitempty"`
	Group    string        `json:"group,omitempty"`
	TTL      time.Duration `json:"ttl"`
}

func (CreateGrant) CommandName() string { return "CreateGrant" }
func (c CreateGrant) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}
}

// RevokeGrant withdraws a grant; nodes refuse its subject at once.
type RevokeGrant struct {
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id"`
	GrantID  string `json:"grant_id"`
	Reason   string `json:"reason,omitempty"`
}

func (RevokeGrant) CommandName() string { return "RevokeGrant" }
func (c RevokeGrant) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}
}

// RequestAccess asks for the use of a tunnel for Duration, giving Reason.
type RequestAccess struct {
	OrgID    string        `json:"org_id"`
	TunnelID string        `json:"tunnel_id"`
	Duration time.Duration `json:"duration"`
	Reason   string        `json:"reason"`
}

func (RequestAccess) CommandName() string { return "RequestAccess" }
func (c RequestAccess) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAccessRequests, Action: ActCreate}
}

// ApproveAccess is one approval of a pending request, by a holder of the role the tunnel's
// access policy names (or an organization owner, or a superadmin), never the requester. The
// approval that completes the policy's count creates the grant.
type ApproveAccess struct {
	OrgID     string `json:"org_id"`
	TunnelID  string `json:"tunnel_id"`
	RequestID string `json:"request_id"`
	Comment   string `json:"comment,omitempty"`
}

func (ApproveAccess) CommandName() string { return "ApproveAccess" }
func (c ApproveAccess) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAccessRequests, Action: ActRead}
}

// DenyAccess ends a pending request without a grant; Reason is required.
type DenyAccess struct {
	OrgID     string `json:"org_id"`
	TunnelID  string `json:"tunnel_id"`
	RequestID string `json:"request_id"`
	Reason    string `json:"reason"`
}

func (DenyAccess) CommandName() string { return "DenyAccess" }
func (c DenyAccess) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjAccessRequests, Action: ActRead}
}

// sharingEvent is one decided event with its own id and cause ("" : the command's).
type sharingEvent struct {
	id        uuid.UUID
	event     domain.Event
	causation string
}

// changeSharing loads a tunnel and its sharing state, lets decide choose the events (none: nothing
// to do), and appends them to the tunnel's sharing stream at the version they were decided on,
// deciding again on a concurrent change.
func (s *Service) changeSharing(ctx context.Context, command, orgID, tunnelID string,
	decide func(t *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error)) (Result, error) {
	stream := domain.SharingStream(tunnelID)
	return s.retryConflicts(ctx, false, func() (Result, error) {
		t, err := s.loadTunnel(ctx, orgID, tunnelID)
		if err != nil {
			return Result{}, err
		}
		recs, err := s.load(ctx, stream)
		if err != nil {
			return Result{}, err
		}
		sh, err := domain.RehydrateSharing(orgID, tunnelID, recs)
		if err != nil {
			return Result{}, err
		}
		id, evs, err := decide(t, sh)
		if err != nil {
			return Result{}, err
		}
		if len(evs) == 0 {
			return Result{ID: id, Version: sh.Version(), Noop: true}, nil
		}
		now := s.cfg.Now()
		data := make([]eventstore.EventData, len(evs))
		for i, e := range evs {
			b, err := json.Marshal(e.event)
			if err != nil {
				return Result{}, fmt.Errorf("encode %s: %w", e.event.EventType(), err)
			}
			data[i] = eventstore.EventData{ID: e.id, Type: e.event.EventType(), Payload: b, Metadata: causedBy(ctx, command, orgID, now, e.causation)}
		}
		result := func(res []eventstore.AppendResult) Result {
			return Result{ID: id, Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}
		}
		res, err := s.appendMulti(ctx, recordWith(ctx, result), eventstore.StreamAppend{StreamID: stream, Expected: eventstore.Exact(sh.Version()), Events: data})
		if err != nil {
			return Result{}, err
		}
		return result(res), nil
	})
}

// causedBy is a command's metadata whose causation is the event causation when it is set.
func causedBy(ctx context.Context, command, org string, now time.Time, causation string) []byte {
	meta := metadata(ctx, command, org, now)
	if causation == "" {
		return meta
	}
	var m domain.Metadata
	_ = json.Unmarshal(meta, &m) // metadata just marshalled it
	m.CausationID = causation
	b, _ := json.Marshal(m)
	return b
}

func (s *Service) setAccessPolicy(ctx context.Context, c SetAccessPolicy) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(t *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		ev, err := sh.SetPolicy(t, domain.AccessPolicy{ApproverRole: c.ApproverRole, RequiredApprovals: c.RequiredApprovals}, by)
		if err != nil || ev == nil {
			return c.TunnelID, nil, err
		}
		return c.TunnelID, []sharingEvent{{id: g.next(), event: ev}}, nil
	})
}

func (s *Service) createGrant(ctx context.Context, c CreateGrant) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	kind, subject := domain.GrantToUser, c.User
	switch {
	case c.User != "" && c.Group != "":
		return Result{}, &domain.ValidationError{Fields: []domain.FieldError{{Field: "group", Message: "name a user or a group, not both"}}}
	case c.Group != "":
		kind, subject = domain.GrantToGroup, c.Group
	}
	grantID := g.next()
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(t *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		ev, err := sh.CreateGrant(t, domain.NewGrant{GrantID: grantID.String(), SubjectKind: kind, Subject: subject, GrantedBy: by, Now: s.cfg.Now(), TTL: c.TTL})
		if err != nil {
			return "", nil, err
		}
		return ev.GrantID, []sharingEvent{{id: grantID, event: ev}}, nil
	})
}

func (s *Service) revokeGrant(ctx context.Context, c RevokeGrant) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(_ *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		ev, err := sh.RevokeGrant(c.GrantID, by, c.Reason)
		if err != nil {
			return "", nil, err
		}
		return c.GrantID, []sharingEvent{{id: g.next(), event: ev}}, nil
	})
}

func (s *Service) requestAccess(ctx context.Context, c RequestAccess) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	requestID := g.next()
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(t *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		ev, err := sh.RequestAccess(t, domain.NewAccessRequest{RequestID: requestID.String(), Requester: by, Reason: c.Reason, Duration: c.Duration, Now: s.cfg.Now()})
		if err != nil {
			return "", nil, err
		}
		return ev.RequestID, []sharingEvent{{id: requestID, event: ev}}, nil
	})
}

// mayDecide returns nil when the actor may approve or deny under the tunnel's policy: never their
// own request (domain.ErrSelfApproval, answered as forbidden), and only as a holder of the
// policy's role, an organization owner or a superadmin.
func (s *Service) mayDecide(ctx context.Context, org string, sh *domain.Sharing, requestID string) error {
	actor := ActorFrom(ctx).ID
	if q, ok := sh.Request(requestID); ok && q.Requester == actor {
		return fmt.Errorf("%w: %w", ErrForbidden, domain.ErrSelfApproval)
	}
	perm := Permission{Org: org, Object: ObjAccessRequests, Action: "decide"}
	return s.authz.check(ctx, perm, "decide access requests under the tunnel's policy", func(user string) (bool, error) {
		superadmin := s.authz.rolesIn(user, domain.PlatformOrg)[domain.RoleSuperadmin]
		return domain.PolicyAdmits(sh.Policy(), s.authz.rolesIn(user, org), superadmin), nil
	})
}

func (s *Service) approveAccess(ctx context.Context, c ApproveAccess) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	approvalID, grantID := g.next(), g.next()
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(t *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		if _, ok := sh.Request(c.RequestID); !ok {
			return "", nil, fmt.Errorf("access request %s: %w", c.RequestID, domain.ErrNotFound)
		}
		if err := s.mayDecide(ctx, c.OrgID, sh, c.RequestID); err != nil {
			return "", nil, err
		}
		ap, grant, err := sh.Approve(t, domain.Approval{RequestID: c.RequestID, ApprovalID: approvalID.String(), Approver: by, Comment: c.Comment,
			GrantID: grantID.String(), Now: s.cfg.Now()})
		if errors.Is(err, domain.ErrSelfApproval) {
			return "", nil, fmt.Errorf("%w: %w", ErrForbidden, err)
		}
		if err != nil {
			return "", nil, err
		}
		evs := []sharingEvent{{id: approvalID, event: ap, causation: c.RequestID}}
		if grant != nil {
			evs = append(evs, sharingEvent{id: grantID, event: grant, causation: ap.ApprovalID})
		}
		return c.RequestID, evs, nil
	})
}

func (s *Service) denyAccess(ctx context.Context, c DenyAccess) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	by := ActorFrom(ctx).ID
	return s.changeSharing(ctx, c.CommandName(), c.OrgID, c.TunnelID, func(_ *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		if _, ok := sh.Request(c.RequestID); !ok {
			return "", nil, fmt.Errorf("access request %s: %w", c.RequestID, domain.ErrNotFound)
		}
		if err := s.mayDecide(ctx, c.OrgID, sh, c.RequestID); err != nil {
			return "", nil, err
		}
		ev, err := sh.Deny(c.RequestID, by, c.Reason)
		if errors.Is(err, domain.ErrSelfApproval) {
			return "", nil, fmt.Errorf("%w: %w", ErrForbidden, err)
		}
		if err != nil {
			return "", nil, err
		}
		return c.RequestID, []sharingEvent{{id: g.next(), event: ev, causation: c.RequestID}}, nil
	})
}

// expiryNamespace derives grant.expired's event id from the grant id: every process that records
// a grant's expiry appends the same event, which the log takes once.
var expiryNamespace = uuid.MustParse("0d7c5a2e-4b1f-4c8e-9a3d-6e2f1b7c9d40")

// GrantExpiryEventID is the event id of grant grantID's grant.expired.
func GrantExpiryEventID(grantID string) uuid.UUID {
	return uuid.NewSHA1(expiryNamespace, []byte(domain.TypeGrantExpired+"\x00"+grantID))
}

// ExpireGrant records that a grant reached its expiry (the expiry process manager's command; it
// needs no authorization: it decides nothing a clock has not). Nothing is appended when the grant
// already ended; before its deadline it is domain.ErrInvalidState. A concurrent writer of the same
// expiry makes this a no-op, never a second event.
func (s *Service) ExpireGrant(ctx context.Context, orgID, tunnelID, grantID string) (Result, error) {
	const command = "ExpireGrant"
	res, err := s.changeSharing(ctx, command, orgID, tunnelID, func(_ *domain.Tunnel, sh *domain.Sharing) (string, []sharingEvent, error) {
		ev, err := sh.ExpireGrant(grantID, s.cfg.Now())
		if err != nil || ev == nil {
			return grantID, nil, err
		}
		return grantID, []sharingEvent{{id: GrantExpiryEventID(grantID), event: ev, causation: grantID}}, nil
	})
	if errors.Is(err, eventstore.ErrDuplicateEventID) {
		// Another process recorded it between our read and our append.
		s.cache.forget(domain.SharingStream(tunnelID))
		return Result{ID: grantID, Noop: true}, nil
	}
	return res, err
}

// Sharing reads a tunnel's sharing state fresh from the log (grants and requests, for listing).
func (s *Service) Sharing(ctx context.Context, orgID, tunnelID string) (*domain.Sharing, error) {
	if _, err := s.loadTunnel(ctx, orgID, tunnelID); err != nil {
		return nil, err
	}
	recs, err := s.read(ctx, domain.SharingStream(tunnelID))
	if err != nil {
		return nil, err
	}
	return domain.RehydrateSharing(orgID, tunnelID, recs)
}
