package main

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

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/dataplane/bus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// controlBus is the control plane's side of NATS: the ingester (node facts → log), the relay
// (log → nodes), the reactor (log → node commands) and the registry watcher (heartbeats → lost
// and recovered nodes).
type controlBus struct {
	nc       *nats.Conn
	ingester *bus.Ingester
	relay    *bus.Relay
	reactor  *projections.Runner
	watcher  *bus.RegistryWatcher
	Sender   *bus.CommandSender
	stopOnce sync.Once
}

// startControlBus connects the control plane to NATS: streams, ingester, relay, command sender,
// node registry. ownsNATS says the NATS server is this installation's own (serve's embedded
// one): TP_EVENTS found holding another log's events is then reset and relayed anew; on a
// shared server that is an error for the operator to resolve.
func startControlBus(ctx context.Context, log *slog.Logger, store *eventstore.Store, svc *commands.Service, natsURL string, ownsNATS bool, reg prometheus.Registerer) (_ *controlBus, err error) {
	cb := &controlBus{}
	defer func() {
		if err != nil {
			cb.Stop()
		}
	}()
	if cb.nc, err = bus.Connect(natsURL, bus.ConnectConfig{Name: "tunnelplane-control", Logger: log}); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cb.nc)
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err = bus.EnsureStreams(sctx, js, bus.StreamsConfig{}); err != nil {
		return nil, fmt.Errorf("control bus: streams: %w", err)
	}
	if err = bus.CheckEventsStream(sctx, js, store); errors.Is(err, bus.ErrForeignEvents) && ownsNATS {
		log.Warn("TP_EVENTS in the embedded NATS does not fit this log (see error); relaying this log anew", "error", err)
		err = bus.ResetEventsStream(sctx, js, bus.StreamsConfig{})
	}
	if errors.Is(err, bus.ErrForeignEvents) {
		return nil, fmt.Errorf("control bus: %w; it was filled from another database or by another control plane: delete it (nats stream rm %s) or use another NATS server", err, bus.EventsStream)
	}
	if err != nil {
		return nil, fmt.Errorf("control bus: %w", err)
	}
	if cb.ingester, err = bus.NewIngester(bus.IngesterConfig{Store: store, Conn: cb.nc, Registerer: reg, Logger: log}); err != nil {
		return nil, err
	}
	if err = cb.ingester.Start(ctx); err != nil {
		return nil, err
	}
	if cb.relay, err = bus.NewRelay(bus.RelayConfig{Store: store, Conn: cb.nc, Registerer: reg, Logger: log}); err != nil {
		return nil, err
	}
	if err = cb.relay.Start(ctx); err != nil {
		return nil, err
	}
	if cb.Sender, err = bus.NewCommandSender(bus.CommandSenderConfig{Conn: cb.nc, Logger: log}); err != nil {
		return nil, err
	}
	if cb.reactor, err = projections.New(projections.Config{Store: store, Projections: []projections.Projection{nodeCommandReactor{cb.Sender}}, Logger: log}); err != nil {
		return nil, err
	}
	if err = cb.reactor.Start(ctx); err != nil {
		return nil, err
	}
	bg := context.WithoutCancel(ctx)
	if cb.watcher, err = bus.NewRegistryWatcher(bus.RegistryWatcherConfig{Conn: cb.nc, Logger: log,
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
	if err = cb.watcher.Start(ctx); err != nil {
		return nil, err
	}
	return cb, nil
}

// Live lists the nodes heartbeating now, with when each was last heard from.
func (cb *controlBus) Live() map[string]time.Time {
	out := map[string]time.Time{}
	for _, h := range cb.watcher.Live() {
		out[h.NodeID] = h.SentAt
	}
	return out
}

// Stop ends every part. Safe to call twice.
func (cb *controlBus) Stop() {
	cb.stopOnce.Do(func() {
		if cb.watcher != nil {
			cb.watcher.Stop()
		}
		if cb.reactor != nil {
			cb.reactor.Stop()
		}
		if cb.relay != nil {
			cb.relay.Stop()
		}
		if cb.ingester != nil {
			cb.ingester.Stop()
		}
		if cb.nc != nil {
			cb.nc.Close()
		}
	})
}

// nodeCommandReactor turns decisions in the log into node commands: a deleted tunnel or a revoked
// token disconnects its agents, a drain request drains the node. It runs as a projection, so its
// cursor advances only after the command was accepted by NATS (at least once; the command id is
// the event id, so nodes run it once).
type nodeCommandReactor struct{ sender *bus.CommandSender }

func (nodeCommandReactor) Name() string     { return "node_commands" }
func (nodeCommandReactor) Tables() []string { return nil }
func (nodeCommandReactor) Handles(t string) bool {
	return t == domain.TypeTunnelDeleted || t == domain.TypeAgentTokenRevoked || t == domain.TypeNodeDrainRequested
}

// Apply sends the command right away; the runner moves the cursor once Apply returned.
func (r nodeCommandReactor) Apply(ctx context.Context, _ *pgx.Batch, _ int, rec eventstore.Record) error {
	var cmd bus.Command
	e, err := domain.Decode(rec.Type, rec.Payload)
	if err != nil {
		return err
	}
	id := rec.EventID.String()
	switch ev := e.(type) {
	case *domain.TunnelDeleted:
		cmd = bus.DisconnectAgent{CommandID: id, TunnelID: ev.TunnelID, Reason: "tunnel deleted"}
	case *domain.AgentTokenRevoked:
		cmd = bus.DisconnectAgent{CommandID: id, TokenID: ev.TokenID, Reason: "agent token revoked"}
	case *domain.NodeDrainRequested:
		cmd = bus.DrainNode{CommandID: id, NodeID: ev.NodeID}
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.sender.Send(sctx, cmd); err != nil {
		// Retried with backoff by the runner: NATS may be back in a moment.
		return fmt.Errorf("%w: send %s for position %d: %w", eventstore.ErrUnavailable, cmd.CommandName(), rec.Position, err)
	}
	return nil
}
