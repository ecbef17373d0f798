// Package api owns the control plane's REST admin API under /api/v1 (echo v4): authentication of
// bearer JWTs, the actor of every request, read authorization, request decoding (strict JSON with
// a body limit), cursor pagination, read-your-writes (wait_for), the OpenAPI 3.1 document, health
// and readiness, HTTP metrics, and the single place where errors become RFC 9457
// application/problem+json responses (problem.go).
//
// Every change goes through a command of package commands; every read comes from a read model
// (through the query surface of package projections/readmodels) or from the log's key history.
// The API writes no SQL: it reaches the log, the projections' runner and the read models through
// the small interfaces it declares in config.go (EventLog, ProjectionRunner, ReadModels), and
// keeps to HTTP: parsing, authorization scoping, paging cursors, response shapes and problems.
// It must not append events itself, decide domain rules, or write read models.
//
// Access policy, consistently: authorization is decided on the organization a request names (or
// the caller's only organization). A request about an organization the caller may not act in is
// 403 whether or not the object exists, so nothing about another tenant leaks; an object looked
// up inside an organization the caller may read, but which belongs to another one (or none), is
// 404. An If-Match that does not match the tunnel's version is 412 Precondition Failed; every
// other concurrent-change or state conflict is 409.
package api
