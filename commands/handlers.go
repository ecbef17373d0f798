package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Objects and actions of the authorization model.
const (
	ObjOrgs        = "orgs"
	ObjTunnels     = "tunnels"
	ObjTokens      = "tokens"
	ObjRoles       = "roles"
	ObjNodes       = "nodes"
	ObjKeys        = "keys"
	ObjAudit       = "audit"
	ObjProjections = "projections"

	ActCreate      = "create"
	ActRead        = "read"
	ActUpdate      = "update"
	ActDelete      = "delete"
	ActIssue       = "issue"
	ActRevoke      = "revoke"
	ActAssign      = "assign"
	ActAssignOwner = "assign_owner"
	ActUnassign    = "unassign"
	ActEnroll      = "enroll"
	ActDrain       = "drain"
	ActRemove      = "remove"
	ActRotate      = "rotate"
	ActRebuild     = "rebuild"
	// ActUse on ObjTunnels: call a tunnel or hold its agent credential. No role holds it in the
	// policy; it is decided by domain.MayUseTunnel (Authorizer.CheckTunnelUse) and named in audit
	// events of its denials.
	ActUse = "use"
)

// ---- organizations ----

// CreateOrganization makes a tenant; Owner, when set, becomes its first owner.
type CreateOrganization struct {
	Name  string `json:"name"`
	Owner string `json:"owner,omitempty"`
}

func (CreateOrganization) CommandName() string { return "CreateOrganization" }
func (CreateOrganization) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjOrgs, Action: ActCreate}
}

func (s *Service) createOrganization(ctx context.Context, c CreateOrganization) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	orgID := g.next().String()
	created, reserved, err := domain.CreateOrganization(orgID, c.Name, orDefault(ActorFrom(ctx).ID, "system"))
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), orgID, s.cfg.Now())
	orgEvents, err := events(g, meta, created)
	if err != nil {
		return Result{}, err
	}
	nameEvents, err := events(g, meta, reserved)
	if err != nil {
		return Result{}, err
	}
	appends := []eventstore.StreamAppend{
		{StreamID: domain.OrgStream(orgID), Expected: eventstore.NoStream, Events: orgEvents},
		{StreamID: domain.OrgNameStream(c.Name), Expected: eventstore.NoStream, Events: nameEvents},
	}
	if c.Owner != "" {
		ra, err := domain.RehydrateRoleAssignment(orgID, c.Owner, nil)
		if err != nil {
			return Result{}, err
		}
		assigned, err := ra.Assign(domain.RoleOwner)
		if err != nil {
			return Result{}, err
		}
		roleEvents, err := events(g, meta, assigned)
		if err != nil {
			return Result{}, err
		}
		appends = append(appends, eventstore.StreamAppend{StreamID: domain.RoleStream(orgID, c.Owner), Expected: eventstore.NoStream, Events: roleEvents})
	}
	res, err := s.appendMulti(ctx, appends...)
	if err != nil {
		var wrong *eventstore.WrongExpectedVersionError
		if errors.As(err, &wrong) && wrong.StreamID == domain.OrgNameStream(c.Name) {
			return Result{}, fmt.Errorf("create organization: %w: the name %q is taken", domain.ErrConflict, c.Name)
		}
		return Result{}, conflict(err)
	}
	return Result{ID: orgID, Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}, nil
}

// ---- tunnels ----

// CreateTunnel registers a tunnel owned by the actor.
type CreateTunnel struct {
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Protocol string `json:"protocol,omitempty"`
}

func (CreateTunnel) CommandName() string { return "CreateTunnel" }
func (c CreateTunnel) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActCreate}
}

func (s *Service) createTunnel(ctx context.Context, c CreateTunnel) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	tunnelID := g.next().String()
	created, err := domain.CreateTunnel(domain.NewTunnel{TunnelID: tunnelID, OrgID: c.OrgID, Owner: ActorFrom(ctx).ID, Name: c.Name, Upstream: c.Upstream, Protocol: c.Protocol})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	attempts := 0
	return s.retryConflicts(ctx, false, func() (Result, error) {
		attempts++
		nameRecs, err := s.loadName(ctx, domain.TunnelNameStream(c.OrgID, c.Name), attempts > 1)
		if err != nil {
			return Result{}, err
		}
		name, err := domain.RehydrateTunnelName(nameRecs)
		if err != nil {
			return Result{}, err
		}
		reserved, err := name.Reserve(c.OrgID, c.Name, tunnelID)
		if err != nil {
			return Result{}, err
		}
		tEvents, err := events(g, meta, created)
		if err != nil {
			return Result{}, err
		}
		nEvents, err := events(g, meta, reserved)
		if err != nil {
			return Result{}, err
		}
		res, err := s.appendMulti(ctx,
			eventstore.StreamAppend{StreamID: domain.TunnelStream(tunnelID), Expected: eventstore.NoStream, Events: tEvents},
			eventstore.StreamAppend{StreamID: domain.TunnelNameStream(c.OrgID, c.Name), Expected: eventstore.Exact(name.Version()), Events: nEvents},
		)
		if err != nil {
			return Result{}, err
		}
		return Result{ID: tunnelID, Position: res[1].LastPosition, Version: res[0].StreamVersion}, nil
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
type UpdateTunnel struct {
	OrgID           string  `json:"org_id"`
	TunnelID        string  `json:"tunnel_id"`
	Name            *string `json:"name,omitempty"`
	Upstream        *string `json:"upstream,omitempty"`
	Protocol        *string `json:"protocol,omitempty"`
	ExpectedVersion *uint64 `json:"expected_version,omitempty"`
}

func (UpdateTunnel) CommandName() string { return "UpdateTunnel" }
func (c UpdateTunnel) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTunnels, Action: ActUpdate}
}

func (s *Service) updateTunnel(ctx context.Context, c UpdateTunnel) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.retryConflicts(ctx, c.ExpectedVersion != nil, func() (Result, error) {
		t, err := s.loadTunnelAt(ctx, c.OrgID, c.TunnelID, c.ExpectedVersion)
		if err != nil {
			return Result{}, err
		}
		oldName := t.Name()
		ev, err := t.Update(domain.TunnelChanges{Name: c.Name, Upstream: c.Upstream, Protocol: c.Protocol})
		if err != nil {
			return Result{}, err
		}
		if ev == nil {
			return Result{ID: t.ID(), Version: t.Version(), Noop: true}, nil
		}
		tEvents, err := events(g, meta, ev)
		if err != nil {
			return Result{}, err
		}
		appends := []eventstore.StreamAppend{{StreamID: domain.TunnelStream(t.ID()), Expected: eventstore.Exact(t.Version()), Events: tEvents}}
		if ev.Name != nil {
			more, err := s.renameAppends(ctx, g, meta, c.OrgID, t.ID(), oldName, *ev.Name)
			if err != nil {
				return Result{}, err
			}
			appends = append(appends, more...)
		}
		res, err := s.appendMulti(ctx, appends...)
		if err != nil {
			return Result{}, err
		}
		return Result{ID: t.ID(), Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}, nil
	})
}

// renameAppends reserves the new name and releases the old one.
func (s *Service) renameAppends(ctx context.Context, g *idGen, meta []byte, orgID, tunnelID, oldName, newName string) ([]eventstore.StreamAppend, error) {
	recs, err := s.load(ctx, domain.TunnelNameStream(orgID, newName))
	if err != nil {
		return nil, err
	}
	name, err := domain.RehydrateTunnelName(recs)
	if err != nil {
		return nil, err
	}
	reserved, err := name.Reserve(orgID, newName, tunnelID)
	if err != nil {
		return nil, err
	}
	rEvents, err := events(g, meta, reserved)
	if err != nil {
		return nil, err
	}
	out := []eventstore.StreamAppend{{StreamID: domain.TunnelNameStream(orgID, newName), Expected: eventstore.Exact(name.Version()), Events: rEvents}}
	return s.releaseName(ctx, g, meta, orgID, oldName, tunnelID, out)
}

// releaseName adds to appends the release of name if tunnelID holds it (at the name stream's
// current version); a name held by no one or another tunnel is left alone.
func (s *Service) releaseName(ctx context.Context, g *idGen, meta []byte, orgID, name, tunnelID string, appends []eventstore.StreamAppend) ([]eventstore.StreamAppend, error) {
	stream := domain.TunnelNameStream(orgID, name)
	recs, err := s.load(ctx, stream)
	if err != nil {
		return nil, err
	}
	n, err := domain.RehydrateTunnelName(recs)
	if err != nil {
		return nil, err
	}
	if n.Holder() != tunnelID {
		return appends, nil
	}
	evs, err := events(g, meta, domain.TunnelNameReleased{OrgID: orgID, Name: name, TunnelID: tunnelID})
	if err != nil {
		return nil, err
	}
	return append(appends, eventstore.StreamAppend{StreamID: stream, Expected: eventstore.Exact(n.Version()), Events: evs}), nil
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
	return s.retryConflicts(ctx, c.ExpectedVersion != nil, func() (Result, error) {
		t, err := s.loadTunnelAt(ctx, c.OrgID, c.TunnelID, c.ExpectedVersion)
		if err != nil {
			return Result{}, err
		}
		ev, err := t.Delete(c.Reason)
		if err != nil {
			return Result{}, err
		}
		tEvents, err := events(g, meta, ev)
		if err != nil {
			return Result{}, err
		}
		appends, err := s.releaseName(ctx, g, meta, c.OrgID, t.Name(), t.ID(),
			[]eventstore.StreamAppend{{StreamID: domain.TunnelStream(t.ID()), Expected: eventstore.Exact(t.Version()), Events: tEvents}})
		if err != nil {
			return Result{}, err
		}
		res, err := s.appendMulti(ctx, appends...)
		if err != nil {
			return Result{}, err
		}
		return Result{ID: t.ID(), Position: res[len(res)-1].LastPosition, Version: res[0].StreamVersion}, nil
	})
}

// ---- nodes ----

// EnrollNode registers a data-plane node: its SSH host key (what agents pin) and its event key
// (registered in the log with the node's proof of possession), atomically.
type EnrollNode struct {
	Name               string                     `json:"name"`
	HostKey            string                     `json:"host_key"`
	HostKeyFingerprint string                     `json:"host_key_fingerprint"`
	EventKey           eventstore.KeyAddedPayload `json:"event_key"`
	AgentURL           string                     `json:"agent_url,omitempty"`
	IngressURL         string                     `json:"ingress_url,omitempty"`
	// NodeID is the id the node chose (it signs its event-key proof with it as owner).
	NodeID string `json:"node_id"`
}

func (EnrollNode) CommandName() string { return "EnrollNode" }
func (EnrollNode) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActEnroll}
}

func (s *Service) enrollNode(ctx context.Context, c EnrollNode) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	ev, err := domain.EnrollNode(domain.NewNode{NodeID: c.NodeID, Name: c.Name, HostKey: c.HostKey, HostKeyFingerprint: c.HostKeyFingerprint,
		EventKeyID: c.EventKey.KeyID, AgentURL: c.AgentURL, IngressURL: c.IngressURL})
	if err != nil {
		return Result{}, err
	}
	if c.EventKey.Purpose != eventstore.PurposeNode || c.EventKey.Owner != c.NodeID {
		return Result{}, &domain.ValidationError{Fields: []domain.FieldError{{Field: "event_key", Message: "must be a node key owned by node_id"}}}
	}
	// A node enrolls again at every start: the same node with the same key is already done.
	if recs, err := s.load(ctx, domain.NodeStream(c.NodeID)); err != nil {
		return Result{}, err
	} else if len(recs) > 0 {
		n, err := domain.RehydrateNode(recs)
		if err != nil {
			return Result{}, err
		}
		if n.EventKeyID() != c.EventKey.KeyID || n.State() == domain.NodeLeft {
			return Result{}, fmt.Errorf("enroll node %s: %w: it is enrolled with key %s (state %s)", c.NodeID, domain.ErrConflict, n.EventKeyID(), n.State())
		}
		return Result{ID: n.ID(), Version: n.Version(), Noop: true}, nil
	}
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	evs, err := events(g, meta, ev)
	if err != nil {
		return Result{}, err
	}
	s.cache.forget(domain.NodeStream(c.NodeID))
	res, err := s.store.AddPublicKey(ctx, c.EventKey, eventstore.StreamAppend{StreamID: domain.NodeStream(c.NodeID), Expected: eventstore.NoStream, Events: evs})
	if err != nil {
		if errors.Is(err, eventstore.ErrInvalidEvent) {
			return Result{}, &domain.ValidationError{Fields: []domain.FieldError{{Field: "event_key", Message: err.Error()}}}
		}
		return Result{}, conflict(err)
	}
	return Result{ID: c.NodeID, Position: res.LastPosition, Version: 1}, nil
}

func (s *Service) loadNode(ctx context.Context, nodeID string) (*domain.Node, error) {
	if !domain.ValidID(nodeID) {
		return nil, fmt.Errorf("node %q: %w", nodeID, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.NodeStream(nodeID))
	if err != nil {
		return nil, err
	}
	return domain.RehydrateNode(recs)
}

// DrainNode asks a node to let its agents go and take no new ones.
type DrainNode struct {
	NodeID string `json:"node_id"`
}

func (DrainNode) CommandName() string { return "DrainNode" }
func (DrainNode) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActDrain}
}

func (s *Service) drainNode(ctx context.Context, c DrainNode) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	return s.retryConflicts(ctx, false, func() (Result, error) {
		n, err := s.loadNode(ctx, c.NodeID)
		if err != nil {
			return Result{}, err
		}
		ev, err := n.Drain()
		if err != nil {
			return Result{}, err
		}
		return s.appendOne(ctx, g, meta, domain.NodeStream(n.ID()), n.ID(), n.Version(), ev)
	})
}

// RemoveNode takes a node out of the cluster and revokes its event key.
type RemoveNode struct {
	NodeID string `json:"node_id"`
	Reason string `json:"reason,omitempty"`
}

func (RemoveNode) CommandName() string { return "RemoveNode" }
func (RemoveNode) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActRemove}
}

func (s *Service) removeNode(ctx context.Context, c RemoveNode) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	n, err := s.loadNode(ctx, c.NodeID)
	if err != nil {
		return Result{}, err
	}
	ev, err := n.Remove(c.Reason)
	if err != nil {
		return Result{}, err
	}
	evs, err := events(g, meta, ev)
	if err != nil {
		return Result{}, err
	}
	defer s.cache.forget(domain.NodeStream(n.ID()))
	res, err := s.store.RevokeKeyWith(ctx, n.EventKeyID(), "node removed: "+c.Reason,
		eventstore.StreamAppend{StreamID: domain.NodeStream(n.ID()), Expected: eventstore.Exact(n.Version()), Events: evs})
	if err != nil {
		return Result{}, conflict(err)
	}
	return Result{ID: n.ID(), Position: res.LastPosition, Version: n.Version() + 1}, nil
}

// MarkNodeLost and MarkNodeRecovered are system decisions from the node registry.
func (s *Service) MarkNodeLost(ctx context.Context, nodeID string, lastSeen time.Time) (Result, error) {
	return s.markNode(ctx, nodeID, func(n *domain.Node) domain.Event {
		if ev := n.MarkLost(lastSeen); ev != nil {
			return ev
		}
		return nil
	})
}

// MarkNodeRecovered records that a lost node heartbeats again.
func (s *Service) MarkNodeRecovered(ctx context.Context, nodeID string) (Result, error) {
	return s.markNode(ctx, nodeID, func(n *domain.Node) domain.Event {
		if ev := n.MarkRecovered(); ev != nil {
			return ev
		}
		return nil
	})
}

func (s *Service) markNode(ctx context.Context, nodeID string, decide func(*domain.Node) domain.Event) (Result, error) {
	ctx = WithActor(ctx, Actor{ID: "system:registry"})
	g := newIDGen(ctx, "MarkNode")
	meta := metadata(ctx, "MarkNode", "", s.cfg.Now())
	return s.retryConflicts(ctx, false, func() (Result, error) {
		n, err := s.loadNode(ctx, nodeID)
		if err != nil {
			return Result{}, err
		}
		ev := decide(n)
		if ev == nil {
			return Result{ID: nodeID, Version: n.Version(), Noop: true}, nil
		}
		return s.appendOne(ctx, g, meta, domain.NodeStream(nodeID), nodeID, n.Version(), ev)
	})
}

func (s *Service) appendOne(ctx context.Context, g *idGen, meta []byte, stream, id string, version uint64, ev domain.Event) (Result, error) {
	evs, err := events(g, meta, ev)
	if err != nil {
		return Result{}, err
	}
	r, err := s.appendMulti(ctx, eventstore.StreamAppend{StreamID: stream, Expected: eventstore.Exact(version), Events: evs})
	if err != nil {
		return Result{}, err
	}
	res := r[0]
	return Result{ID: id, Position: res.LastPosition, Version: res.StreamVersion}, nil
}

// ---- agent tokens ----

// IssueAgentToken mints a credential for one tunnel. The token is returned once.
type IssueAgentToken struct {
	OrgID    string        `json:"org_id"`
	TunnelID string        `json:"tunnel_id"`
	TTL      time.Duration `json:"ttl"`
}

func (IssueAgentToken) CommandName() string { return "IssueAgentToken" }
func (c IssueAgentToken) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTokens, Action: ActIssue}
}

func (s *Service) issueAgentToken(ctx context.Context, c IssueAgentToken) (Result, error) {
	key := s.TokenKey()
	if key == nil {
		return Result{}, ErrNoTokenKey
	}
	g := newIDGen(ctx, c.CommandName())
	t, err := s.loadTunnel(ctx, c.OrgID, c.TunnelID)
	if err != nil {
		return Result{}, err
	}
	// Whoever holds the agent token decides where the tunnel's callers' requests go: issuing one
	// needs the right to use the tunnel, not only tokens:issue.
	if err := s.authz.CheckTunnelUse(ctx, c.OrgID, t.ID(), t.Owner()); err != nil {
		return Result{}, err
	}
	tokenID := g.next().String()
	now := s.cfg.Now()
	ev, err := domain.IssueAgentToken(t, domain.NewAgentToken{TokenID: tokenID, OrgID: c.OrgID, TunnelID: c.TunnelID, KeyID: key.ID(),
		IssuedBy: ActorFrom(ctx).ID, Now: now, TTL: c.TTL})
	if err != nil {
		return Result{}, err
	}
	meta := metadata(ctx, c.CommandName(), c.OrgID, now)
	res, err := s.appendOne(ctx, g, meta, domain.AgentTokenStream(tokenID), tokenID, 0, ev)
	if err != nil {
		return Result{}, conflict(err)
	}
	raw, err := token.MintAgent(key, s.cfg.TokenIssuer, tokenID, c.OrgID, c.TunnelID, ev.ExpiresAt, now)
	if err != nil {
		return Result{}, err
	}
	exp, iat := ev.ExpiresAt, now
	res.Token, res.ExpiresAt, res.IssuedAt, res.KeyID = raw, &exp, &iat, key.ID()
	return res, nil
}

// RevokeAgentToken makes a token unusable; nodes drop agents using it.
type RevokeAgentToken struct {
	OrgID   string `json:"org_id"`
	TokenID string `json:"token_id"`
	Reason  string `json:"reason,omitempty"`
}

func (RevokeAgentToken) CommandName() string { return "RevokeAgentToken" }
func (c RevokeAgentToken) Permission() Permission {
	return Permission{Org: c.OrgID, Object: ObjTokens, Action: ActRevoke}
}

func (s *Service) revokeAgentToken(ctx context.Context, c RevokeAgentToken) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	if !domain.ValidID(c.TokenID) {
		return Result{}, fmt.Errorf("agent token %q: %w", c.TokenID, domain.ErrNotFound)
	}
	recs, err := s.load(ctx, domain.AgentTokenStream(c.TokenID))
	if err != nil {
		return Result{}, err
	}
	a, err := domain.RehydrateAgentToken(recs)
	if err != nil {
		return Result{}, err
	}
	if a.OrgID() != c.OrgID {
		return Result{}, fmt.Errorf("agent token %s: %w", c.TokenID, domain.ErrNotFound)
	}
	// Revoking disconnects the tunnel's agent: it needs the right to use the tunnel, as issuing
	// does. Decided before the token's state, so a refusal tells nothing about it.
	t, err := s.loadTunnel(ctx, c.OrgID, a.TunnelID())
	if err != nil {
		return Result{}, err
	}
	if err := s.authz.CheckTunnelUse(ctx, c.OrgID, t.ID(), t.Owner()); err != nil {
		return Result{}, err
	}
	ev, err := a.Revoke(c.Reason)
	if err != nil {
		return Result{}, err
	}
	res, err := s.appendOne(ctx, g, meta, domain.AgentTokenStream(c.TokenID), c.TokenID, a.Version(), ev)
	return res, conflict(err)
}

// ---- keys ----

// RotateSigningKey replaces the log key or the token key by a fresh one.
type RotateSigningKey struct {
	Purpose string `json:"purpose"`
}

func (RotateSigningKey) CommandName() string { return "RotateSigningKey" }
func (RotateSigningKey) Permission() Permission {
	return Permission{Org: domain.PlatformOrg, Object: ObjKeys, Action: ActRotate}
}

func (s *Service) rotateSigningKey(ctx context.Context, c RotateSigningKey) (Result, error) {
	purpose, err := domain.ParseKeyPurpose(c.Purpose)
	if err != nil {
		return Result{}, err
	}
	switch purpose {
	case domain.KeyPurposeLog:
		current, err := eventstore.LogKeyID(ctx, s.cfg.Pool)
		if err != nil {
			return Result{}, err
		}
		next, err := s.cfg.LogKeys.Create()
		if err != nil {
			return Result{}, err
		}
		if err := domain.CheckRotation(purpose, current, next.ID()); err != nil {
			return Result{}, err
		}
		res, err := s.store.RotateLogKey(ctx, next)
		if err != nil {
			return Result{}, conflict(err)
		}
		return Result{ID: next.ID(), Position: res.LastPosition}, nil
	default:
		old := s.TokenKey()
		if old == nil {
			return Result{}, ErrNoTokenKey
		}
		next, err := s.cfg.TokenKeys.Create()
		if err != nil {
			return Result{}, err
		}
		if err := domain.CheckRotation(purpose, old.ID(), next.ID()); err != nil {
			return Result{}, err
		}
		res, err := s.store.RotateKey(ctx, eventstore.PurposeToken, TokenKeyOwner, old, next)
		if err != nil {
			return Result{}, conflict(err)
		}
		s.setTokenKey(next)
		return Result{ID: next.ID(), Position: res.LastPosition}, nil
	}
}

// ---- roles ----

// AssignRole grants a user a role in an organization (PlatformOrg: superadmin).
type AssignRole struct {
	OrgID  string      `json:"org_id"`
	UserID string      `json:"user_id"`
	Role   domain.Role `json:"role"`
}

func (AssignRole) CommandName() string      { return "AssignRole" }
func (c AssignRole) Permission() Permission { return rolePermission(c.OrgID, c.Role, ActAssign) }

// rolePermission: granting or withdrawing owner (or superadmin) needs more than other roles.
func rolePermission(org string, role domain.Role, act string) Permission {
	if role == domain.RoleOwner || role == domain.RoleSuperadmin {
		return Permission{Org: org, Object: ObjRoles, Action: ActAssignOwner}
	}
	return Permission{Org: org, Object: ObjRoles, Action: act}
}

func (s *Service) assignRole(ctx context.Context, c AssignRole) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	if c.OrgID != domain.PlatformOrg {
		if err := s.requireOrg(ctx, c.OrgID); err != nil {
			return Result{}, err
		}
	}
	return s.changeRoles(ctx, c.OrgID, c.UserID, func(ra *domain.RoleAssignment) (domain.Event, error) {
		ev, err := ra.Assign(c.Role)
		if ev == nil {
			return nil, err // nil event and nil error: already held
		}
		return ev, err
	}, g, meta)
}

// changeRoles loads a user's roles in an org, lets decide choose the event (nil: nothing to do)
// and appends it, retrying on a concurrent change.
func (s *Service) changeRoles(ctx context.Context, orgID, userID string, decide func(*domain.RoleAssignment) (domain.Event, error), g *idGen, meta []byte) (Result, error) {
	stream := domain.RoleStream(orgID, userID)
	return s.retryConflicts(ctx, false, func() (Result, error) {
		recs, err := s.load(ctx, stream)
		if err != nil {
			return Result{}, err
		}
		ra, err := domain.RehydrateRoleAssignment(orgID, userID, recs)
		if err != nil {
			return Result{}, err
		}
		ev, err := decide(ra)
		if err != nil {
			return Result{}, err
		}
		if ev == nil {
			return Result{ID: userID, Version: ra.Version(), Noop: true}, nil
		}
		return s.appendOne(ctx, g, meta, stream, userID, ra.Version(), ev)
	})
}

// UnassignRole withdraws a role.
type UnassignRole struct {
	OrgID  string      `json:"org_id"`
	UserID string      `json:"user_id"`
	Role   domain.Role `json:"role"`
}

func (UnassignRole) CommandName() string      { return "UnassignRole" }
func (c UnassignRole) Permission() Permission { return rolePermission(c.OrgID, c.Role, ActUnassign) }

func (s *Service) unassignRole(ctx context.Context, c UnassignRole) (Result, error) {
	g := newIDGen(ctx, c.CommandName())
	meta := metadata(ctx, c.CommandName(), c.OrgID, s.cfg.Now())
	return s.changeRoles(ctx, c.OrgID, c.UserID, func(ra *domain.RoleAssignment) (domain.Event, error) {
		return ra.Unassign(c.Role)
	}, g, meta)
}

// requireOrg fails with ErrNotFound unless the organization exists.
func (s *Service) requireOrg(ctx context.Context, orgID string) error {
	if !domain.ValidID(orgID) {
		return fmt.Errorf("organization %q: %w", orgID, domain.ErrNotFound)
	}
	recs, err := s.store.ReadStream(ctx, domain.OrgStream(orgID), 1, 1)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("organization %s: %w", orgID, domain.ErrNotFound)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
