package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/wire"
)

const (
	routeTunnel = "0190a3b2-7c1d-7e8f-9a0b-1c2d3e4f5a6b"
	routeNode   = "6f1c8a52-8b0e-4d55-9c43-0e6f7f3c2a19"
)

func realRouteEntry(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(wire.RouteEntry{NodeID: routeNode, PeerURL: "ws://10.0.0.7:8443/v1/peer", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRouteEntriesAreChecked(t *testing.T) {
	key := wire.RouteKey(routeTunnel, routeNode)
	tunnel, e, err := wire.ParseRouteEntry(key, realRouteEntry(t))
	if err != nil || tunnel != routeTunnel || e.NodeID != routeNode || e.PeerURL != "ws://10.0.0.7:8443/v1/peer" {
		t.Fatalf("a node's entry: %q %+v %v", tunnel, e, err)
	}
	other := "7f1c8a52-8b0e-4d55-9c43-0e6f7f3c2a19"
	for name, c := range map[string]struct{ key, value string }{
		"another node than its key": {key, `{"node_id":"` + other + `","peer_url":"ws://a/v1/peer"}`},
		"a key without a node":      {routeTunnel, `{"node_id":"` + routeNode + `","peer_url":"ws://a/v1/peer"}`},
		"a key that is no id":       {"x." + routeNode, `{"node_id":"` + routeNode + `","peer_url":"ws://a/v1/peer"}`},
		"http URL":                  {key, `{"node_id":"` + routeNode + `","peer_url":"http://a/v1/peer"}`},
		"URL with user info":        {key, `{"node_id":"` + routeNode + `","peer_url":"ws://u:p@a/v1/peer"}`},
		"URL with a query":          {key, `{"node_id":"` + routeNode + `","peer_url":"ws://a/v1/peer?x=1"}`},
		"URL without a host":        {key, `{"node_id":"` + routeNode + `","peer_url":"ws:///v1/peer"}`},
		"huge URL":                  {key, `{"node_id":"` + routeNode + `","peer_url":"ws://a/` + strings.Repeat("a", 600) + `"}`},
		"huge entry":                {key, `{"node_id":"` + routeNode + `","peer_url":"ws://a/v1/peer","x":"` + strings.Repeat("a", 2000) + `"}`},
		"not JSON":                  {key, `ws://a`},
	} {
		if _, _, err := wire.ParseRouteEntry(c.key, []byte(c.value)); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzParseRouteEntry(f *testing.F) {
	f.Add(wire.RouteKey(routeTunnel, routeNode), realRouteEntry(f))
	f.Add(routeTunnel+"."+routeNode, []byte(`{"node_id":"`+routeNode+`","peer_url":"wss://n1.example:443/v1/peer"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		tunnel, e, err := wire.ParseRouteEntry(key, value)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if wire.RouteKey(tunnel, e.NodeID) != key || wire.CheckPeerURL(e.PeerURL) != nil || len(e.PeerURL) > wire.MaxPeerURL {
			t.Fatalf("accepted %q %q as %q %+v", key, value, tunnel, e)
		}
	})
}
