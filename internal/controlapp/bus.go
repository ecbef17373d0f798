package controlapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// BusConfig configures the control side of the bus.
type BusConfig struct {
	NATSURL string
	// Cluster names the installation on NATS (wire.NewNames).
	Cluster string
	// OwnsNATS says the NATS server is this installation's own (serve's embedded one): streams
	// found holding another log's events are then reset and relayed anew; on a shared server that
	// is an error for the operator to resolve.
	OwnsNATS bool
	// Replicas of the streams and the bucket on a clustered JetStream (default 1).
	Replicas   int
	Store      *eventstore.Store
	Service    *commands.Service
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Bus is the control plane's side of NATS: the ingester (node facts → log), the relay (log →
// nodes), the reactor (log decisions → node commands) and the registry watcher (heartbeats → lost
// and recovered nodes).
type Bus struct {
	Relay    *controlbus.Relay
	Sender   *controlbus.CommandSender
	nc       *nats.Conn
	ingester *controlbus.Ingester
	reactor  *projections.Runner
	watcher  *controlbus.RegistryWatcher
	stopOnce sync.Once
}

// StartBus connects the control plane to NATS: streams, ingester, relay, command sender, reactor,
// node registry. On an error everything started is stopped.
func StartBus(ctx context.Context, cfg BusConfig) (_ *Bus, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{}
	defer func() {
		if err != nil {
			b.Stop()
		}
	}()
	if b.nc, err = wire.Connect(cfg.NATSURL, wire.ConnectConfig{Name: "tunnelplane-control", Logger: log}); err != nil {
		return nil, err
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	names, err := wire.NewNames(cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	origin, err := cfg.Store.Origin(sctx)
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	if err = waitConnected(sctx, b.nc); err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	sc := controlbus.StreamsConfig{Names: names, Origin: origin, ReplaceForeign: cfg.OwnsNATS, Replicas: cfg.Replicas}
	if err = controlbus.EnsureStreams(sctx, js, sc); err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	if err = controlbus.CheckEventsStream(sctx, js, names, cfg.Store); errors.Is(err, controlbus.ErrForeignEvents) && cfg.OwnsNATS {
		log.Warn("the events stream in the embedded NATS does not fit this log (see error); relaying this log anew", "stream", names.EventsStream(), "error", err)
		err = controlbus.ResetEventsStream(sctx, js, sc)
	}
	if errors.Is(err, controlbus.ErrForeignEvents) {
		return nil, fmt.Errorf("control bus: %w; it was filled from another database or by another control plane: delete it (nats stream rm %s) or use another NATS server or --cluster", err, names.EventsStream())
	}
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	if b.ingester, err = controlbus.NewIngester(controlbus.IngesterConfig{Store: cfg.Store, Conn: b.nc, Names: names, Registerer: cfg.Registerer, Logger: log}); err != nil {
		return nil, err
	}
	if err = b.ingester.Start(ctx); err != nil {
		return nil, err
	}
	if b.Relay, err = controlbus.NewRelay(controlbus.RelayConfig{Store: cfg.Store, Conn: b.nc, Names: names, Registerer: cfg.Registerer, Logger: log,
		// Nodes get whole only what their view acts on (minimum necessary).
		Withhold: func(rec *eventstore.Record) bool { return !domain.NodeNeeds(rec.Type) }}); err != nil {
		return nil, err
	}
	if err = b.Relay.Start(ctx); err != nil {
		return nil, err
	}
	if b.Sender, err = controlbus.NewCommandSender(controlbus.CommandSenderConfig{Conn: b.nc, Names: names, Logger: log}); err != nil {
		return nil, err
	}
	if b.reactor, err = projections.New(projections.Config{Store: cfg.Store, Projections: []projections.Projection{nodeCommandReactor{b.Sender}}, Logger: log}); err != nil {
		return nil, err
	}
	if err = b.reactor.Start(ctx); err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	svc := cfg.Service
	if b.watcher, err = controlbus.NewRegistryWatcher(controlbus.RegistryWatcherConfig{Conn: b.nc, Names: names, Logger: log,
		OnLost: func(nodeID string, lastSeen time.Time) {
			if _, err := svc.MarkNodeLost(bg, nodeID, lastSeen); err != nil {
				log.Warn("node lost, but the event was not recorded", "node_id", nodeID, "error", err)
			}
		},
		OnRecovered: func(nodeID string) {
			if _, err := svc.MarkNodeRecovered(bg, nodeID); err != nil {
				log.Warn("node recovered, but the event was not recorded", "node_id", nodeID, "error", err)
			}
		}}); err != nil {
		return nil, err
	}
	if err = b.watcher.Start(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// Live lists the nodes heartbeating now, with when each was last heard from.
func (b *Bus) Live() map[string]time.Time {
	out := map[string]time.Time{}
	for _, h := range b.watcher.Live() {
		out[h.NodeID] = h.SentAt
	}
	return out
}

// Stop ends every part. Safe to call twice.
func (b *Bus) Stop() {
	b.stopOnce.Do(func() {
		if b.watcher != nil {
			b.watcher.Stop()
		}
		if b.reactor != nil {
			b.reactor.Stop()
		}
		if b.Relay != nil {
			b.Relay.Stop()
		}
		if b.ingester != nil {
			b.ingester.Stop()
		}
		if b.nc != nil {
			b.nc.Close()
		}
	})
}

// nodeCommandReactor turns decisions in the log into node commands (wire.Decision.Command, the
// rule nodes check them by). It runs as a projection, so its cursor advances only after the
// command was accepted by NATS (at least once; the command id is the event id, so nodes run it
// once).
type nodeCommandReactor struct{ sender *controlbus.CommandSender }

func (nodeCommandReactor) Name() string     { return "node_commands" }
func (nodeCommandReactor) Tables() []string { return nil }
func (nodeCommandReactor) Handles(t string) bool {
	return t == domain.TypeTunnelDeleted || t == domain.TypeAgentTokenRevoked || t == domain.TypeNodeDrainRequested
}

// Apply sends the command right away; the runner moves the cursor once Apply returned.
func (r nodeCommandReactor) Apply(ctx context.Context, _ *pgx.Batch, _ int, rec eventstore.Record) error {
	e, err := domain.Decode(rec.Type, rec.Payload)
	if err != nil {
		return err
	}
	d, ok := wire.DecisionOf(e)
	if !ok {
		return nil
	}
	cmd, ok := d.Command(rec.EventID.String())
	if !ok {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.sender.Send(sctx, cmd); err != nil {
		// Retried with backoff by the runner: NATS may be back in a moment.
		return fmt.Errorf("%w: send %s for position %d: %w", eventstore.ErrUnavailable, cmd.CommandName(), rec.Position, err)
	}
	return nil
}

// waitConnected waits for the first connection to NATS (wire.Connect returns before it, so a
// component can start while the server is away); the control plane checks the server's version
// before it creates anything, and that needs a server.
func waitConnected(ctx context.Context, nc *nats.Conn) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no NATS server at %s: %w", nc.Opts.Servers, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
