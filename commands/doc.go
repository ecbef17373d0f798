// Package commands owns the write side of the control plane: one struct and one handler per
// command (load the aggregate from its stream → let the domain decide → append with the expected
// version), and the decorators around them — authorization with casbin over the RBAC view,
// idempotency keys, conflict retries — plus the audit of denied access and failed logins.
//
// Handlers never read projections to decide; they read streams. They must not know about HTTP.
package commands
