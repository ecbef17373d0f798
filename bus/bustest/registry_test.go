package bustest_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

type lostEvent struct {
	nodeID   string
	lastSeen time.Time
	at       time.Time
}

// A node that stops heartbeating is reported lost within the TTL (plus a margin), and recovered
// when it heartbeats again; a node that keeps beating is never reported.
func TestRegistryReportsLostAndRecoveredNodes(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	const ttl = 2 * time.Second
	n := startNATS(t, controlbus.StreamsConfig{HeartbeatTTL: ttl})

	lost := make(chan lostEvent, 4)
	recovered := make(chan string, 4)
	w, err := controlbus.NewRegistryWatcher(controlbus.RegistryWatcherConfig{Names: nm(t),
		Conn:        connect(t, n.url()),
		OnLost:      func(id string, lastSeen time.Time) { lost <- lostEvent{id, lastSeen, time.Now()} },
		OnRecovered: func(id string) { recovered <- id },
		Logger:      testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)

	var agents atomic.Int64
	agents.Store(3)
	beat := func(id string) *nodebus.Heartbeater {
		h, err := nodebus.NewHeartbeater(nodebus.HeartbeaterConfig{Names: nm(t),
			Conn:     connect(t, n.url()),
			Info:     wire.Heartbeat{NodeID: id, Name: "edge-" + id[:4], AgentURL: "wss://edge.example/agent", Version: "test", StartedAt: time.Now().UTC()},
			Agents:   func() int { return int(agents.Load()) },
			Interval: 200 * time.Millisecond,
			Logger:   testLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Stop)
		return h
	}
	quiet, steady := uuid.NewString(), uuid.NewString()
	h := beat(quiet)
	beat(steady)
	poll.Check(t, 5*time.Second, 20*time.Millisecond, func() error {
		live := w.Live()
		if len(live) != 2 || live[0].Agents != 3 || live[0].Version != "test" {
			return errorsf("live nodes %+v", live)
		}
		return nil
	})

	h.Stop()
	stoppedAt := time.Now()
	select {
	case ev := <-lost:
		if ev.nodeID != quiet {
			t.Fatalf("lost %s, want the quiet node %s", ev.nodeID, quiet)
		}
		if d := ev.at.Sub(stoppedAt); d > ttl+2*time.Second {
			t.Errorf("reported lost %s after the last heartbeat, want within the TTL %s plus a margin", d, ttl)
		}
		if ev.lastSeen.After(stoppedAt) || stoppedAt.Sub(ev.lastSeen) > time.Second {
			t.Errorf("last seen %s, heartbeats stopped at %s", ev.lastSeen, stoppedAt)
		}
	case <-time.After(ttl + 5*time.Second):
		t.Fatalf("no OnLost within %s of the last heartbeat", ttl+5*time.Second)
	}
	if live := w.Live(); len(live) != 1 || live[0].NodeID != steady {
		t.Errorf("live nodes after the loss: %+v", live)
	}

	beat(quiet)
	select {
	case id := <-recovered:
		if id != quiet {
			t.Errorf("recovered %s, want %s", id, quiet)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnRecovered after the node heartbeats again")
	}
	poll.Check(t, 5*time.Second, 20*time.Millisecond, func() error {
		if live := w.Live(); len(live) != 2 {
			return errorsf("live nodes %+v", live)
		}
		return nil
	})
	select {
	case ev := <-lost:
		t.Errorf("unexpected OnLost for %s", ev.nodeID)
	default:
	}
}
