package wire

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
)

// RouteEntry is a node's word that it holds an agent of a tunnel, in RoutesBucket under
// RouteKey(tunnel, node): the node's id, where peers reach it (PeerURL, a ws:// or wss:// URL
// of its peer endpoint) and when it wrote it. Anyone who may publish to the bucket can write
// one: a reader decodes it with ParseRouteEntry, and a node forwards a call only to a node
// whose enrolled key its verified view holds, over a connection that proves that key.
type RouteEntry struct {
	NodeID  string    `json:"node_id"`
	PeerURL string    `json:"peer_url"`
	At      time.Time `json:"at"`
}

// MaxRouteEntry bounds an entry's encoded size; MaxPeerURL its URL.
const (
	MaxRouteEntry = 1024
	MaxPeerURL    = 512
)

// RouteKey is the key of the entry saying that nodeID holds an agent of tunnelID.
func RouteKey(tunnelID, nodeID string) string { return tunnelID + "." + nodeID }

// ParseRouteKey splits a route key into its tunnel and node ids (both UUIDs).
func ParseRouteKey(key string) (tunnelID, nodeID string, err error) {
	t, nd, ok := strings.Cut(key, ".")
	if !ok || !domain.ValidID(t) || !domain.ValidID(nd) {
		return "", "", fmt.Errorf("%w: route key is not <tunnel id>.<node id>", ErrMalformed)
	}
	return t, nd, nil
}

// ParseRouteEntry decodes the value under key: a bounded JSON object whose node is the key's,
// whose URL is a ws:// or wss:// URL with a host and no user info, query or fragment.
func ParseRouteEntry(key string, value []byte) (tunnelID string, e RouteEntry, err error) {
	tunnelID, nodeID, err := ParseRouteKey(key)
	if err != nil {
		return "", RouteEntry{}, err
	}
	if len(value) > MaxRouteEntry {
		return "", RouteEntry{}, fmt.Errorf("%w: route entry of %d bytes", ErrMalformed, len(value))
	}
	if err := json.Unmarshal(value, &e); err != nil {
		return "", RouteEntry{}, fmt.Errorf("%w: route entry: %w", ErrMalformed, err)
	}
	if e.NodeID != nodeID {
		return "", RouteEntry{}, fmt.Errorf("%w: route entry names another node than its key", ErrMalformed)
	}
	if err := CheckPeerURL(e.PeerURL); err != nil {
		return "", RouteEntry{}, err
	}
	return tunnelID, e, nil
}

// CheckPeerURL accepts a node's peer endpoint as route entries carry it.
func CheckPeerURL(raw string) error {
	if len(raw) == 0 || len(raw) > MaxPeerURL {
		return fmt.Errorf("%w: peer URL of %d bytes", ErrMalformed, len(raw))
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%w: peer URL is not a ws:// or wss:// URL of a host", ErrMalformed)
	}
	return nil
}
