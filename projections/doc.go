// Package projections owns the read models: checkpointed consumers of the event log that keep
// PostgreSQL tables (organizations, tunnels, nodes, agent tokens, the RBAC view, the audit index)
// up to date, plus rebuilds from position 0 that swap in without downtime.
//
// A projection writes its rows and its cursor in one transaction, so each event is applied
// exactly once. An event a projection cannot handle stops that projection loudly (status, log,
// metric); it is never skipped. It reads the log only through eventstore and must not append.
//
// The write side of the read models lives here; their read side — the SQL that reads the views,
// with typed results — lives in the sub-package readmodels, which the API consumes through
// interfaces it declares. Nothing outside these two packages should query the views.
package projections
