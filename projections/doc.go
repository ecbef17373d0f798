// Package projections owns the read models: checkpointed consumers of the event log that keep
// PostgreSQL tables (organizations, tunnels, nodes, agent tokens, the RBAC view, the audit index)
// up to date, plus rebuilds from position 0 that swap in without downtime.
//
// A projection writes its rows and its cursor in one transaction, so each event is applied
// exactly once. An event a projection cannot handle stops that projection loudly (status, log,
// metric); it is never skipped. It reads the log only through eventstore and must not append.
package projections
