package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// CreateTunnel registers a tunnel owned by the actor.
type CreateTunnel struct {
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Protocol string `json:"protocol,omitempty"`
	// Labels let access keys scoped by a label selector call the tunnel: setting them is
	// sharing, and takes the right to share (tunnels:share) beside tunnels:create.
	Labels map[string]string `json:"labels,omitempty"`
}

func (CreateTunnel) CommandName() string { return "CreateTunnel" }
func (c CreateTunnel) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActCreate}
}

func (s *Service) createTunnel(ctx context.Context, c CreateTunnel) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	tunnelID := g.next().String()
	created, err := domain.CreateTunnel(domain.NewTunnel{TunnelID: tunnelID, OrgID: c.OrgID, Owner: ActorFrom(ctx).ID, Name: c.Name, Upstream: c.Upstream, Protocol: c.Protocol,
		Labels: c.Labels})
	if err != nil {
		return Result{}, err
	}
	if len(created.Labels) > 0 {
		if err := s.authz.Check(ctx, Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}); err != nil {
			return Result{}, err
		}
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	attempts := 0
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		attempts++
		nameStream := domain.TunnelNameStream(c.OrgID, c.Name)
		nameRecs, err := s.loadName(ctx, nameStream, attempts > 1)
		if err != nil {
			return decision{}, err
		}
		name, err := domain.RehydrateTunnelName(nameRecs)
		if err != nil {
			return decision{}, err
		}
		reserved, err := name.Reserve(c.OrgID, c.Name, tunnelID)
		if err != nil {
			return decision{}, err
		}
		return changed(tunnelID, domain.TunnelStream(tunnelID), 0, created).
			and(nameStream, name.Version(), reserved), nil
	})
}

// loadName loads a tunnel-name stream in order to reserve the name. Most names are new, so
// unless fresh is set a name the cache does not hold is taken to be unused without reading:
// the reservation is appended expecting an empty stream, so if the name was ever used the
// append fails with a conflict and the retry (fresh) reads it.
func (s *Service) loadName(ctx context.Context, stream string, fresh bool) ([]domain.Recorded, error) {
	if recs, ok := s.cache.get(stream); ok || !fresh {
		return recs, nil
	}
	return s.load(ctx, stream)
}

// loadTunnel loads a tunnel of org; a tunnel of another org is "not found".
func (s *Service) loadTunnel(ctx context.Context, orgID, tunnelID string) (*domain.Tunnel, error) {
	if !domain.ValidID(tunnelID) {
		return nil, fmt.Errorf("tunnel %q: %w", tunnelID, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.TunnelStream(tunnelID))
	if err != nil {
		return nil, err
	}
	t, err := domain.RehydrateTunnel(recs)
	if errors.Is(err, domain.ErrNotFound) || (err == nil && t.OrgID() != orgID) {
		return nil, fmt.Errorf("tunnel %s: %w", tunnelID, domain.ErrNotFound)
	}
	return t, err
}

// loadTunnelAt loads a tunnel and, when the caller pinned a version (If-Match), checks it.
func (s *Service) loadTunnelAt(ctx context.Context, orgID, tunnelID string, expected *uint64) (*domain.Tunnel, error) {
	t, err := s.loadTunnel(ctx, orgID, tunnelID)
	if err != nil {
		return nil, err
	}
	if expected != nil && *expected != t.Version() {
		// The cached state may be the stale one: decide on a fresh read.
		s.cache.forget(domain.TunnelStream(tunnelID))
		if t, err = s.loadTunnel(ctx, orgID, tunnelID); err != nil {
			return nil, err
		}
	}
	if expected != nil && *expected != t.Version() {
		return nil, &eventstore.WrongExpectedVersionError{StreamID: domain.TunnelStream(t.ID()), Expected: eventstore.Exact(*expected), Actual: t.Version()}
	}
	return t, nil
}

// UpdateTunnel changes a tunnel. ExpectedVersion, when set (If-Match), must be the tunnel's
// current version: a concurrent change then fails with a conflict instead of being retried.
//
// Labels (all of them; an empty map removes them) and CORS decide who may reach the tunnel:
// labels which access keys scoped by a label selector call it, CORS which web sites' pages may
// read its responses with a visitor's credential. Changing either is sharing, and takes the
// right to share (tunnels:share) beside tunnels:update.
type UpdateTunnel struct {
	OrgID           string             `json:"org_id"`
	TunnelID        string             `json:"tunnel_id"`
	Name            *string            `json:"name,omitempty"`
	Upstream        *string            `json:"upstream,omitempty"`
	Protocol        *string            `json:"protocol,omitempty"`
	Labels          *map[string]string `json:"labels,omitempty"`
	CORS            *domain.TunnelCORS `json:"cors,omitempty"`
	ExpectedVersion *uint64            `json:"expected_version,omitempty"`
}

func (UpdateTunnel) CommandName() string { return "UpdateTunnel" }
func (c UpdateTunnel) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActUpdate}
}

func (s *Service) updateTunnel(ctx context.Context, c UpdateTunnel) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryUnlessPinned(c.ExpectedVersion), func() (decision, error) {
		t, err := s.loadTunnelAt(ctx, c.OrgID, c.TunnelID, c.ExpectedVersion)
		if err != nil {
			return decision{}, err
		}
		oldName := t.Name()
		ev, err := t.Update(domain.TunnelChanges{Name: c.Name, Upstream: c.Upstream, Protocol: c.Protocol, Labels: c.Labels, CORS: c.CORS})
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(t.ID(), t.Version()), nil
		}
		if ev.Labels != nil || ev.CORS != nil {
			if err := s.authz.Check(ctx, Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}); err != nil {
				return decision{}, err
			}
		}
		d := changed(t.ID(), domain.TunnelStream(t.ID()), t.Version(), ev)
		if ev.Name != nil {
			return s.rename(ctx, d, c.OrgID, t.ID(), oldName, *ev.Name)
		}
		return d, nil
	})
}

// rename adds to d the reservation of the new name and the release of the old one.
func (s *Service) rename(ctx context.Context, d decision, orgID, tunnelID, oldName, newName string) (decision, error) {
	stream := domain.TunnelNameStream(orgID, newName)
	recs, err := s.load(ctx, stream)
	if err != nil {
		return decision{}, err
	}
	name, err := domain.RehydrateTunnelName(recs)
	if err != nil {
		return decision{}, err
	}
	reserved, err := name.Reserve(orgID, newName, tunnelID)
	if err != nil {
		return decision{}, err
	}
	return s.releaseName(ctx, d.and(stream, name.Version(), reserved), orgID, oldName, tunnelID)
}

// releaseName adds to d the release of name if tunnelID holds it (at the name stream's
// current version); a name held by no one or another tunnel is left alone.
func (s *Service) releaseName(ctx context.Context, d decision, orgID, name, tunnelID string) (decision, error) {
	stream := domain.TunnelNameStream(orgID, name)
	recs, err := s.load(ctx, stream)
	if err != nil {
		return decision{}, err
	}
	n, err := domain.RehydrateTunnelName(recs)
	if err != nil {
		return decision{}, err
	}
	if n.Holder() != tunnelID {
		return d, nil
	}
	return d.and(stream, n.Version(), domain.TunnelNameReleased{OrgID: orgID, Name: name, TunnelID: tunnelID}), nil
}

// DeleteTunnel ends a tunnel and frees its name.
type DeleteTunnel struct {
	OrgID           string  `json:"org_id"`
	TunnelID        string  `json:"tunnel_id"`
	Reason          string  `json:"reason,omitempty"`
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
}

func (DeleteTunnel) CommandName() string { return "DeleteTunnel" }
func (c DeleteTunnel) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActDelete}
}

func (s *Service) deleteTunnel(ctx context.Context, c DeleteTunnel) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryUnlessPinned(c.ExpectedVersion), func() (decision, error) {
		t, err := s.loadTunnelAt(ctx, c.OrgID, c.TunnelID, c.ExpectedVersion)
		if err != nil {
			return decision{}, err
		}
		ev, err := t.Delete(c.Reason)
		if err != nil {
			return decision{}, err
		}
		return s.releaseName(ctx, changed(t.ID(), domain.TunnelStream(t.ID()), t.Version(), ev), c.OrgID, t.Name(), t.ID())
	})
}

// SetTunnelAccessLog sets what the tunnel's nodes report about its calls: domain.AccessLogCalls
// (a record per call) or domain.AccessLogWindows (the usage windows only). Like the access
// policy it decides what the tunnel's sharing leaves on record, so it takes the right to share.
type SetTunnelAccessLog struct {
	OrgID     string `json:"org_id"`
	TunnelID  string `json:"tunnel_id"`
	AccessLog string `json:"access_log"`
}

func (SetTunnelAccessLog) CommandName() string { return "SetTunnelAccessLog" }
func (c SetTunnelAccessLog) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActShare}
}

func (s *Service) setTunnelAccessLog(ctx context.Context, c SetTunnelAccessLog) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		t, err := s.loadTunnel(ctx, c.OrgID, c.TunnelID)
		if err != nil {
			return decision{}, err
		}
		ev, err := t.SetAccessLog(c.AccessLog)
		if err != nil {
			return decision{}, err
		}
		if ev == nil {
			return unchanged(t.ID(), t.Version()), nil
		}
		return changed(t.ID(), domain.TunnelStream(t.ID()), t.Version(), ev), nil
	})
}
