package api

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// Node is a data-plane node as the nodes view holds it.
type Node struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	State              string    `json:"state"`
	Lost               bool      `json:"lost"`
	HostKey            string    `json:"host_key"`
	HostKeyFingerprint string    `json:"host_key_fingerprint"`
	EventKeyID         string    `json:"event_key_id"`
	AgentURL           string    `json:"agent_url,omitempty"`
	IngressURL         string    `json:"ingress_url,omitempty"`
	EnrolledAt         time.Time `json:"enrolled_at"`
	UpdatedAt          time.Time `json:"updated_at"`
	Version            int64     `json:"version"`
	Position           int64     `json:"position"`
	// Live and LastHeartbeat come from the node registry (NATS), when the control plane has one.
	Live          *bool      `json:"live,omitempty"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
}

func nodeOf(n readmodels.Node) Node {
	return Node{ID: n.ID, Name: n.Name, State: n.State, Lost: n.Lost, HostKey: n.HostKey, HostKeyFingerprint: n.HostKeyFingerprint,
		EventKeyID: n.EventKeyID, AgentURL: n.AgentURL, IngressURL: n.IngressURL, EnrolledAt: n.EnrolledAt, UpdatedAt: n.UpdatedAt,
		Version: n.Version, Position: n.Position}
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

// enrollNode registers a node: the body is commands.EnrollNode (the node's SSH host key and its
// fingerprint, its id, and its event key with the proof of possession it signed). The caller is a
// superadmin, or presents a node enrollment token (authenticateEnrollment).
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
	var res commands.Result
	var err error
	if raw, _ := c.Get(enrollmentTokenKey).(string); raw != "" {
		res, err = s.enrollWithToken(c, raw, in)
	} else {
		res, err = s.cfg.Service.Handlers.EnrollNode.Handle(c.Request().Context(), in)
	}
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
	f := readmodels.NodeFilter{State: state, Name: q.str("name"), Limit: p.limit + 1}
	if p.cursor != nil {
		name, err := p.cursorString(0)
		if err != nil {
			return err
		}
		id, err := p.cursorID(1)
		if err != nil {
			return err
		}
		f.After = &readmodels.NodeKey{Name: name, ID: id}
	}
	rows, err := s.cfg.ReadModels.ListNodes(c.Request().Context(), f)
	if err != nil {
		return err
	}
	nodes := convert(rows, nodeOf)
	s.withLiveness(nodes)
	return c.JSON(http.StatusOK, listOf(p, nodes, func(n Node) []any { return []any{n.Name, n.ID} }))
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
	n, err := s.cfg.ReadModels.GetNode(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	one := []Node{nodeOf(n)}
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
