package api

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/projections"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
)

// DiscoveredNode is a node an agent may hold for its tunnel.
type DiscoveredNode struct {
	ID                 string `json:"id"`
	AgentURL           string `json:"agent_url"`
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	// Priority orders the nodes for this tunnel, 1 first: rendezvous hashing of (tunnel, node),
	// so tunnels spread evenly over the nodes and a tunnel's order stays put when other nodes
	// come or go.
	Priority int `json:"priority"`
	// Weight is the node's share of new connections among equals; every node weighs the same
	// until nodes report their capacity.
	Weight int `json:"weight"`
}

// Discovery is the answer to GET /api/v1/tunnels/{id}/nodes.
type Discovery struct {
	TunnelID string           `json:"tunnel_id"`
	Items    []DiscoveredNode `json:"items"`
}

// maxDiscoveredNodes bounds the answer (an agent holds a few).
const maxDiscoveredNodes = 16

// discoverNodes tells an agent which nodes to hold: the live, joined nodes that serve agents, in
// the tunnel's order. It takes the tunnel's own agent token (only that: a user token or another
// tunnel's agent token is refused), checked as the nodes check it (signature, expiry) and
// against the tokens view (revoked).
func (s *Server) discoverNodes(c echo.Context) error {
	req := c.Request()
	scheme, raw, _ := strings.Cut(req.Header.Get(echo.HeaderAuthorization), " ")
	raw = strings.TrimSpace(raw)
	if !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return &authError{code: "invalid_request", detail: "send Authorization: Bearer <agent token>"}
	}
	claims, err := s.auth.verifyAgent(req.Context(), raw)
	if err != nil {
		return &authError{code: "invalid_token", detail: token.Reason(err)}
	}
	if claims.Tunnel != c.Param("id") {
		return fmt.Errorf("%w: this agent token is for another tunnel", commands.ErrForbidden)
	}
	if _, err := newQuery(c); err != nil {
		return err
	}
	t, err := s.cfg.ReadModels.GetAgentToken(req.Context(), claims.Org, claims.ID)
	if errors.Is(err, domain.ErrNotFound) {
		// Issued a moment ago: let the tokens view reach what the log holds now, once.
		if err := s.catchUp(req.Context(), projections.AgentTokens); err != nil {
			return err
		}
		t, err = s.cfg.ReadModels.GetAgentToken(req.Context(), claims.Org, claims.ID)
	}
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return &authError{code: "invalid_token", detail: "the agent token is not in the log"}
	case err != nil:
		return err
	case t.State != readmodels.TokenActive:
		return &authError{code: "invalid_token", detail: "the agent token is " + t.State}
	}
	rows, err := s.cfg.ReadModels.ListNodes(req.Context(), readmodels.NodeFilter{State: readmodels.NodeJoined, Limit: 500})
	if err != nil {
		return err
	}
	nodes := convert(rows, nodeOf)
	s.withLiveness(nodes)
	out := Discovery{TunnelID: claims.Tunnel, Items: []DiscoveredNode{}}
	for _, n := range nodes {
		if n.AgentURL == "" || n.Lost || (n.Live != nil && !*n.Live) {
			continue
		}
		out.Items = append(out.Items, DiscoveredNode{ID: n.ID, AgentURL: n.AgentURL, HostKeyFingerprint: n.HostKeyFingerprint, Weight: 100})
	}
	slices.SortFunc(out.Items, func(a, b DiscoveredNode) int {
		return -cmpScore(rendezvous(claims.Tunnel, a.ID), rendezvous(claims.Tunnel, b.ID), a.ID, b.ID)
	})
	if len(out.Items) > maxDiscoveredNodes {
		out.Items = out.Items[:maxDiscoveredNodes]
	}
	for i := range out.Items {
		out.Items[i].Priority = i + 1
	}
	return c.JSON(http.StatusOK, out)
}

// rendezvous is the (tunnel, node) score of highest-random-weight hashing.
func rendezvous(tunnel, node string) uint64 {
	h := sha256.Sum256([]byte(tunnel + "\x00" + node))
	return binary.BigEndian.Uint64(h[:8])
}

func cmpScore(a, b uint64, idA, idB string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return -strings.Compare(idA, idB)
}

// verifyAgent checks an agent token with the token keys (internal only: agents never hold
// tokens of an external identity provider).
func (a *authenticator) verifyAgent(ctx context.Context, raw string) (*token.AgentClaims, error) {
	if !a.internal.has(peekKID(raw)) {
		_ = a.internal.refresh(ctx, false) // a key rotated a moment ago
	}
	return a.internalV.VerifyAgent(raw)
}
