package readmodels

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Tunnel is a tunnel (view tunnels), with the count of its connected agents (view
// agent_sessions).
type Tunnel struct {
	ID        string    `db:"tunnel_id"`
	OrgID     string    `db:"org_id"`
	Name      string    `db:"name"`
	Owner     string    `db:"owner"`
	Upstream  string    `db:"upstream"`
	Protocol  string    `db:"protocol"`
	State     string    `db:"state"`
	Version   int64     `db:"version"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
	Position  int64     `db:"position"`
	// AgentsConnected counts the tunnel's agent sessions its nodes report connected now.
	AgentsConnected int64 `db:"agents_connected"`
	// AccessLog is "windows" or "calls" (tunnel.access_log_set).
	AccessLog string `db:"access_log"`
	// Labels are the tunnel's labels ({} for none).
	Labels map[string]string `db:"labels"`
	// CORS is the tunnel's cross-origin setting (nil: never set, which is domain.CORSOff).
	CORS *domain.TunnelCORS `db:"cors"`
}

// Tunnel states.
const (
	TunnelActive  = "active"
	TunnelDeleted = "deleted"
)

// TunnelFilter selects the tunnels of one organization, by name and id.
type TunnelFilter struct {
	// OrgID is required.
	OrgID string
	// State is TunnelActive, TunnelDeleted or "" (any).
	State string
	// Name and Owner, when set, are exact.
	Name, Owner string
	// After is the key of the last row of the previous page; the page starts after it.
	After *TunnelKey
	// Limit is the most rows returned (at least 1).
	Limit int
}

// TunnelKey is the sort key of the tunnels list.
type TunnelKey struct {
	Name, ID string
}

const tunnelColumns = `SELECT tunnel_id::text AS tunnel_id, org_id::text AS org_id, name, owner, upstream, protocol, state, version,
	created_at, updated_at, position, ` + agentsConnected + ` AS agents_connected, access_log, labels, cors FROM tunnels`

// ListTunnels lists an organization's tunnels by name.
func (q *Queries) ListTunnels(ctx context.Context, f TunnelFilter) ([]Tunnel, error) {
	const op = "list tunnels"
	if err := checkLimit(op, f.Limit); err != nil {
		return nil, err
	}
	if err := checkID(op, "org", f.OrgID); err != nil {
		return nil, err
	}
	if err := checkState(op, f.State, TunnelActive, TunnelDeleted); err != nil {
		return nil, err
	}
	if f.After != nil {
		if err := checkID(op, "cursor", f.After.ID); err != nil {
			return nil, err
		}
	}
	var w where
	w.add("org_id = ?::uuid", f.OrgID)
	if f.State != "" {
		w.add("state = ?", f.State)
	}
	if f.Name != "" {
		w.add("name = ?", f.Name)
	}
	if f.Owner != "" {
		w.add("owner = ?", f.Owner)
	}
	if f.After != nil {
		w.add("(name, tunnel_id) > (?, ?::uuid)", f.After.Name, f.After.ID)
	}
	return selectRows[Tunnel](ctx, q, op, tunnelColumns+w.sql()+" ORDER BY name, tunnel_id"+w.limit(f.Limit), w.args...)
}

// GetTunnel reads one tunnel of an organization; a tunnel of another organization is
// domain.ErrNotFound, as is an id that is not one.
func (q *Queries) GetTunnel(ctx context.Context, orgID, id string) (Tunnel, error) {
	if !domain.ValidID(id) {
		return Tunnel{}, fmt.Errorf("tunnel %q: %w", id, domain.ErrNotFound)
	}
	if !domain.ValidID(orgID) {
		return Tunnel{}, fmt.Errorf("get tunnel: %w: org %q is not an id", ErrBadFilter, orgID)
	}
	return selectOne[Tunnel](ctx, q, "get tunnel", "tunnel "+id, tunnelColumns+" WHERE tunnel_id = $1::uuid AND org_id = $2::uuid", id, orgID)
}
