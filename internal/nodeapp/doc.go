// Package nodeapp assembles a data-plane node process: the node (dataplane/node) with its agents
// and ingress, its verified view of the log (dataplane/view) restored from a snapshot and fed from
// the relayed log, and its side of NATS (bus/nodebus): facts out, commands in, heartbeats. `tunnelplane
// node` and `tunnelplane serve` run it.
//
// It owns the node's security decisions that are not the node's or the view's own: which command
// runs for a command that came over NATS (only what the log decided, Resolve), when the view is
// too far behind to decide on (the lag watchdog), whether a snapshot fits the log. It must never
// reach the database: it depends on nothing of the control plane (checked by a test over
// `go list -deps`).
package nodeapp
