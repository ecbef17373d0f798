// Package wire is the contract between the control plane and the data-plane nodes over NATS
// JetStream (ARCHITECTURE.md, flows 2–4): stream, bucket and subject names, headers, and the
// formats both sides read and write — the node-facts batch (batch.go), the relayed log record
// (relay.go), the commands (commands.go), the heartbeat (registry.go) — with their fuzzed
// decoders, and how a client connects. Every byte it decodes may come from anyone who can
// publish on NATS: decoders bound what they allocate and wrap ErrMalformed.
//
// It holds no state and starts nothing; the control side is bus/controlbus, the node side
// bus/nodebus.
package wire
