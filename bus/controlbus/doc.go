// Package controlbus is the control plane's side of NATS: the embedded server `tunnelplane serve`
// runs (StartEmbedded), the streams and the node registry bucket (EnsureStreams), the Ingester
// that verifies node-signed batches and appends them to the event store, the Relay that publishes
// every log record in position order with its proof, the RegistryWatcher that turns heartbeats
// into lost/recovered callbacks, and the CommandSender.
//
// It may use the event store (eventstore.Store): it runs in the control plane, which holds the
// database credentials. It decides nothing about the domain; its callers turn callbacks into
// commands. Whatever it reads from NATS is checked first (signatures, key owners, the node a
// batch came from, the types a node may report).
package controlbus
