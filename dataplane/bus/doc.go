// Package bus owns tunnelplane's traffic over NATS JetStream between the control plane and the
// data-plane nodes (ARCHITECTURE.md, flows 2–4):
//
//   - the embedded NATS server `tunnelplane serve` runs in-process (StartEmbedded);
//   - the streams and the KV bucket it relies on (EnsureStreams): TP_NODEFACTS (node-signed
//     batches), TP_EVENTS (the relayed log), TP_COMMANDS (control → node commands) and tp_nodes
//     (node heartbeats);
//   - the node side of data-plane facts: Publisher signs batches with the node's event key,
//     publishes them, and spools them to local disk while NATS is unreachable;
//   - the control side: Ingester verifies and appends those batches to the event store, Relay
//     republishes every log record in position order, RegistryWatcher turns heartbeats into
//     lost/recovered callbacks, CommandSender sends commands;
//   - the node side of commands and the registry: CommandHandlers (watermill CQRS, idempotent per
//     command id, outcome reported as an event) and Heartbeater;
//   - SubscribeEvents, the consumer of the relayed log that nodes rebuild their view from.
//
// The wire formats (the node-facts batch, the relayed event, the command payloads, the heartbeat
// value and the spool file layout) are documented next to their encoders: batch.go, relay.go,
// commands.go, registry.go and spool.go.
//
// It must not touch the database except through eventstore.Store (the ingester and the relay are
// its only users), must not decide anything about the domain (the node wiring and the control
// plane turn callbacks into domain decisions), and nodes using it never hold database
// credentials: everything a node sends is signed by its event key and checked by the ingester.
package bus
