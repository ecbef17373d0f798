// Package eventstore owns the append-only, signed, hash-chained event log in PostgreSQL: the
// canonical byte layout (encoding.go, docs/event-format.md), batch signatures (sign.go), appends
// with optimistic concurrency, reads and subscriptions, signed Merkle checkpoints, the key history
// kept in the log itself, and verification.
//
// Ordering: one appender per process batches concurrent appends into one transaction that locks
// the single log_head row FOR UPDATE, assigns dense positions, chains hashes, inserts, updates the
// head, NOTIFYs and commits. Commit order is therefore position order in any number of processes,
// and readers that ask for global_position > cursor never skip a record. What a batch writes
// (which requests pass their version checks, at which positions, chained how) is decided by
// planBatch (plan.go) without I/O, between reading the head and writing the rows.
//
// It talks to PostgreSQL through pgx only and must not know about domain events, commands or
// projections: those register their types in a Registry and append through Store.
package eventstore
