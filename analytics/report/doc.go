// Package report owns the analytics reports: usage (per tunnel and per caller, over time),
// chargeback (the priced lines of a window, exact decimals) and capacity (peak hour, p95 of hourly
// concurrency, headroom against the nodes). It reads the usage read model in one snapshot
// (projections/readmodels.ReadSnapshot), folds it with analytics/rollup and analytics/chargeback,
// lays out a report/render Document and records the report through report/record.
//
// It owns the reads the analytics API shares with it (Statement, NodesInService) and must not
// authorize: its callers (the API, the CLI, the scheduled reports) decide who may ask for which
// organization.
package report
