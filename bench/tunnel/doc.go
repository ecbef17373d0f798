// Package tunnel is the harness behind `tunnelplane bench tunnel`: it measures the tunnel
// against its baseline in the same run. Origin, node, agent, two bare relays and load generator
// run as separate processes (the running binary re-executed with a hidden subcommand that calls
// RunChild), on loopback, and every measurement (a phase) is taken directly (load generator →
// origin), through the tunnel (load generator → node ingress → agent → origin) and, for some
// phases, through the two bare relays, interleaved, in several rounds.
//
// It owns the bench roles, their line protocol on stdin/stdout and the table of phases; the
// statistics are bench/stats'. It must not change how the node or the agent work: they run with
// their production defaults, and only the bench's router and authorizer (a real token check)
// are its own.
package tunnel
