// Package readmodels is the query side of the read models that package projections keeps: typed
// reads of the views orgs, tunnels, nodes, agent_tokens, role_assignments, audit and
// agent_sessions, with filters and keyset pagination.
//
// It owns the SQL that reads those views and nothing else. It never writes (the projections in
// package projections do), never reads the rm_ tables behind the views (they hold every
// generation; the views show the one in force, so a rebuild swaps in under a reader) and never
// reads the event log. It decides no authorization: a filter narrows to what it names, and a
// filter that leaves out an organization where the list is per organization is an error, never
// "every organization".
//
// Errors: a row that does not exist is domain.ErrNotFound; a failure of the database is
// eventstore.ErrUnavailable; a filter that cannot be run is ErrBadFilter.
package readmodels
