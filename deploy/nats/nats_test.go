package natsdeploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

func newNodeID() string { return uuid.Must(uuid.NewV7()).String() }

// relayed is the message the relay publishes for a record at pos (controlbus's relayMessage is
// unexported; this builds the same subject, headers and body with wire's exported encoder).
func relayed(t testing.TB, names wire.Names, pos uint64, typ string) (*nats.Msg, uuid.UUID) {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	payload := json.RawMessage(`{"tunnel_id":"` + uuid.NewString() + `"}`)
	rec := &eventstore.Record{Position: pos, StreamID: "tunnel-" + uuid.NewString(), StreamVersion: 1, EventID: id, Type: typ,
		SchemaVersion: 1, StoredSchemaVersion: 1, Payload: payload, StoredPayload: payload, Metadata: json.RawMessage(`{}`),
		RecordedAt: time.Now()}
	body, err := wire.EncodeRelayedEvent(rec, "")
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(wire.HeaderPosition, strconv.FormatUint(pos, 10))
	h.Set(wire.HeaderType, typ)
	h.Set(wire.HeaderStreamID, rec.StreamID)
	h.Set(jetstream.MsgIDHeader, id.String()+".0011223344556677")
	return &nats.Msg{Subject: names.EventSubject(typ), Data: body, Header: h}, id
}

// A node's credential publishes its own facts and heartbeat and nothing the control plane sends
// or another node owns; each refusal is a permission violation the server reports, and leaves
// JetStream as it was.
func TestNodeCredentialIsConfinedToItsOwnSubjects(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	self, other := newNodeID(), newNodeID()
	d := deploy(t, self, other)
	control := d.dialControl(t)
	node := d.dialNode(t, self)

	// Its own facts land in TP_NODEFACTS (as the Publisher sends them: JetStream publish,
	// Nats-Msg-Id, expected stream).
	facts := &nats.Msg{Subject: def.NodeFactsSubject(self), Data: []byte("batch"), Header: nats.Header{}}
	ack, err := node.js.PublishMsg(ctx, facts, jetstream.WithMsgID(uuid.NewString()), jetstream.WithExpectStream(def.NodeFactsStream()))
	if err != nil {
		t.Fatalf("node publishing its own facts: %v", err)
	}
	if ack.Stream != def.NodeFactsStream() {
		t.Fatalf("own facts acknowledged by stream %q, want %s", ack.Stream, def.NodeFactsStream())
	}
	if n := subjectCount(ctx, t, control.js, def.NodeFactsStream(), def.NodeFactsSubject(self)); n != 1 {
		t.Fatalf("TP_NODEFACTS holds %d messages on %s, want 1", n, def.NodeFactsSubject(self))
	}
	// Its own heartbeat key (the Heartbeater's kv.Put).
	kv, err := node.js.KeyValue(ctx, def.NodesBucket())
	if err != nil {
		t.Fatalf("node opening %s: %v", def.NodesBucket(), err)
	}
	if _, err := kv.Put(ctx, self, []byte(`{"node_id":"`+self+`"}`)); err != nil {
		t.Fatalf("node putting its own heartbeat: %v", err)
	}
	node.noViolations(t)

	// Routes: each node's Routes, under its own credential, puts the tunnels it holds and sees
	// the other's (an ordered pull consumer on the bucket's stream).
	tunnel := uuid.NewString()
	tables := map[string]*natstest.RouteTable{}
	var routers []*client
	var stops []func()
	for _, id := range []string{self, other} {
		tables[id] = natstest.NewRouteTable(tunnel)
		c := d.dialNode(t, id)
		routers = append(routers, c)
		rt, err := nodebus.NewRoutes(nodebus.RoutesConfig{Names: def, Conn: c.nc, NodeID: id, PeerURL: "ws://" + id[:8] + ".test/v1/peer",
			Table: tables[id], Interval: 100 * time.Millisecond, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rt.Stop)
		stops = append(stops, rt.Stop)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := tables[self].Get(wire.RouteKey(tunnel, other)); got != "ws://"+other[:8]+".test/v1/peer" {
			return fmt.Errorf("node %s sees the other node's route as %q", self, got)
		}
		if got := tables[other].Get(wire.RouteKey(tunnel, self)); got != "ws://"+self[:8]+".test/v1/peer" {
			return fmt.Errorf("node %s sees this node's route as %q", other, got)
		}
		return nil
	})
	// Stopped (their entries deleted), so that the route table's stream holds still while the
	// refusals below are checked against it.
	for _, stop := range stops {
		stop()
	}
	for _, c := range routers {
		c.noViolations(t)
	}

	refusedPublishes := []struct {
		name    string
		subject string
		header  map[string]string
	}{
		// Flow 1: only the relay publishes the log.
		{"a relayed event", def.EventSubject(domain.TypeRoleAssigned),
			map[string]string{wire.HeaderPosition: "0", wire.HeaderType: domain.TypeRoleAssigned, jetstream.MsgIDHeader: uuid.NewString()}},
		{"a relayed key event", def.EventSubject(eventstore.TypeKeyAdded), nil},
		// Flow 3: only the control plane commands.
		{"a disconnect command", def.CommandTopic(wire.CommandDisconnectAgent), map[string]string{"name": wire.CommandDisconnectAgent}},
		{"a drain command", def.CommandTopic(wire.CommandDrainNode), map[string]string{"name": wire.CommandDrainNode}},
		{"an unknown command", def.CommandTopic("grant_superadmin"), nil},
		// Another node's facts and heartbeat.
		{"another node's facts", def.NodeFactsSubject(other), map[string]string{jetstream.MsgIDHeader: uuid.NewString()}},
		{"another node's heartbeat", "$KV." + def.NodesBucket() + "." + other, nil},
		{"a heartbeat under a made-up key", "$KV." + def.NodesBucket() + ".not-a-node", nil},
		{"another node's route", "$KV." + def.RoutesBucket() + "." + wire.RouteKey(uuid.NewString(), other), nil},
		{"a route under a made-up key", "$KV." + def.RoutesBucket() + ".everything", nil},
		{"purging the route table", "$JS.API.STREAM.PURGE.KV_" + def.RoutesBucket(), nil},
		{"deleting a route", "$JS.API.STREAM.MSG.DELETE.KV_" + def.RoutesBucket(), nil},
		// Stream management and other nodes' consumers.
		{"deleting TP_EVENTS", "$JS.API.STREAM.DELETE." + def.EventsStream(), nil},
		{"purging TP_NODEFACTS", "$JS.API.STREAM.PURGE." + def.NodeFactsStream(), nil},
		{"changing TP_COMMANDS", "$JS.API.STREAM.UPDATE." + def.CommandsStream(), nil},
		{"reading TP_NODEFACTS", "$JS.API.STREAM.MSG.GET." + def.NodeFactsStream(), nil},
		{"deleting a heartbeat", "$JS.API.STREAM.MSG.DELETE.KV_" + def.NodesBucket(), nil},
		{"a consumer on TP_NODEFACTS", "$JS.API.CONSUMER.CREATE." + def.NodeFactsStream() + ".spy", nil},
		{"another node's command consumer",
			"$JS.API.CONSUMER.CREATE." + def.CommandsStream() + ".tp_node_" + other + "_drain_node." + def.CommandTopic(wire.CommandDrainNode), nil},
		{"deleting another node's command consumer", "$JS.API.CONSUMER.DELETE." + def.CommandsStream() + ".tp_node_" + other + "_drain_node", nil},
		{"acknowledging another node's command", "$JS.ACK." + def.CommandsStream() + ".tp_node_" + other + "_drain_node.1.1.1.1700000000000000000.0", nil},
	}
	for _, tc := range refusedPublishes {
		t.Run("publish/"+tc.name, func(t *testing.T) {
			before := jetStreamState(ctx, t, control.js)
			msg := &nats.Msg{Subject: tc.subject, Reply: node.nc.NewRespInbox(), Data: []byte(`{}`), Header: nats.Header{}}
			for k, v := range tc.header {
				msg.Header.Set(k, v)
			}
			if err := node.nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			node.refusedTo(t, "Publish", tc.subject)
			if after := jetStreamState(ctx, t, control.js); after != before {
				t.Errorf("JetStream changed although the publish was refused:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}

	// The ordered consumer's delete on reset is allowed (no violation) but reaches nothing: a
	// node cannot delete another node's consumer on TP_EVENTS.
	t.Run("delete another node's TP_EVENTS consumer", func(t *testing.T) {
		if _, err := control.js.CreateConsumer(ctx, def.EventsStream(), jetstream.ConsumerConfig{Name: "another_nodes_view",
			FilterSubject: def.EventsSubjects(), AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute}); err != nil {
			t.Fatal(err)
		}
		before, seen := jetStreamState(ctx, t, control.js), len(node.rec.all())
		if _, err := node.nc.Request("$JS.API.CONSUMER.DELETE."+def.EventsStream()+".another_nodes_view", nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("delete of another node's consumer: err = %v, want no responders", err)
		}
		if after := jetStreamState(ctx, t, control.js); after != before {
			t.Errorf("JetStream changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if err := node.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if v := node.rec.all(); len(v) != seen {
			t.Errorf("the delete drew a permission violation: %q", v[seen:])
		}
	})

	refusedSubscriptions := []struct{ name, subject string }{
		{"every node's facts", "nodefacts.>"},
		{"another node's facts", def.NodeFactsSubject(other)},
		{"another node's command deliveries", "_tp.cmd." + other + ".>"},
		{"heartbeats as they are put", "$KV." + def.NodesBucket() + ".>"},
		{"routes as they are put", "$KV." + def.RoutesBucket() + ".>"},
		{"everything", ">"},
	}
	for _, tc := range refusedSubscriptions {
		t.Run("subscribe/"+tc.name, func(t *testing.T) {
			sub, err := node.nc.SubscribeSync(tc.subject)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			node.refusedTo(t, "Subscription", tc.subject)
		})
	}

	// What was refused changed nothing; what was allowed is there.
	if n := subjectCount(ctx, t, control.js, def.NodeFactsStream(), def.NodeFactsSubject(other)); n != 0 {
		t.Errorf("TP_NODEFACTS holds %d messages on the other node's subject", n)
	}
	ckv, err := control.js.KeyValue(ctx, def.NodesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ckv.Get(ctx, other); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the other node's heartbeat key: err = %v, want ErrKeyNotFound", err)
	}
	if e, err := ckv.Get(ctx, self); err != nil || !strings.Contains(string(e.Value()), self) {
		t.Errorf("own heartbeat: %v", err)
	}
	control.noViolations(t)
}

// A node's credential writes and deletes route entries under keys naming itself, reads every
// node's, and cannot wipe the table: another node's key and the purge API are permission
// violations, and the roll-up it may publish on its own key (Nats-Rollup: all would purge the
// whole bucket) is refused by the bucket's stream, which EnsureStreams made with DenyPurge.
func TestNodeWritesOnlyItsOwnRoutesAndCannotWipeTheTable(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	a, b := newNodeID(), newNodeID()
	d := deploy(t, a, b)
	control := d.dialControl(t)
	nodeA, nodeB := d.dialNode(t, a), d.dialNode(t, b)
	tunnel := uuid.NewString()
	keyA, keyB := wire.RouteKey(tunnel, a), wire.RouteKey(tunnel, b)
	entry := func(id string) []byte {
		return []byte(`{"node_id":"` + id + `","peer_url":"ws://` + id[:8] + `.test/v1/peer","at":"2026-01-01T00:00:00Z"}`)
	}
	openKV := func(c *client) jetstream.KeyValue {
		kv, err := c.js.KeyValue(ctx, def.RoutesBucket())
		if err != nil {
			t.Fatalf("%s opening %s: %v", c.name, def.RoutesBucket(), err)
		}
		return kv
	}
	kvA, kvC := openKV(nodeA), openKV(control)

	// b's entry, written once by b (no refresh loop that would put it back if it were wiped).
	revB, err := openKV(nodeB).Put(ctx, keyB, entry(b))
	if err != nil {
		t.Fatalf("node b putting its own route: %v", err)
	}
	nodeB.noViolations(t)
	bIntact := func(t *testing.T, after string) {
		t.Helper()
		e, err := kvC.Get(ctx, keyB)
		if err != nil || e.Revision() != revB || string(e.Value()) != string(entry(b)) {
			t.Fatalf("node b's route after %s: err %v, entry %+v; want revision %d as b put it", after, err, e, revB)
		}
	}

	// a watches the table the way the product does (its Routes, holding no tunnel, on a
	// connection of its own) and sees b's entry, then its own as it puts and deletes it.
	watcher := d.dialNode(t, a)
	table := natstest.NewRouteTable()
	rt, err := nodebus.NewRoutes(nodebus.RoutesConfig{Names: def, Conn: watcher.nc, NodeID: a, PeerURL: "ws://" + a[:8] + ".test/v1/peer",
		Table: table, Interval: 100 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Stop)
	seen := func(key, want string) {
		t.Helper()
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			if got := table.Get(key); got != want {
				return fmt.Errorf("node a's table holds %q for %s, want %q", got, key, want)
			}
			return nil
		})
	}
	seen(keyB, "ws://"+b[:8]+".test/v1/peer")
	if _, err := kvA.Put(ctx, keyA, entry(a)); err != nil {
		t.Fatalf("node a putting its own route: %v", err)
	}
	seen(keyA, "ws://"+a[:8]+".test/v1/peer")
	if err := kvA.Delete(ctx, keyA); err != nil {
		t.Fatalf("node a deleting its own route: %v", err)
	}
	seen(keyA, "")
	if _, err := kvC.Get(ctx, keyA); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("node a's deleted route: err = %v, want ErrKeyNotFound", err)
	}
	nodeA.noViolations(t)

	// Roll-ups on its own key pass the permissions and are refused by the stream; so is kv.Purge
	// (a roll-up of one key).
	for _, rollup := range []string{"all", "sub"} {
		m := nats.NewMsg("$KV." + def.RoutesBucket() + "." + keyA)
		m.Header.Set(jetstream.MsgRollup, rollup)
		m.Data = entry(a)
		if _, err := nodeA.js.PublishMsg(ctx, m); !natstest.RefusedByStream(err, natstest.ErrRollupFailed) {
			t.Errorf("Nats-Rollup: %s on node a's own key: err = %v, want the stream's refusal (%d)", rollup, err, natstest.ErrRollupFailed)
		}
		bIntact(t, "a's roll-up "+rollup)
	}
	if err := kvA.Purge(ctx, keyA); !natstest.RefusedByStream(err, natstest.ErrRollupFailed) {
		t.Errorf("kv.Purge of node a's own key: err = %v, want the stream's refusal (%d)", err, natstest.ErrRollupFailed)
	}
	nodeA.noViolations(t)

	// b's key: a permission violation, whether put or deleted.
	for _, put := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := kvA.Put(ctx, keyB, entry(a)); return err },
		func(ctx context.Context) error { return kvA.Delete(ctx, keyB) },
	} {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := put(pctx)
		cancel()
		if err == nil {
			t.Fatal("node a wrote node b's route")
		}
		nodeA.refusedTo(t, "Publish", "$KV."+def.RoutesBucket()+"."+keyB)
		bIntact(t, "a's write to b's key")
	}

	// The purge API: a permission violation for a node; and even the control plane, which
	// manages the streams, cannot purge this one.
	purge := "$JS.API.STREAM.PURGE.KV_" + def.RoutesBucket()
	if err := nodeA.nc.PublishMsg(&nats.Msg{Subject: purge, Reply: nodeA.nc.NewRespInbox(), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	nodeA.refusedTo(t, "Publish", purge)
	st, err := control.js.Stream(ctx, "KV_"+def.RoutesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx); !natstest.RefusedByStream(err, natstest.ErrPurgeFailed) {
		t.Errorf("the control plane purging the route table: err = %v, want the stream's refusal (%d)", err, natstest.ErrPurgeFailed)
	}
	bIntact(t, "the purges")
	seen(keyB, "ws://"+b[:8]+".test/v1/peer")

	// a's consumer lost (as when a server restarts): its ordered consumer resets, deleting the
	// old one (allowed, so no violation, though not imported) and creating another, and a
	// sees b's next entry.
	consumers := st.ConsumerNames(ctx)
	var lost int
	for name := range consumers.Name() {
		if err := st.DeleteConsumer(ctx, name); err != nil {
			t.Fatal(err)
		}
		lost++
	}
	if err := consumers.Err(); err != nil || lost != 1 {
		t.Fatalf("consumers on the route table: %d (%v), want a's one", lost, err)
	}
	keyB2 := wire.RouteKey(uuid.NewString(), b)
	if _, err := openKV(nodeB).Put(ctx, keyB2, entry(b)); err != nil {
		t.Fatal(err)
	}
	seen(keyB2, "ws://"+b[:8]+".test/v1/peer")
	watcher.noViolations(t)
	nodeB.noViolations(t)
	control.noViolations(t)
}

// The control plane's credential relays the log, sends commands and reads facts, but speaks for
// no node.
func TestControlCredentialRelaysAndCommandsButSpeaksForNoNode(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	nodeID := newNodeID()
	d := deploy(t, nodeID)
	control := d.dialControl(t)

	// The relay's publish: JetStream, Nats-Msg-Id, expected stream and last sequence.
	msg, _ := relayed(t, def, 0, domain.TypeTunnelCreated)
	ack, err := control.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(def.EventsStream()), jetstream.WithExpectLastSequence(0))
	if err != nil {
		t.Fatalf("relay publish with the control credential: %v", err)
	}
	if ack.Stream != def.EventsStream() || ack.Sequence != 1 {
		t.Fatalf("relayed record acknowledged as %s #%d, want %s #1", ack.Stream, ack.Sequence, def.EventsStream())
	}
	control.noViolations(t)

	for _, subject := range []string{def.NodeFactsSubject(nodeID), "$KV." + def.NodesBucket() + "." + nodeID,
		"$KV." + def.RoutesBucket() + "." + wire.RouteKey(uuid.NewString(), nodeID)} {
		before := jetStreamState(ctx, t, control.js)
		if err := control.nc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		control.refusedTo(t, "Publish", subject)
		if after := jetStreamState(ctx, t, control.js); after != before {
			t.Errorf("JetStream changed although %s was refused:\nbefore:\n%s\nafter:\n%s", subject, before, after)
		}
	}
	// Facts reach it through JetStream only, not by listening on the subjects.
	sub, err := control.nc.SubscribeSync("nodefacts.>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	control.refusedTo(t, "Subscription", "nodefacts.>")
}

// The product's node components run under a node credential, and the control plane's under the
// control credential, without a single permission violation: the allow lists are enough for what
// each side does (heartbeat → registry watcher, facts → TP_NODEFACTS, relayed log → node view,
// command → node handler → outcome).
func TestProductRunsUnderItsCredentials(t *testing.T) {
	t.Parallel()
	nodeID := newNodeID()
	productRunsUnderItsCredentials(t, deploy(t, nodeID), nodeID)
}

// Two installations on one server, the default one and one run with --cluster prod-eu, rendered
// from one credentials list: each runs under its own credentials, and neither sees or reaches
// the other's streams or subjects.
func TestInstallationsShareAServerWithoutSeeingEachOther(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	defNode, euNode := newNodeID(), newNodeID()
	ds := deployAll(t, installation{nodeIDs: []string{defNode}}, installation{cluster: "prod-eu", nodeIDs: []string{euNode}})
	dflt, eu := ds[0], ds[1]
	if eu.names.EventsStream() != "prod-eu_TP_EVENTS" {
		t.Fatalf("the prod-eu installation's events stream is %s", eu.names.EventsStream())
	}
	t.Run("default", func(t *testing.T) { productRunsUnderItsCredentials(t, dflt, defNode) })
	t.Run("prod-eu", func(t *testing.T) { productRunsUnderItsCredentials(t, eu, euNode) })

	// Each control credential sees only its own installation's streams (JetStream is per
	// account) ...
	for _, tc := range []struct {
		d     *deployment
		other wire.Names
	}{{dflt, eu.names}, {eu, dflt.names}} {
		c := tc.d.dialControl(t)
		if _, err := c.js.Stream(ctx, tc.d.names.EventsStream()); err != nil {
			t.Errorf("%s: own stream %s: %v", c.name, tc.d.names.EventsStream(), err)
		}
		if _, err := c.js.Stream(ctx, tc.other.EventsStream()); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("%s: the other installation's %s: %v, want not found", c.name, tc.other.EventsStream(), err)
		}
	}
	// ... and a node may not publish into the other installation's subjects, under either name.
	euClient := eu.dialNode(t, euNode)
	for _, subject := range []string{dflt.names.NodeFactsSubject(defNode), dflt.names.NodeFactsSubject(euNode)} {
		if err := euClient.nc.Publish(subject, []byte("batch")); err != nil {
			t.Fatal(err)
		}
		euClient.refusedTo(t, "Publish", subject)
	}
	// The other installation's credentials do not log in as this one's.
	if nc, err := nats.Connect(eu.url("control", eu.control), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("the prod-eu control password logged in as the default control user")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("the prod-eu control password as the default control user: %v, want an authorization violation", err)
	}
}

// productRunsUnderItsCredentials runs every NATS part of the product, each with the credential
// of its side (node nodeID or the control plane) of installation d, with no permission
// violation.
func productRunsUnderItsCredentials(t *testing.T, d *deployment, nodeID string) {
	ctx := ctxT(t)
	n := d.names
	control := d.dialControl(t)
	node := d.dialNode(t, nodeID)
	log := testLogger()

	// Registry: the node's Heartbeater, the control plane's RegistryWatcher.
	watcher, err := controlbus.NewRegistryWatcher(controlbus.RegistryWatcherConfig{Names: n, Conn: control.nc, Logger: log,
		OnLost: func(string, time.Time) {}, OnRecovered: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Start(ctx); err != nil {
		t.Fatalf("registry watcher with the control credential: %v", err)
	}
	t.Cleanup(watcher.Stop)
	// The watch is flow-controlled: past 1 MiB delivered the server asks the watcher to confirm,
	// and past 2 MiB unconfirmed it stops delivering. Big heartbeats (put the Heartbeater's way,
	// under the node's own key) take it past both before the real ones follow.
	nkv, err := node.js.KeyValue(ctx, n.NodesBucket())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		big, _ := json.Marshal(wire.Heartbeat{NodeID: nodeID, Name: strings.Repeat("x", 900<<10)})
		if _, err := nkv.Put(ctx, nodeID, big); err != nil {
			t.Fatalf("a big heartbeat: %v", err)
		}
	}
	hb, err := nodebus.NewHeartbeater(nodebus.HeartbeaterConfig{Names: n, Conn: node.nc, Logger: log, Interval: 200 * time.Millisecond,
		Info: wire.Heartbeat{NodeID: nodeID, Name: "edge-1", StartedAt: time.Now().UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := hb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hb.Stop)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if live := watcher.Live(); len(live) != 1 || live[0].NodeID != nodeID || live[0].Name != "edge-1" {
			return fmt.Errorf("%d live nodes, want %s as edge-1", len(live), nodeID)
		}
		return nil
	})

	// Facts: the node's Publisher, read back the way the ingester reads them.
	key, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: n, NodeID: nodeID, Key: key, Conn: node.nc, SpoolDir: t.TempDir(),
		PublishTimeout: 2 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Stop)
	if err := pub.Publish(ctx, nodebus.Fact{Event: domain.NodeStarted{NodeID: nodeID, Version: "test"}}); err != nil {
		t.Fatalf("publish a fact: %v", err)
	}
	// Publish also returns nil when it spooled the batch: it must have gone to JetStream.
	if n := pub.SpoolDepth(); n != 0 {
		t.Fatalf("the fact was spooled (%d batches), not acknowledged by JetStream", n)
	}
	// The ingester's consumer (controlbus.Ingester needs a database; its consumer settings are
	// unexported, so this is the same kind: durable pull, nodefacts.*, explicit acks).
	ingest, err := control.js.CreateOrUpdateConsumer(ctx, n.NodeFactsStream(), jetstream.ConsumerConfig{Durable: n.IngesterConsumer(),
		FilterSubject: n.NodeFactsSubjects(), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("ingester consumer with the control credential: %v", err)
	}
	nextBatch := func() (string, []eventstore.PresignedEvent) {
		t.Helper()
		batch, err := ingest.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			events, err := wire.DecodeBatch(m.Data())
			if err != nil {
				t.Fatalf("batch on %s: %v", m.Subject(), err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ingester ack with the control credential: %v", err)
			}
			return m.Subject(), events
		}
		t.Fatalf("no batch in TP_NODEFACTS: %v", batch.Error())
		return "", nil
	}
	subject, events := nextBatch()
	if subject != n.NodeFactsSubject(nodeID) || len(events) != 1 {
		t.Fatalf("batch on %s with %d events, want one on %s", subject, len(events), n.NodeFactsSubject(nodeID))
	}
	if env, err := eventstore.DecodeEnvelope(events[0].Envelope); err != nil || env.Type != domain.TypeNodeStarted {
		t.Fatalf("fact: %+v, %v", env, err)
	}

	// The relayed log: published with the control credential, read by the node's SubscribeEvents
	// (an ordered consumer) and RelayedEventID (single message reads). Junk someone slipped in
	// is skipped and acknowledged, which the node must be allowed to do too.
	msg, eventID := relayed(t, n, 0, domain.TypeTunnelCreated)
	if _, err := control.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(n.EventsStream()), jetstream.WithExpectLastSequence(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := control.js.Publish(ctx, n.EventSubject("junk"), []byte("not a relayed event")); err != nil {
		t.Fatal(err)
	}
	subCtx, stopSub := context.WithCancel(ctx)
	var mu sync.Mutex
	var got []wire.RelayedEvent
	var skipped []uint64
	subDone := make(chan error, 1)
	go func() {
		subDone <- nodebus.SubscribeEvents(subCtx, node.js, nodebus.SubscribeEventsOptions{Names: n, Logger: log,
			SkipBad: func(seq uint64, _ error) { mu.Lock(); skipped = append(skipped, seq); mu.Unlock() }},
			func(_ context.Context, ev wire.RelayedEvent) error {
				mu.Lock()
				got = append(got, ev)
				mu.Unlock()
				return nil
			})
	}()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 1 || got[0].EventID != eventID || !slices.Equal(skipped, []uint64{2}) {
			return fmt.Errorf("node read %d events, skipped %v; want event %s and skipped [2]", len(got), skipped, eventID)
		}
		return nil
	})
	// nats.go resets an ordered consumer the server lost: it deletes the old one and creates a
	// new one from where it was. Lose it from under the node, then relay the next record.
	evStream, err := control.js.Stream(ctx, n.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	var consumers []string
	lister := evStream.ConsumerNames(ctx)
	for name := range lister.Name() {
		consumers = append(consumers, name)
	}
	if len(consumers) != 1 || lister.Err() != nil {
		t.Fatalf("consumers on TP_EVENTS: %v, %v; want the node's one", consumers, lister.Err())
	}
	if err := control.js.DeleteConsumer(ctx, n.EventsStream(), consumers[0]); err != nil {
		t.Fatal(err)
	}
	msg, nextID := relayed(t, n, 1, domain.TypeTunnelDeleted)
	if _, err := control.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(n.EventsStream()), jetstream.WithExpectLastSequence(2)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 2 || got[1].EventID != nextID {
			return fmt.Errorf("node read %d events after losing its consumer; want the next one, %s", len(got), nextID)
		}
		return nil
	})
	stopSub()
	if err := <-subDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("SubscribeEvents ended with %v", err)
	}
	if id, ok, err := nodebus.RelayedEventID(ctx, node.js, n, 0); err != nil || !ok || id != eventID.String() {
		t.Fatalf("RelayedEventID(0) = %q, %v, %v; want %s", id, ok, err, eventID)
	}

	// Commands: the control plane's CommandSender, the node's CommandHandlers (which dial their
	// own connections with the same URL), the outcome reported as a fact.
	ran := make(chan wire.Command, 2)
	handlers, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: n, NodeID: nodeID, URL: d.nodeURL(t, nodeID),
		NATSOptions: []nats.Option{node.rec.option()}, Publisher: pub, Logger: log,
		DisconnectAgent: func(_ context.Context, c wire.DisconnectAgent) error { ran <- c; return nil },
		DrainNode:       func(_ context.Context, c wire.DrainNode) error { ran <- c; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := handlers.Start(ctx); err != nil {
		t.Fatalf("command handlers with the node credential: %v", err)
	}
	t.Cleanup(handlers.Stop)
	sender, err := controlbus.NewCommandSender(controlbus.CommandSenderConfig{Names: n, Conn: control.nc, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	commands := []wire.Command{
		wire.DrainNode{CommandID: uuid.NewString(), NodeID: nodeID},
		wire.DisconnectAgent{CommandID: uuid.NewString(), TunnelID: uuid.NewString(), Reason: "tunnel deleted"},
	}
	for _, cmd := range commands {
		if err := sender.Send(ctx, cmd); err != nil {
			t.Fatalf("send %s with the control credential: %v", cmd.CommandName(), err)
		}
		select {
		case c := <-ran:
			if c.ID() != cmd.ID() {
				t.Fatalf("ran %+v, want %+v", c, cmd)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the node did not run %s", cmd.CommandName())
		}
		subject, events := nextBatch()
		if subject != n.NodeFactsSubject(nodeID) || len(events) != 1 {
			t.Fatalf("outcome batch on %s with %d events", subject, len(events))
		}
		env, err := eventstore.DecodeEnvelope(events[0].Envelope)
		if err != nil || env.Type != domain.TypeNodeCommandExecuted {
			t.Fatalf("outcome of %s: %+v, %v", cmd.CommandName(), env, err)
		}
		// The node acknowledged the command on its own consumer.
		cons, err := control.js.PushConsumer(ctx, n.CommandsStream(), n.CommandConsumer(nodeID, cmd.CommandName()))
		if err != nil {
			t.Fatal(err)
		}
		checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.AckFloor.Consumer != 1 || info.NumAckPending != 0 {
				return fmt.Errorf("%s: ack floor %d, %d pending", cmd.CommandName(), info.AckFloor.Consumer, info.NumAckPending)
			}
			return nil
		})
	}

	node.noViolations(t)
	control.noViolations(t)
}

// JetStream answers a pull request on whatever reply subject the requester names, and NATS checks
// no reply subject against permissions. A node must be able to pull from TP_EVENTS, so it could
// name commands.*, another node's facts or heartbeat subject, or another node's command
// deliveries as the reply and have the server deliver the relayed record there. Each node has an
// account of its own for this: the reply resolves in the node's account, where nothing listens.
// (With every credential in one account, the record went to each of these replies and the other
// node received it on its command subscription.)
func TestNodeCannotRedirectJetStreamDeliveries(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	self, other := newNodeID(), newNodeID()
	d := deploy(t, self, other)
	control := d.dialControl(t)
	node := d.dialNode(t, self)
	victim := d.dialNode(t, other)
	// The victim's command subscription as CommandHandlers makes it (a literal subject).
	victimCommands, err := victim.nc.SubscribeSync("_tp.cmd." + other + "." + wire.CommandDrainNode)
	if err != nil {
		t.Fatal(err)
	}
	if err := victim.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Published as the relay publishes it; the stored copy keeps its Nats-Expected-Stream and
	// Nats-Expected-Last-Sequence headers, which would make other streams refuse a redirected
	// copy anyway, but a plain subscriber such as the other node's command subscription takes it.
	msg, _ := relayed(t, def, 0, domain.TypeTunnelCreated)
	if _, err := control.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(def.EventsStream()), jetstream.WithExpectLastSequence(0)); err != nil {
		t.Fatal(err)
	}

	targets := []string{
		def.CommandTopic(wire.CommandDrainNode),
		def.NodeFactsSubject(other),
		"$KV." + def.NodesBucket() + "." + other,
		"$KV." + def.RoutesBucket() + "." + wire.RouteKey(uuid.NewString(), other),
		"_tp.cmd." + other + "." + wire.CommandDrainNode,
	}
	// One consumer per target, made the way SubscribeEvents makes its own (what the node may do).
	var consumers []string
	for i := range targets {
		name := fmt.Sprintf("redirect_%d", i)
		if _, err := node.js.CreateConsumer(ctx, def.EventsStream(), jetstream.ConsumerConfig{Name: name,
			FilterSubject: def.EventsSubjects(), AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute}); err != nil {
			t.Fatalf("node creating a consumer on TP_EVENTS: %v", err)
		}
		consumers = append(consumers, name)
	}
	before := jetStreamState(ctx, t, control.js)
	for i, target := range targets {
		next := "$JS.API.CONSUMER.MSG.NEXT." + def.EventsStream() + "." + consumers[i]
		if err := node.nc.PublishMsg(&nats.Msg{Subject: next, Reply: target, Data: []byte(`{"batch":1}`)}); err != nil {
			t.Fatal(err)
		}
		// The consumer holds one record and serves pull requests in order: the node's own request
		// after the redirected one gets the record only if the redirected one did not.
		expires := fmt.Sprintf(`{"batch":1,"expires":%d}`, (2 * time.Second).Nanoseconds())
		got, err := node.nc.Request(next, []byte(expires), 5*time.Second)
		if err != nil {
			t.Fatalf("pull with the node's own reply: %v", err)
		}
		if got.Header.Get("Status") != "" || got.Subject != msg.Subject {
			t.Errorf("the record went to the reply %q named (the node's own pull got status %q %q)", target,
				got.Header.Get("Status"), got.Header.Get("Description"))
		}
	}
	// Nothing reached a stream or the other node.
	if after := jetStreamState(ctx, t, control.js); after != before {
		t.Errorf("a node's pull replies changed JetStream:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if m, err := victimCommands.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("the other node received %q on its command subscription", m.Data)
	}
	node.noViolations(t)
	victim.noViolations(t)
}
