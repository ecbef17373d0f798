package bustest_test

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Each node's Routes puts the tunnels it holds into the bucket when an agent takes one, deletes
// an entry when the tunnel's last session ends and all of them when it stops; every other node
// sees them come and go. Entries anyone else writes are decoded as hostile: malformed ones never
// reach the table.
func TestRouteTableCarriesWhichNodeHoldsWhichTunnel(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	env := startNATS(t, controlbus.StreamsConfig{})
	start := func(nodeID string, table *natstest.RouteTable) *nodebus.Routes {
		r, err := nodebus.NewRoutes(nodebus.RoutesConfig{Names: nm(t), Conn: connect(t, env.url()), NodeID: nodeID,
			PeerURL: "ws://" + nodeID[:8] + ".test:8081/v1/peer", Table: table, Interval: 100 * time.Millisecond, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
		return r
	}
	aID, bID := uuid.NewString(), uuid.NewString()
	a, b := natstest.NewRouteTable(), natstest.NewRouteTable()
	start(aID, a)
	rb := start(bID, b)
	t1, t2 := uuid.NewString(), uuid.NewString()
	b.Hold(t1, t2)
	want := map[string]string{t1 + "." + bID: "ws://" + bID[:8] + ".test:8081/v1/peer", t2 + "." + bID: "ws://" + bID[:8] + ".test:8081/v1/peer"}
	poll.Until(t, 10*time.Second, "a sees b's tunnels", func() bool { return maps.Equal(a.Snapshot(), want) })
	// b's Routes hands the table b's own entries too (the node ignores them), as its watch brings
	// them back: a moment after a saw them, or before.
	poll.Until(t, 10*time.Second, "b's own entries in b's table", func() bool { _, ok := b.Snapshot()[t1+"."+bID]; return ok })

	// Forged and malformed entries are refused before the table.
	js, _ := jetstream.New(connect(t, env.url()))
	kv, err := js.KeyValue(ctx, nm(t).RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	other := uuid.NewString()
	for key, value := range map[string]string{
		t1 + "." + other:   `{"node_id":"` + aID + `","peer_url":"ws://x/v1/peer"}`, // names another node than its key
		t1 + ".not-a-node": `{"node_id":"not-a-node","peer_url":"ws://x/v1/peer"}`,
		t2 + "." + other:   `{"node_id":"` + other + `","peer_url":"http://x/v1/peer"}`,
		t2 + ".x" + other:  fmt.Sprintf(`{"node_id":"%s","peer_url":"ws://%s/"}`, other, strings.Repeat("a", 1500)), // over an entry's size, under the stream's limit
	} {
		if _, err := kv.Put(ctx, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	good := uuid.NewString()
	if _, err := kv.Put(ctx, wire.RouteKey(t1, good), []byte(`{"node_id":"`+good+`","peer_url":"wss://g.test/v1/peer"}`)); err != nil {
		t.Fatal(err)
	}
	want[t1+"."+good] = "wss://g.test/v1/peer"
	poll.Until(t, 10*time.Second, "the well-formed entry, and only it, in a's table", func() bool { return maps.Equal(a.Snapshot(), want) })

	b.Hold(t2) // t1's last session on b ended
	delete(want, t1+"."+bID)
	poll.Until(t, 10*time.Second, "b's entry for t1 deleted", func() bool { return maps.Equal(a.Snapshot(), want) })
	rb.Stop() // a stopping node takes its entries with it
	delete(want, t2+"."+bID)
	poll.Until(t, 10*time.Second, "b's entries deleted at its stop", func() bool { return maps.Equal(a.Snapshot(), want) })
}

// Every node writes the route table, so none may wipe it: its stream refuses roll-ups ("Nats-Rollup:
// all" on a node's own key) and purges, while puts and delete markers go on. A bucket made before
// (roll-ups allowed) is sealed when the control plane ensures its streams again, ensuring a sealed
// one again changes nothing, and the nodes' Routes work on it as on a new one.
func TestRouteTableCannotBeWiped(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	names := nm(t)
	env := startNATS(t, controlbus.StreamsConfig{})
	nc := connect(t, env.url())
	j := js(t, nc)
	// Made the old way, then ensured: sealed.
	if err := j.DeleteKeyValue(ctx, names.RoutesBucket()); err != nil {
		t.Fatal(err)
	}
	if _, err := j.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.RoutesBucket(), History: 1, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := controlbus.EnsureStreams(ctx, j, controlbus.StreamsConfig{Names: names}); err != nil {
			t.Fatalf("ensure streams over the bucket: %v", err)
		}
	}
	kv, err := j.KeyValue(ctx, names.RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	tun, a, b := uuid.NewString(), uuid.NewString(), uuid.NewString()
	revs := map[string]uint64{}
	for _, n := range []string{a, b} {
		if revs[n], err = kv.Put(ctx, wire.RouteKey(tun, n), []byte(`{"node_id":"`+n+`","peer_url":"ws://x.test/v1/peer"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, rollup := range []string{"all", "sub"} {
		m := nats.NewMsg("$KV." + names.RoutesBucket() + "." + wire.RouteKey(tun, a))
		m.Header.Set(jetstream.MsgRollup, rollup)
		if _, err := j.PublishMsg(ctx, m); !natstest.RefusedByStream(err, natstest.ErrRollupFailed) {
			t.Errorf("a roll-up (%s) on node a's own key: err = %v, want the stream's refusal (%d)", rollup, err, natstest.ErrRollupFailed)
		}
	}
	st, err := j.Stream(ctx, "KV_"+names.RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	// Bounded: a node flooding the table fills at most RoutesMaxBytes, an entry at most a
	// route's size (and a delete marker's headers).
	if cfg := st.CachedInfo().Config; cfg.MaxBytes != controlbus.RoutesMaxBytes || cfg.MaxMsgSize != wire.MaxRouteEntry+1024 {
		t.Errorf("route table stream limits: %d bytes, messages of %d, want %d and %d", cfg.MaxBytes, cfg.MaxMsgSize, controlbus.RoutesMaxBytes, wire.MaxRouteEntry+1024)
	}
	if _, err := kv.Put(ctx, wire.RouteKey(tun, a), make([]byte, wire.MaxRouteEntry+2048)); err == nil {
		t.Error("an entry larger than the stream's message limit was taken")
	}
	if err := st.Purge(ctx); !natstest.RefusedByStream(err, natstest.ErrPurgeFailed) {
		t.Errorf("purging the route table's stream: err = %v, want the stream's refusal (%d)", err, natstest.ErrPurgeFailed)
	}
	if err := kv.Purge(ctx, wire.RouteKey(tun, a)); !natstest.RefusedByStream(err, natstest.ErrRollupFailed) {
		t.Errorf("kv.Purge (a roll-up of one key): err = %v, want the stream's refusal (%d)", err, natstest.ErrRollupFailed)
	}
	if e, err := kv.Get(ctx, wire.RouteKey(tun, a)); err != nil || e.Revision() != revs[a] {
		t.Fatalf("node a's entry after the refused roll-ups: %v", err)
	}
	if err := kv.Delete(ctx, wire.RouteKey(tun, a)); err != nil {
		t.Fatalf("a node deleting its own entry: %v", err)
	}
	if e, err := kv.Get(ctx, wire.RouteKey(tun, b)); err != nil || e.Revision() != revs[b] {
		t.Fatalf("node b's entry after all that: %v", err)
	}

	// The nodes' Routes on the sealed bucket: c puts and deletes its entries, d sees them and
	// b's.
	start := func(nodeID string, table *natstest.RouteTable) {
		r, err := nodebus.NewRoutes(nodebus.RoutesConfig{Names: names, Conn: connect(t, env.url()), NodeID: nodeID,
			PeerURL: "ws://" + nodeID[:8] + ".test/v1/peer", Table: table, Interval: 100 * time.Millisecond, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
	}
	c, d := uuid.NewString(), uuid.NewString()
	ct, dt := natstest.NewRouteTable(), natstest.NewRouteTable()
	start(c, ct)
	start(d, dt)
	ct.Hold(tun)
	want := map[string]string{wire.RouteKey(tun, b): "ws://x.test/v1/peer", wire.RouteKey(tun, c): "ws://" + c[:8] + ".test/v1/peer"}
	poll.Until(t, 10*time.Second, "d sees b's and c's entries", func() bool { return maps.Equal(dt.Snapshot(), want) })
	ct.Hold()
	delete(want, wire.RouteKey(tun, c))
	poll.Until(t, 10*time.Second, "c's entry deleted", func() bool { return maps.Equal(dt.Snapshot(), want) })
	if _, err := kv.Get(ctx, wire.RouteKey(tun, c)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("c's entry after its delete: err = %v, want ErrKeyNotFound", err)
	}
}
