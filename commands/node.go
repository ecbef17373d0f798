package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

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
	meta := metadata(ctx, c.CommandName(), "", s.cfg.Now())
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		ev, existing, err := s.decideEnrollment(ctx, c)
		if err != nil || existing != nil {
			return unchangedNode(existing), err
		}
		return s.enrollment(meta, c, changed(c.NodeID, domain.NodeStream(c.NodeID), 0, ev)), nil
	})
}

// decideEnrollment checks an enrollment. A node enrolls again at every start: when the same node
// is enrolled with the same key it returns that node (nothing to do); another key, or a node that
// left, is a conflict.
func (s *Service) decideEnrollment(ctx context.Context, c EnrollNode) (domain.NodeEnrolled, *domain.Node, error) {
	ev, err := domain.EnrollNode(domain.NewNode{NodeID: c.NodeID, Name: c.Name, HostKey: c.HostKey, HostKeyFingerprint: c.HostKeyFingerprint,
		EventKeyID: c.EventKey.KeyID, AgentURL: c.AgentURL, IngressURL: c.IngressURL})
	if err != nil {
		return ev, nil, err
	}
	if c.EventKey.Purpose != eventstore.PurposeNode || c.EventKey.Owner != c.NodeID {
		return ev, nil, &domain.ValidationError{Fields: []domain.FieldError{{Field: "event_key", Message: "must be a node key owned by node_id"}}}
	}
	recs, err := s.load(ctx, domain.NodeStream(c.NodeID))
	if err != nil || len(recs) == 0 {
		return ev, nil, err
	}
	n, err := domain.RehydrateNode(recs)
	if err != nil {
		return ev, nil, err
	}
	if n.EventKeyID() != c.EventKey.KeyID || n.State() == domain.NodeLeft {
		return ev, nil, fmt.Errorf("enroll node %s: %w: it is enrolled with key %s (state %s)", c.NodeID, domain.ErrConflict, n.EventKeyID(), n.State())
	}
	return ev, n, nil
}

func unchangedNode(n *domain.Node) decision {
	if n == nil {
		return decision{}
	}
	return unchanged(n.ID(), n.Version())
}

// enrollment writes d (whose first stream is the node's) with the node's event key, atomically.
func (s *Service) enrollment(meta []byte, c EnrollNode, d decision) decision {
	d.withKeyEvent = func(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
		res, err := s.store.AddPublicKey(ctx, meta, c.EventKey, appends...)
		if errors.Is(err, eventstore.ErrInvalidEvent) {
			return res, &domain.ValidationError{Fields: []domain.FieldError{{Field: "event_key", Message: err.Error()}}}
		}
		return res, err
	}
	return d
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
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		n, err := s.loadNode(ctx, c.NodeID)
		if err != nil {
			return decision{}, err
		}
		ev, err := n.Drain()
		if err != nil {
			return decision{}, err
		}
		return changed(n.ID(), domain.NodeStream(n.ID()), n.Version(), ev), nil
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
	return s.decideAndAppend(ctx, g, meta, failOnConflict, func() (decision, error) {
		n, err := s.loadNode(ctx, c.NodeID)
		if err != nil {
			return decision{}, err
		}
		ev, err := n.Remove(c.Reason)
		if err != nil {
			return decision{}, err
		}
		d := changed(n.ID(), domain.NodeStream(n.ID()), n.Version(), ev)
		d.withKeyEvent = func(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
			return s.store.RevokeKeyWith(ctx, meta, n.EventKeyID(), "node removed: "+c.Reason, appends...)
		}
		return d, nil
	})
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
	return s.decideAndAppend(ctx, g, meta, retryOnConflict, func() (decision, error) {
		n, err := s.loadNode(ctx, nodeID)
		if err != nil {
			return decision{}, err
		}
		ev := decide(n)
		if ev == nil {
			return unchanged(nodeID, n.Version()), nil
		}
		return changed(nodeID, domain.NodeStream(nodeID), n.Version(), ev), nil
	})
}
