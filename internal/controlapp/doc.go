// Package controlapp assembles the control plane process: the event log (migrations, the log key,
// the store), the projections, the command service with its auditor, the admin API on its
// listener, and — given a NATS URL — the control side of the bus: the ingester of node facts, the
// relay of the log to nodes, the reactor that turns log decisions into node commands, and the
// node registry watcher. `tunnelplane control` and `tunnelplane serve` run it; `init` uses its
// log setup.
//
// It holds the database credentials; nothing on the node side may import it (a test checks).
package controlapp
