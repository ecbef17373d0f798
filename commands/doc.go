// Package commands owns the write side of the control plane: one struct and one handler per
// command, in a file per aggregate (organization, tunnel, node, agenttoken, roles, keyrotation),
// each a decideAndAppend (decide.go): load the streams, let the domain decide, append at the
// versions read, retry on a concurrent change. Around them: authorization with casbin over the
// RBAC view, idempotency keys, and the audit of denied access and failed logins.
// Handlers read streams, never projections, to decide; they must not know about HTTP.
package commands
