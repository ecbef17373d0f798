// Package evidence makes and checks evidence bundles: a window of the log, with everything an
// auditor needs to check it offline (docs/event-format.md, "Evidence bundles"): the canonical
// records, the signed checkpoints covering them, an inclusion proof per record, a consistency
// proof from the window's checkpoint to the newest, the key history, the leaf hashes of the
// whole log (so a checkpoint the auditor saved earlier, of any size, can be checked) and a
// manifest signed by the log key.
//
// Export reads the log from PostgreSQL and records the export in the log (export.created).
// Verify uses neither a database nor the network: only the bundle's bytes and what the auditor
// trusts (a checkpoint, a verifier key). It owns the bundle format; the record format, hash
// chain and signatures are eventstore/ledger's, which it must not change.
package evidence
