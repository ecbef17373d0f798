package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Any node serves any tunnel: a call entering at a node without the tunnel's agent is forwarded
// to the node holding it, with streams, WebSockets and large bodies intact across the hop.
func TestCallsThroughANodeWithoutTheAgent(t *testing.T) {
	t.Parallel()
	c := newFwdCluster(t, 5*time.Second)
	a, aReg := c.node("ingress")
	b, _ := c.node("holder")
	_, tok := c.tunnel("llm", a, b)
	c.agent(tok, b.URL+"/v1/agent")
	c.served(a.URL, "llm")
	if len(a.Node.Sessions()) != 0 {
		t.Fatal("the agent holds the ingress node; the test needs it elsewhere")
	}

	// An event stream arrives as the upstream writes it, not at its end.
	start := time.Now()
	resp, err := c.call(a.URL, http.MethodGet, "llm", "/sse", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	var at []time.Duration
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			at = append(at, time.Since(start))
		}
	}
	resp.Body.Close()
	if len(at) != sseEvents {
		t.Fatalf("%d events of %d", len(at), sseEvents)
	}
	if spread := at[len(at)-1] - at[0]; spread < (sseEvents-1)*sseGap*8/10 {
		t.Fatalf("events arrived together (%v apart in all): the hop buffered the stream; at %v", spread, at)
	}

	// A WebSocket passes through both nodes.
	h := http.Header{"Authorization": {"Bearer " + c.alice}}
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(a.URL)+"/t/llm.acme/ws", h)
	if err != nil {
		t.Fatalf("websocket through the ingress node: %v", err)
	}
	for i := range 3 {
		msg := strings.Repeat("x", 1+i*70000)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil || string(got) != "echo: "+msg {
			t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
		}
	}
	ws.Close()

	// 64 MiB streamed (chunked) through the hop, checksummed at the upstream.
	const size = 64 << 20
	sum := sha256.New()
	body := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), size), sum)
	resp, err = c.call(a.URL, http.MethodPost, "llm", "/sum", struct{ io.Reader }{body})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != hex.EncodeToString(sum.Sum(nil)) {
		t.Fatalf("64 MiB POST: %d %s", resp.StatusCode, got)
	}
	if n := counter(t, aReg, "tunnelplane_node_forwarded_calls_total"); n < 4 {
		t.Fatalf("forwarded calls counted at the ingress: %v", n)
	}
}

// A node that was removed, or never enrolled, attracts no call however the route table names
// it, and a node holding an agent takes no call from a removed node.
func TestARemovedOrUnknownNodeAttractsNoCalls(t *testing.T) {
	t.Parallel()
	c := newFwdCluster(t, time.Second)
	a, aReg := c.node("ingress")
	b, bReg := c.node("holder")
	d, dReg := c.node("removed")
	tunID, tok := c.tunnel("llm", a, b, d)
	_, tok2 := c.tunnel("other", a, b, d)
	c.agent(tok, d.URL+"/v1/agent")  // only on the node about to be removed
	c.agent(tok2, b.URL+"/v1/agent") // only on an enrolled one
	c.served(a.URL, "llm")
	c.served(d.URL, "other")

	if _, err := c.cp.Service.Handlers.RemoveNode.Handle(c.as("root"), commands.RemoveNode{NodeID: d.ID.ID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the nodes' views hold d removed", func() bool {
		return len(a.View.NodeKeys(d.ID.ID)) == 0 && len(b.View.NodeKeys(d.ID.ID)) == 0
	})
	// Anyone who may write to the bucket: an entry for a node id nobody enrolled, at d's address,
	// next to the one d itself keeps writing.
	nc, err := nats.Connect(c.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	names, _ := wire.NewNames(c.cluster)
	kv, err := js.KeyValue(c.ctx, names.RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	routes := regGauge(t, aReg, "tunnelplane_node_peer_routes")
	ghost := uuid.Must(uuid.NewV7()).String()
	forged, _ := json.Marshal(wire.RouteEntry{NodeID: ghost, PeerURL: wsURL(d.URL) + "/v1/peer", At: time.Now()})
	if _, err := kv.Put(c.ctx, wire.RouteKey(tunID, ghost), forged); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "the forged entry in the ingress node's table", func() bool {
		return regGauge(t, aReg, "tunnelplane_node_peer_routes") == routes+1
	})
	served := counter(t, dReg, "tunnelplane_node_peer_calls_total", "outcome", "served")
	for range 5 {
		if status, body := c.get(a.URL, "llm", "/hello"); status != http.StatusServiceUnavailable {
			t.Fatalf("a call for the removed node's tunnel: %d %s, want 503", status, body)
		}
	}
	if now := counter(t, dReg, "tunnelplane_node_peer_calls_total", "outcome", "served"); now != served {
		t.Fatalf("the removed node took %v forwarded calls", now-served)
	}

	// The removed node still authorises its own callers, but the holding node refuses what it
	// forwards: the call waits out its failover wait and is answered 503.
	if status, body := c.get(d.URL, "other", "/hello"); status != http.StatusServiceUnavailable {
		t.Fatalf("a call forwarded by the removed node: %d %s, want 503", status, body)
	}
	if counter(t, bReg, "tunnelplane_node_peer_refused_total", "reason", "not_enrolled") == 0 {
		t.Fatal("the holding node counted no refused peer")
	}
	if status, _ := c.get(a.URL, "other", "/hello"); status != http.StatusOK {
		t.Fatalf("an enrolled node's forwarded call: %d", status)
	}
}
