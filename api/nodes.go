package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Node is a data-plane node as the nodes view holds it.
type Node struct {
	ID                 string    `json:"id" db:"node_id"`
	Name               string    `json:"name" db:"name"`
	State              string    `json:"state" db:"state"`
	Lost               bool      `json:"lost" db:"lost"`
	HostKey            string    `json:"host_key" db:"host_key"`
	HostKeyFingerprint string    `json:"host_key_fingerprint" db:"host_key_fingerprint"`
	EventKeyID         string    `json:"event_key_id" db:"event_key_id"`
	AgentURL           string    `json:"agent_url,omitempty" db:"agent_url"`
	IngressURL         string    `json:"ingress_url,omitempty" db:"ingress_url"`
	EnrolledAt         time.Time `json:"enrolled_at" db:"enrolled_at"`
	UpdatedAt          time.Time `json:"updated_at" db:"updated_at"`
	Version            int64     `json:"version" db:"version"`
	Position           int64     `json:"position" db:"position"`
	// Live and LastHeartbeat come from the node registry (NATS), when the control plane has one.
	Live          *bool      `json:"live,omitempty" db:"-"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty" db:"-"`
}

// LiveNodes reports the nodes heartbeating now and when each was last heard from.
type LiveNodes func() map[string]time.Time

// SetLiveNodes makes node reads show liveness from the node registry (set once it runs).
func (s *Server) SetLiveNodes(f LiveNodes) { s.live.Store(&f) }

func (s *Server) withLiveness(nodes []Node) {
	f := s.live.Load()
	if f == nil {
		return
	}
	live := (*f)()
	for i := range nodes {
		at, ok := live[nodes[i].ID]
		nodes[i].Live = &ok
		if ok {
			at := at
			nodes[i].LastHeartbeat = &at
		}
	}
}

const nodeColumns = `SELECT node_id::text AS node_id, name, state, lost, host_key, host_key_fingerprint, event_key_id, agent_url, ingress_url,
	enrolled_at, updated_at, version, position FROM nodes`

// enrollNode registers a node: the body is commands.EnrollNode (the node's SSH host key and its
// fingerprint, its id, and its event key with the proof of possession it signed).
func (s *Server) enrollNode(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	var in commands.EnrollNode
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	// The fingerprint is what agents pin; it must be the host key's, not merely well-formed.
	if pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.HostKey)); err == nil && pub.Type() == ssh.KeyAlgoED25519 &&
		ssh.FingerprintSHA256(pub) != in.HostKeyFingerprint {
		return invalid("host_key_fingerprint", "is not the fingerprint of host_key (want %s)", ssh.FingerprintSHA256(pub))
	} else if err != nil && in.HostKey != "" {
		return invalid("host_key", "must be an ssh-ed25519 public key in authorized_keys format")
	}
	res, err := s.cfg.Service.Handlers.EnrollNode.Handle(c.Request().Context(), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/nodes/"+res.ID)
	if res.Noop {
		// A node enrolls at every start; the same node with the same keys is already enrolled.
		return s.written(c, http.StatusOK, res)
	}
	return s.written(c, http.StatusCreated, res)
}

func (s *Server) listNodes(c echo.Context) error {
	q, err := newQuery(c, "state", "name", "limit", "cursor", "wait_for")
	if err != nil {
		return err
	}
	p, err := q.page("nodes")
	if err != nil {
		return err
	}
	state, err := q.oneOf("state", "", "joined", "draining", "left")
	if err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjNodes, commands.ActRead); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Nodes); err != nil {
		return err
	}
	var w where
	if state != "" {
		w.add("state = ?", state)
	}
	if v := q.str("name"); v != "" {
		w.add("name = ?", v)
	}
	if p.cursor != nil {
		name, err := p.cursorString(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		w.add("(name, node_id) > (?, ?::uuid)", name, id)
	}
	rows, err := selectRows[Node](c.Request().Context(), s, "list nodes", nodeColumns+w.sql()+" ORDER BY name, node_id"+w.limit(p), w.args...)
	if err != nil {
		return err
	}
	s.withLiveness(rows)
	return c.JSON(http.StatusOK, listOf(p, rows, func(n Node) []any { return []any{n.Name, n.ID} }))
}

func (s *Server) getNode(c echo.Context) error {
	if _, err := newQuery(c, "wait_for"); err != nil {
		return err
	}
	if err := s.platform(c, commands.ObjNodes, commands.ActRead); err != nil {
		return err
	}
	if err := s.waitFor(c, projections.Nodes); err != nil {
		return err
	}
	id := c.Param("id")
	if !domain.ValidID(id) {
		return fmt.Errorf("node %q: %w", id, domain.ErrNotFound)
	}
	n, err := selectOne[Node](c.Request().Context(), s, "get node", "node "+id, nodeColumns+" WHERE node_id = $1::uuid", id)
	if err != nil {
		return err
	}
	one := []Node{n}
	s.withLiveness(one)
	c.Response().Header().Set(headerETag, etag(n.Version))
	return c.JSON(http.StatusOK, one[0])
}

func (s *Server) drainNode(c echo.Context) error {
	if _, err := newQuery(c); err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.DrainNode.Handle(c.Request().Context(), commands.DrainNode{NodeID: c.Param("id")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}

func (s *Server) removeNode(c echo.Context) error {
	q, err := newQuery(c, "reason")
	if err != nil {
		return err
	}
	res, err := s.cfg.Service.Handlers.RemoveNode.Handle(c.Request().Context(), commands.RemoveNode{NodeID: c.Param("id"), Reason: q.str("reason")})
	if err != nil {
		return err
	}
	return s.written(c, http.StatusOK, res)
}
