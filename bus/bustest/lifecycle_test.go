package bustest_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle/lifecycletest"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

// Every long-running bus component keeps the lifecycle rules: concurrent Starts start it once,
// Stop waits for what it started (goleak in TestMain checks nothing is left), and a stopped one
// does not start again.
func TestBusComponentsStartStopStress(t *testing.T) {
	t.Parallel()
	env := startNATS(t, controlbus.StreamsConfig{})
	nc := connect(t, env.url())
	s := newStore(t)
	nodeID, key := s.enrollNode(t)
	const rounds = 5
	for _, tc := range []struct {
		name string
		make func(t *testing.T) lifecycletest.Component
	}{
		{"publisher", func(t *testing.T) lifecycletest.Component {
			p, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: nm(t), NodeID: nodeID, Key: key, Conn: nc, SpoolDir: t.TempDir(), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: p.Start, Stop: p.Stop}
		}},
		{"heartbeater", func(t *testing.T) lifecycletest.Component {
			h, err := nodebus.NewHeartbeater(nodebus.HeartbeaterConfig{Names: nm(t), Conn: nc, Info: wire.Heartbeat{NodeID: nodeID, Name: "n"},
				Interval: 50 * time.Millisecond, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: h.Start, Stop: h.Stop}
		}},
		{"command handlers", func(t *testing.T) lifecycletest.Component {
			p, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: nm(t), NodeID: nodeID, Key: key, Conn: nc, SpoolDir: t.TempDir(), Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Stop)
			h, err := nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{Names: nm(t), NodeID: uuid.NewString(), URL: env.url(), Publisher: p,
				DrainNode: func(context.Context, wire.DrainNode) error { return nil }, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: h.Start, Stop: h.Stop}
		}},
		{"routes", func(t *testing.T) lifecycletest.Component {
			r, err := nodebus.NewRoutes(nodebus.RoutesConfig{Names: nm(t), Conn: nc, NodeID: nodeID, PeerURL: "ws://127.0.0.1:1/v1/peer",
				Table: natstest.NewRouteTable(), Interval: 50 * time.Millisecond, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: r.Start, Stop: r.Stop}
		}},
		{"ingester", func(t *testing.T) lifecycletest.Component {
			in, err := controlbus.NewIngester(controlbus.IngesterConfig{Names: nm(t), Store: s.store, Conn: nc, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: in.Start, Stop: in.Stop}
		}},
		{"relay", func(t *testing.T) lifecycletest.Component {
			r, err := controlbus.NewRelay(controlbus.RelayConfig{Names: nm(t), Store: s.store, Conn: nc, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: r.Start, Stop: r.Stop}
		}},
		{"registry watcher", func(t *testing.T) lifecycletest.Component {
			w, err := controlbus.NewRegistryWatcher(controlbus.RegistryWatcherConfig{Names: nm(t), Conn: nc, Logger: testLogger(),
				OnLost: func(string, time.Time) {}, OnRecovered: func(string) {}})
			if err != nil {
				t.Fatal(err)
			}
			return lifecycletest.Component{Start: w.Start, Stop: w.Stop}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lifecycletest.StartStopStress(t, rounds, func() lifecycletest.Component { return tc.make(t) })
		})
	}
}
