package bustest_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A DisconnectAgent delivered twice runs once on the node, and its outcome travels back through
// the node's publisher and the ingester into the log.
// nodeOnBus is NATS, a log with an ingester, and an enrolled node's started publisher.
func nodeOnBus(t *testing.T) (*natsEnv, *storeEnv, string, *nodebus.Publisher) {
	t.Helper()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	startIngester(t, s, connect(t, n.url()), nil)
	pub := newPublisher(t, nodeID, nodeKey, connect(t, n.url()), t.TempDir(), nil)
	if err := pub.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return n, s, nodeID, pub
}

func TestCommandsRunOnceAndReportOutcome(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n, s, nodeID, pub := nodeOnBus(t)

	var mu sync.Mutex
	var disconnects []wire.DisconnectAgent
	var drains int
	handlers, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: nm(t),
		NodeID: nodeID, URL: n.url(), Publisher: pub, Logger: testLogger(), RetryDelay: 50 * time.Millisecond,
		DisconnectAgent: func(_ context.Context, cmd wire.DisconnectAgent) error {
			mu.Lock()
			defer mu.Unlock()
			disconnects = append(disconnects, cmd)
			return nil
		},
		DrainNode: func(context.Context, wire.DrainNode) error {
			mu.Lock()
			defer mu.Unlock()
			drains++
			return errors.New("already draining")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := handlers.Start(ctx); err != nil {
		t.Fatalf("start handlers: %v", err)
	}
	t.Cleanup(handlers.Stop)

	control := connect(t, n.url())
	sender, err := controlbus.NewCommandSender(controlbus.CommandSenderConfig{Names: nm(t), Conn: control, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, wire.DisconnectAgent{CommandID: "c1"}); !errors.Is(err, wire.ErrInvalidCommand) {
		t.Fatalf("a disconnect without tunnel or token: err = %v, want ErrInvalidCommand", err)
	}
	tunnelID := uuid.NewString()
	cmd := wire.DisconnectAgent{CommandID: uuid.NewString(), NodeID: nodeID, TunnelID: tunnelID, Reason: "tunnel deleted"}
	// For another node: acknowledged and ignored here.
	if err := sender.Send(ctx, wire.DisconnectAgent{CommandID: uuid.NewString(), NodeID: uuid.NewString(), TunnelID: tunnelID}); err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, cmd); err != nil {
		t.Fatalf("send: %v", err)
	}
	// Sent again at once: JetStream's duplicate window drops it.
	if err := sender.Send(ctx, cmd); err != nil {
		t.Fatalf("send again: %v", err)
	}
	// Delivered again past the duplicate window (a resend long after, another message id).
	body, _ := json.Marshal(cmd)
	again := &nats.Msg{Subject: nm(t).CommandTopic(wire.CommandDisconnectAgent), Data: body, Header: nats.Header{}}
	again.Header.Set("name", wire.CommandDisconnectAgent)
	again.Header.Set("_watermill_message_uuid", "resend-"+cmd.CommandID)
	again.Header.Set(nats.MsgIdHdr, "resend-"+cmd.CommandID)
	j := js(t, control)
	if _, err := j.PublishMsg(ctx, again); err != nil {
		t.Fatal(err)
	}
	drain := wire.DrainNode{CommandID: uuid.NewString(), NodeID: nodeID}
	if err := sender.Send(ctx, drain); err != nil {
		t.Fatal(err)
	}

	// Every command message has been handled and acknowledged by the node's consumers.
	cst, err := j.Stream(ctx, nm(t).CommandsStream())
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := cst.Info(ctx); info.State.Msgs != 4 {
		t.Fatalf("TP_COMMANDS holds %d messages, want 4 (the repeat within the window is dropped)", info.State.Msgs)
	}
	for name, want := range map[string]uint64{wire.CommandDisconnectAgent: 3, wire.CommandDrainNode: 1} {
		cons, err := j.PushConsumer(ctx, nm(t).CommandsStream(), nm(t).CommandConsumer(nodeID, name))
		if err != nil {
			t.Fatalf("consumer for %s: %v", name, err)
		}
		poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.AckFloor.Consumer != want || info.NumAckPending != 0 {
				return errorsf("%s: ack floor %d of %d, %d pending", name, info.AckFloor.Consumer, want, info.NumAckPending)
			}
			return nil
		})
	}
	mu.Lock()
	if len(disconnects) != 1 || disconnects[0] != cmd {
		t.Errorf("disconnect ran %d times with %+v; want once with %+v", len(disconnects), disconnects, cmd)
	}
	if drains != 1 {
		t.Errorf("drain ran %d times, want 1", drains)
	}
	mu.Unlock()

	// The outcomes arrive in the node's stream, once each.
	stream := domain.NodeFactsStream(nodeID)
	var outcomes []domain.NodeCommandExecuted
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		outcomes = outcomes[:0]
		for _, r := range s.streamRecords(t, stream) {
			if r.Type != domain.TypeNodeCommandExecuted {
				continue
			}
			var ev domain.NodeCommandExecuted
			if err := json.Unmarshal(r.Payload, &ev); err != nil {
				return err
			}
			outcomes = append(outcomes, ev)
		}
		if len(outcomes) != 2 {
			return errorsf("%d outcomes stored, want 2", len(outcomes))
		}
		return nil
	})
	results := map[string]domain.NodeCommandExecuted{}
	for _, o := range outcomes {
		results[o.CommandID] = o
	}
	if o := results[cmd.CommandID]; o.Result != "ok" || o.Command != wire.CommandDisconnectAgent || o.NodeID != nodeID {
		t.Errorf("disconnect outcome %+v", o)
	}
	if o := results[drain.CommandID]; o.Result != "error" || o.Detail != "already draining" {
		t.Errorf("drain outcome %+v, want result error with the func's message", o)
	}
	s.verifyOK(t)
}

// A node restarted within InactiveThreshold receives the commands sent while it was away.
func TestCommandsWaitForAnAbsentNode(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	nodeID := uuid.NewString()
	runs := make(chan wire.DisconnectAgent, 4)
	start := func() *nodebus.CommandHandlers {
		key := mustKey(t)
		pub := newPublisher(t, nodeID, key, connect(t, n.url()), t.TempDir(), nil)
		// A short ack wait: the server may still count the stopped node's subscription as interest
		// for a moment and deliver to it; that delivery is then redelivered after the ack wait.
		h, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: nm(t), NodeID: nodeID, URL: n.url(), Publisher: pub, Logger: testLogger(),
			AckWait:         time.Second,
			DisconnectAgent: func(_ context.Context, cmd wire.DisconnectAgent) error { runs <- cmd; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return h
	}
	h := start()
	h.Stop()
	h.Stop() // safe twice

	sender, err := controlbus.NewCommandSender(controlbus.CommandSenderConfig{Names: nm(t), Conn: connect(t, n.url())})
	if err != nil {
		t.Fatal(err)
	}
	cmd := wire.DisconnectAgent{CommandID: uuid.NewString(), TokenID: uuid.NewString(), Reason: "token revoked"}
	if err := sender.Send(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	h = start()
	defer h.Stop()
	select {
	case got := <-runs:
		if got != cmd {
			t.Errorf("ran %+v, want %+v", got, cmd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the command sent while the node was away never ran")
	}
	c, err := js(t, connect(t, n.url())).PushConsumer(ctx, nm(t).CommandsStream(), nm(t).CommandConsumer(nodeID, wire.CommandDisconnectAgent))
	if err != nil {
		t.Fatalf("the node's durable consumer is gone after its subscription closed: %v", err)
	}
	if info, _ := c.Info(ctx); info.Config.DeliverPolicy != jetstream.DeliverNewPolicy {
		t.Errorf("deliver policy %v", info.Config.DeliverPolicy)
	}
}

// A node keeps receiving commands after NATS restarts underneath it.
func TestCommandsSurviveNATSRestart(t *testing.T) {
	embeddedOnly(t)
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	nodeID := uuid.NewString()
	runs := make(chan wire.DrainNode, 4)
	pub := newPublisher(t, nodeID, mustKey(t), connect(t, n.url()), t.TempDir(), nil)
	h, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: nm(t), NodeID: nodeID, URL: n.url(), Publisher: pub, Logger: testLogger(),
		NATSOptions: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)},
		DrainNode:   func(_ context.Context, cmd wire.DrainNode) error { runs <- cmd; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Stop()

	n.srv.Shutdown()
	n.restart()
	sender, err := controlbus.NewCommandSender(controlbus.CommandSenderConfig{Names: nm(t), Conn: connect(t, n.url())})
	if err != nil {
		t.Fatal(err)
	}
	cmd := wire.DrainNode{CommandID: uuid.NewString(), NodeID: nodeID}
	poll.Check(t, 10*time.Second, 50*time.Millisecond, func() error { return sender.Send(ctx, cmd) })
	select {
	case got := <-runs:
		if got != cmd {
			t.Errorf("ran %+v, want %+v", got, cmd)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a command sent after the NATS restart never ran")
	}
}

// With Resolve, what runs is the command it returns; a command it refuses runs not, reports no
// outcome and is not remembered, so the genuine command with that id still runs after it.
func TestResolvedAndRefusedCommands(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n, s, nodeID, pub := nodeOnBus(t)
	var mu sync.Mutex
	var ran []wire.DisconnectAgent
	var decided atomic.Bool
	handlers, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: nm(t),
		NodeID: nodeID, URL: n.url(), Publisher: pub, Logger: testLogger(),
		DisconnectAgent: func(_ context.Context, cmd wire.DisconnectAgent) error {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, cmd)
			return nil
		},
		Resolve: func(_ context.Context, cmd wire.Command) (wire.Command, error) {
			if !decided.Load() {
				return nil, errors.New("no such decision")
			}
			return wire.DisconnectAgent{CommandID: cmd.ID(), TunnelID: "the decided tunnel", Reason: "decided"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := handlers.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(handlers.Stop)
	j := js(t, connect(t, n.url()))
	send := func(msgID string, cmd wire.DisconnectAgent) {
		body, _ := json.Marshal(cmd)
		msg := &nats.Msg{Subject: nm(t).CommandTopic(wire.CommandDisconnectAgent), Data: body, Header: nats.Header{}}
		msg.Header.Set("name", wire.CommandDisconnectAgent)
		msg.Header.Set("_watermill_message_uuid", msgID)
		msg.Header.Set(nats.MsgIdHdr, msgID)
		if _, err := j.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	id := uuid.NewString()
	send("forged", wire.DisconnectAgent{CommandID: id, TunnelID: "a victim's tunnel"})
	cons, err := j.PushConsumer(ctx, nm(t).CommandsStream(), nm(t).CommandConsumer(nodeID, wire.CommandDisconnectAgent))
	if err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Consumer != 1 {
			return errorsf("ack floor %d", info.AckFloor.Consumer)
		}
		return nil
	})
	decided.Store(true)
	send("genuine", wire.DisconnectAgent{CommandID: id, TunnelID: "what the message claims"})
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, r := range s.streamRecords(t, domain.NodeFactsStream(nodeID)) {
			if r.Type == domain.TypeNodeCommandExecuted {
				return nil
			}
		}
		return errorsf("no outcome yet")
	})
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 1 || ran[0] != (wire.DisconnectAgent{CommandID: id, TunnelID: "the decided tunnel", Reason: "decided"}) {
		t.Fatalf("ran %+v; want the resolved command once", ran)
	}
	if n := len(s.streamRecords(t, domain.NodeFactsStream(nodeID))); n != 1 {
		t.Fatalf("%d facts stored, want the one outcome", n)
	}
}
