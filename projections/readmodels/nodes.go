package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Node is a data-plane node (view nodes). Whether it heartbeats now is not a read model's to say
// (the node registry knows).
type Node struct {
	ID                 string    `db:"node_id"`
	Name               string    `db:"name"`
	State              string    `db:"state"`
	Lost               bool      `db:"lost"`
	HostKey            string    `db:"host_key"`
	HostKeyFingerprint string    `db:"host_key_fingerprint"`
	EventKeyID         string    `db:"event_key_id"`
	AgentURL           string    `db:"agent_url"`
	IngressURL         string    `db:"ingress_url"`
	EnrolledAt         time.Time `db:"enrolled_at"`
	UpdatedAt          time.Time `db:"updated_at"`
	Version            int64     `db:"version"`
	Position           int64     `db:"position"`
}

// Node states.
const (
	NodeJoined   = "joined"
	NodeDraining = "draining"
	NodeLeft     = "left"
)

// NodeFilter selects nodes (platform-wide), by name and id.
type NodeFilter struct {
	// State is NodeJoined, NodeDraining, NodeLeft or "" (any).
	State string
	// Name, when set, is exact.
	Name string
	// After is the key of the last row of the previous page; the page starts after it.
	After *NodeKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// NodeKey is the sort key of the nodes list.
type NodeKey struct {
	Name, ID string
}

const nodeColumns = `SELECT node_id::text AS node_id, name, state, lost, host_key, host_key_fingerprint, event_key_id, agent_url, ingress_url,
	enrolled_at, updated_at, version, position FROM nodes`

// ListNodes lists nodes by name.
func (q *Queries) ListNodes(ctx context.Context, f NodeFilter) ([]Node, error) {
	const op = "list nodes"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkState(op, f.State, NodeJoined, NodeDraining, NodeLeft); err != nil {
		return nil, err
	}
	if f.After != nil {
		if err := checkID(op, "cursor", f.After.ID); err != nil {
			return nil, err
		}
	}
	var w where
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	if f.Name != "" {
		w.add("name = ?", f.Name)
	}
	if f.After != nil {
		w.add("(name, node_id) > (?, ?::uuid)", f.After.Name, f.After.ID)
	}
	return selectRows[Node](ctx, q, op, nodeColumns+w.sql()+" ORDER BY name, node_id"+w.limit(f.Limit), w.args...)
}

// GetNode reads one node; an id that is not one is domain.ErrNotFound.
func (q *Queries) GetNode(ctx context.Context, id string) (Node, error) {
	if !domain.ValidID(id) {
		return Node{}, fmt.Errorf("node %q: %w", id, domain.ErrNotFound)
	}
	return selectOne[Node](ctx, q, "get node", "node "+id, nodeColumns+" WHERE node_id = $1::uuid", id)
}
