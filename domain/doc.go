// Package domain owns tunnelplane's aggregates, their events and invariants: organizations,
// tunnels, data-plane nodes, agent tokens, role assignments and signing keys, plus the facts
// data-plane nodes report (agents connecting, usage windows) and audit events.
//
// Event types are constant strings with a schema version, never derived from Go type names.
// Aggregates keep their fields unexported: they are created by validating constructors, changed
// only by decisions that return events, and rebuilt from stored events (Rehydrate). This package
// imports only the standard library; storage, transport and authorization live elsewhere.
package domain
