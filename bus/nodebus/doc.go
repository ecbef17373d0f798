// Package nodebus is a data-plane node's side of NATS: the Publisher that signs the node's facts
// with its event key, publishes them and spools them to local disk while NATS is unreachable;
// the CommandHandlers (idempotent per command id, outcome reported as a fact); the Heartbeater;
// and SubscribeEvents, the consumer of the relayed log the node rebuilds its view from.
//
// It must never reach the database: nodes hold no database credentials, and a test
// (bus/bustest TestNodeSideHoldsNoDatabase) fails if this package, or anything else a node
// runs, comes to depend on pgx or the event store's Store.
package nodebus
