package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/report/render"
)

// The OpenAPI document is written down here, next to but apart from the route registration
// (server.go), on purpose: TestOpenAPICoversRoutes compares the two, so a route added without
// documentation, or documentation of a route that does not exist, fails the build.

type operation struct {
	method, path, id, summary, tag string
	// params name entries of parameters: "path:id", "query:org", "header:If-Match" …
	params []string
	// body is the schema of the request body ("" none); bodyOptional when it may be left out.
	body         string
	bodyOptional bool
	status       int
	// resp is the schema of the success response ("" none; "List:X" a page of X).
	resp string
	// errs are the problem statuses the operation documents besides 401/503 (added for
	// authenticated operations).
	errs   []int
	public bool
}

var listParams = []string{"query:limit", "query:cursor", "query:wait_for"}

func withList(p ...string) []string { return append(p, listParams...) }

var operations = []operation{
	{method: "GET", path: "/healthz", id: "healthz", summary: "The process is up", tag: "health", status: 200, resp: "Health", public: true},
	{method: "GET", path: "/readyz", id: "readyz", summary: "Database reachable and read models caught up (503 otherwise)", tag: "health", status: 200, resp: "Readiness", errs: []int{503}, public: true},
	{method: "GET", path: "/metrics", id: "metrics", summary: "Prometheus metrics (text exposition format)", tag: "health", status: 200, resp: "text", public: true},
	{method: "GET", path: "/api/v1/openapi.json", id: "openapi", summary: "This document", tag: "meta", status: 200, resp: "object", public: true},

	{method: "POST", path: "/api/v1/orgs", id: "createOrg", summary: "Create an organization (superadmins)", tag: "orgs",
		params: []string{"header:Idempotency-Key"}, body: "OrgInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/orgs", id: "listOrgs", summary: "Organizations the caller holds a role in (all for superadmins)", tag: "orgs",
		params: withList("query:name"), status: 200, resp: "List:Org", errs: []int{400}},
	{method: "GET", path: "/api/v1/orgs/{org}", id: "getOrg", summary: "One organization, by name or id", tag: "orgs",
		params: []string{"path:org", "query:wait_for"}, status: 200, resp: "Org", errs: []int{400, 403, 404}},

	{method: "POST", path: "/api/v1/tunnels", id: "createTunnel", summary: "Create a tunnel", tag: "tunnels",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "TunnelInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/tunnels", id: "listTunnels", summary: "Tunnels of an organization", tag: "tunnels",
		params: withList("query:org", "query:name", "query:tunnel_state", "query:owner"), status: 200, resp: "List:Tunnel", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/tunnels/{id}", id: "getTunnel", summary: "One tunnel (ETag: its version)", tag: "tunnels",
		params: []string{"path:id", "query:org", "query:wait_for"}, status: 200, resp: "Tunnel", errs: []int{400, 403, 404, 422}},
	{method: "PATCH", path: "/api/v1/tunnels/{id}", id: "updateTunnel", summary: "Change a tunnel (If-Match: version → 412 when stale)", tag: "tunnels",
		params: []string{"path:id", "query:org", "header:If-Match", "header:Idempotency-Key"}, body: "TunnelPatch", status: 200, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 412, 413, 415, 422}},
	{method: "DELETE", path: "/api/v1/tunnels/{id}", id: "deleteTunnel", summary: "Delete a tunnel and free its name", tag: "tunnels",
		params: []string{"path:id", "query:org", "query:reason", "header:If-Match", "header:Idempotency-Key"}, status: 200, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 412, 422}},
	{method: "POST", path: "/api/v1/tunnels/{id}/tokens", id: "issueToken", summary: "Issue an agent token for a tunnel (the token is shown once)", tag: "tokens",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "TokenInput", bodyOptional: true, status: 201, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 413, 415, 422}},

	{method: "GET", path: "/api/v1/tunnels/{id}/nodes", id: "discoverNodes", summary: "For the tunnel's agent (its agent token as the bearer): the live nodes to hold, in the tunnel's order of preference", tag: "tunnels",
		params: []string{"path:id"}, status: 200, resp: "Discovery", errs: []int{400, 401, 403}},

	{method: "GET", path: "/api/v1/sessions", id: "listSessions", summary: "Agent sessions of an organization, newest first: who is connected where, and how earlier sessions ended", tag: "tunnels",
		params: withList("query:org", "query:tunnel_id", "query:node_id", "query:session_state"), status: 200, resp: "List:AgentSession", errs: []int{400, 403, 404, 422}},

	{method: "GET", path: "/api/v1/tokens", id: "listTokens", summary: "Agent tokens of an organization (records, never the tokens)", tag: "tokens",
		params: withList("query:org", "query:tunnel_id", "query:token_state"), status: 200, resp: "List:AgentToken", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/tokens/{id}", id: "getToken", summary: "One agent token's record", tag: "tokens",
		params: []string{"path:id", "query:org", "query:wait_for"}, status: 200, resp: "AgentToken", errs: []int{400, 403, 404, 422}},
	{method: "DELETE", path: "/api/v1/tokens/{id}", id: "revokeToken", summary: "Revoke an agent token", tag: "tokens",
		params: []string{"path:id", "query:org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},

	{method: "POST", path: "/api/v1/tunnels/{id}/access-keys", id: "issueAccessKey", summary: "Issue a tunnel access key: it calls this tunnel and nothing else (the secret is shown once)", tag: "access-keys",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "AccessKeyInput", bodyOptional: true, status: 201, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "POST", path: "/api/v1/tunnels/{id}/grants", id: "createGrant", summary: "Grant a user or a group (of the identity provider's groups claim) the use of a tunnel until an expiry", tag: "grants",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "GrantInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/tunnels/{id}/grants", id: "listGrants", summary: "A tunnel's access policy and grants", tag: "grants",
		params: []string{"path:id", "query:org", "query:grant_state", "query:wait_for"}, status: 200, resp: "Grants", errs: []int{400, 403, 404, 422}},
	{method: "DELETE", path: "/api/v1/tunnels/{id}/grants/{grant_id}", id: "revokeGrant", summary: "Revoke a grant (nodes refuse its callers as soon as the revocation reaches them)", tag: "grants",
		params: []string{"path:id", "path:grant_id", "query:org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "PUT", path: "/api/v1/tunnels/{id}/access-policy", id: "setAccessPolicy", summary: "How many approvals, from which role, the tunnel's access requests need", tag: "grants",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "AccessPolicyInput", status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "PUT", path: "/api/v1/tunnels/{id}/access-log", id: "setAccessLog", summary: "What the tunnel's nodes report of its calls: \"calls\" (a record per call: who, method, route, status, bytes, duration) or \"windows\" (usage totals per caller, the default)", tag: "tunnels",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "AccessLogInput", status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/tunnels/{id}/access", id: "listAccessCalls", summary: "The tunnel's call records, oldest first (while its access log is \"calls\"; org owners, admins, auditors)", tag: "tunnels",
		params: withList("query:org", "query:call_from", "query:call_to", "query:caller", "query:status"), status: 200, resp: "List:AccessCall", errs: []int{400, 403, 404, 422}},
	{method: "POST", path: "/api/v1/access-requests", id: "requestAccess", summary: "Ask for the use of a tunnel for a duration, with a reason", tag: "access-requests",
		params: []string{"header:Idempotency-Key"}, body: "AccessRequestInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/access-requests", id: "listAccessRequests", summary: "Access requests of an organization", tag: "access-requests",
		params: withList("query:org", "query:tunnel_id", "query:requester", "query:request_state"), status: 200, resp: "List:AccessRequest", errs: []int{400, 403, 404, 422}},
	{method: "POST", path: "/api/v1/access-requests/{id}/approve", id: "approveAccess", summary: "Approve a request (a holder of the policy's role, never the requester); the approval that completes the policy creates the grant", tag: "access-requests",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "AccessDecisionInput", bodyOptional: true, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "POST", path: "/api/v1/access-requests/{id}/deny", id: "denyAccess", summary: "Deny a request; the reason is required", tag: "access-requests",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, body: "AccessDecisionInput", status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/access", id: "whoCanReach", summary: "Who could reach a tunnel at a time, and why: per user, group and access key the chain (role assignments, the tunnel's ownership, a grant with its request and approvals, an access key), each with its log position; at: replayed from the log, else live from the read models (org owners, admins, auditors)", tag: "access-requests",
		params: []string{"query:org", "query:reach_tunnel", "query:at", "query:wait_for"}, status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/tunnels/{id}/activity", id: "tunnelActivity", summary: "A tunnel's activity, oldest first: configuration, credentials, grants and requests, agent sessions (log events with actor and position), and on the first page per-caller usage from the rollups", tag: "tunnels",
		params: []string{"path:id", "query:org", "query:activity_from", "query:activity_to", "query:kinds", "query:limit", "query:cursor", "query:wait_for"}, status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "POST", path: "/api/v1/access-keys", id: "issueLabelAccessKey", summary: "Issue an access key for a label selector: it calls every tunnel of the organization whose labels match, those labelled later included (the secret is shown once)", tag: "access-keys",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "LabelAccessKeyInput", status: 201, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/access-keys", id: "listAccessKeys", summary: "Tunnel access keys of an organization (records, never the secrets)", tag: "access-keys",
		params: withList("query:org", "query:tunnel_id", "query:token_state"), status: 200, resp: "List:AccessKey", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/access-keys/{id}", id: "getAccessKey", summary: "One access key's record", tag: "access-keys",
		params: []string{"path:id", "query:org", "query:wait_for"}, status: 200, resp: "AccessKey", errs: []int{400, 403, 404, 422}},
	{method: "DELETE", path: "/api/v1/access-keys/{id}", id: "revokeAccessKey", summary: "Revoke an access key (nodes refuse it as soon as the revocation reaches them)", tag: "access-keys",
		params: []string{"path:id", "query:org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},

	{method: "POST", path: "/api/v1/nodes", id: "enrollNode", summary: "Enroll a data-plane node with its host key and event key (superadmins, or a node enrollment token tpe_…: the one route it may call; 401 naming why when it is unknown, expired, revoked or used up); 200 when it is already enrolled with the same keys", tag: "nodes",
		params: []string{"header:Idempotency-Key"}, body: "EnrollNode", status: 201, resp: "WriteResult", errs: []int{400, 403, 409, 413, 415, 422}},
	{method: "POST", path: "/api/v1/nodes/enrollment-tokens", id: "issueEnrollmentToken", summary: "Issue a node enrollment token: it enrolls nodes and does nothing else; expiring, single-use by default (superadmins; the token is shown once)", tag: "nodes",
		params: []string{"header:Idempotency-Key"}, body: "EnrollmentTokenInput", bodyOptional: true, status: 201, resp: "WriteResult", errs: []int{400, 403, 413, 415, 422}},
	{method: "GET", path: "/api/v1/nodes/enrollment-tokens", id: "listEnrollmentTokens", summary: "Node enrollment tokens (records, never the tokens; superadmins)", tag: "nodes",
		params: withList("query:enrollment_token_state"), status: 200, resp: "List:EnrollmentToken", errs: []int{400, 403}},
	{method: "GET", path: "/api/v1/nodes/enrollment-tokens/{id}", id: "getEnrollmentToken", summary: "One node enrollment token's record", tag: "nodes",
		params: []string{"path:id", "query:wait_for"}, status: 200, resp: "EnrollmentToken", errs: []int{400, 403, 404}},
	{method: "DELETE", path: "/api/v1/nodes/enrollment-tokens/{id}", id: "revokeEnrollmentToken", summary: "Revoke a node enrollment token (the nodes it enrolled stay enrolled)", tag: "nodes",
		params: []string{"path:id", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/nodes", id: "listNodes", summary: "Data-plane nodes (superadmins)", tag: "nodes",
		params: withList("query:node_state", "query:name"), status: 200, resp: "List:Node", errs: []int{400, 403}},
	{method: "GET", path: "/api/v1/nodes/{id}", id: "getNode", summary: "One node", tag: "nodes",
		params: []string{"path:id", "query:wait_for"}, status: 200, resp: "Node", errs: []int{400, 403, 404}},
	{method: "POST", path: "/api/v1/nodes/{id}/drain", id: "drainNode", summary: "Ask a node to let its agents go and take no new ones", tag: "nodes",
		params: []string{"path:id", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409}},
	{method: "DELETE", path: "/api/v1/nodes/{id}", id: "removeNode", summary: "Remove a node and revoke its event key", tag: "nodes",
		params: []string{"path:id", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409}},

	{method: "POST", path: "/api/v1/role-assignments", id: "assignRole", summary: "Grant a user a role in an organization (superadmin: org \"*\")", tag: "roles",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "RoleInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/role-assignments", id: "listRoles", summary: "Role assignments of an organization (org \"*\": platform roles)", tag: "roles",
		params: withList("query:scope_org", "query:user_id", "query:role"), status: 200, resp: "List:RoleAssignment", errs: []int{400, 403, 404, 422}},
	{method: "DELETE", path: "/api/v1/role-assignments/{user_id}/{role}", id: "unassignRole", summary: "Withdraw a role", tag: "roles",
		params: []string{"path:user_id", "path:role", "query:scope_org", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "DELETE", path: "/api/v1/users/{user_id}", id: "deleteUser", summary: "Delete a user from an organization (org \"*\": from every organization and the platform, superadmins): " +
		"user.deleted with, in the same append, role.unassigned for each of their roles, grant.revoked for each grant to them by name and access.denied for each pending request " +
		"there (caused by it); nodes end their live calls and refuse their tokens issued before it. Owners and admins; deleting an owner takes an owner", tag: "roles",
		params: []string{"path:user_id", "query:scope_org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},

	{method: "GET", path: "/api/v1/log", id: "logInfo", summary: "Public: the log's origin, size, newest signed checkpoint, the log key as a C2SP note verifier key, and the log keys' history", tag: "keys",
		status: 200, resp: "LogInfo", errs: []int{400}, public: true},
	{method: "GET", path: "/api/v1/auth/oidc", id: "oidcSettings", summary: "Public: the identity provider users log in at (issuer and client id); 404 when interactive login is not configured", tag: "auth",
		status: 200, resp: "OIDCSettings", errs: []int{404}, public: true},
	{method: "POST", path: "/api/v1/auth/oidc/token", id: "oidcLogin", summary: "Public: exchange an ID token of the configured identity provider for a user token (recorded as user.logged_in); 401 with the reason when it is refused", tag: "auth",
		body: "OIDCLoginInput", status: 200, resp: "OIDCLogin", errs: []int{400, 401, 404, 413, 415, 422, 429, 503}, public: true},
	{method: "GET", path: "/api/v1/auth/oidc/login", id: "browserLogin", summary: "Public: start a browser login (authorization code with PKCE S256) that returns to origin " +
		"(this API's own, or one matching --browser-login-origin) at path; redirects to the identity provider. Errors are plain pages for browsers (Accept: text/html)", tag: "auth",
		params: []string{"query:login_origin", "query:login_path", "query:login_state"}, status: 302, resp: "redirect", errs: []int{400, 404, 429, 503}, public: true},
	{method: "GET", path: "/api/v1/auth/oidc/callback", id: "browserCallback", summary: "Public: the identity provider's redirect; finishes a login once (user.logged_in, its token bound to the origin's host): " +
		"for a tunnel host a page that posts the token to its node's /.tunnelplane/login, for this API its session cookie (__Host-tunnelplane) and a redirect", tag: "auth",
		params: []string{"query:oidc_code", "query:oidc_state"}, status: 200, resp: "html", errs: []int{400, 401, 404, 429, 503}, public: true},
	{method: "POST", path: "/api/v1/auth/oidc/logout", id: "browserLogout", summary: "Public: clear this API's session cookie", tag: "auth",
		status: 204, errs: []int{401}, public: true},
	{method: "GET", path: "/api/v1/keys", id: "listKeys", summary: "The log's key history: log, token and node keys (superadmins)", tag: "keys",
		params: withList("query:purpose"), status: 200, resp: "List:Key", errs: []int{400, 403}},
	{method: "POST", path: "/api/v1/keys/rotations", id: "rotateKey", summary: "Rotate the log key or the token key (superadmins)", tag: "keys",
		params: []string{"header:Idempotency-Key"}, body: "RotationInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 409, 413, 415, 422}},

	{method: "GET", path: "/api/v1/audit", id: "searchAudit", summary: "Search the audit index, newest first", tag: "audit",
		params: withList("query:scope_org", "query:actor", "query:type", "query:stream", "query:correlation_id", "query:request_id", "query:since", "query:until"),
		status: 200, resp: "List:AuditEntry", errs: []int{400, 403, 404, 422}},
	{method: "POST", path: "/api/v1/subjects/{id}/erase", id: "eraseSubject", summary: "Erase a subject's personal data (an actor id: a user's id, node:<id> …): its data keys are destroyed, " +
		"its sealed client addresses and user agents read [erased] everywhere, subject.erased is appended; the log still verifies (superadmins)", tag: "audit",
		params: []string{"path:id", "header:Idempotency-Key"}, body: "EraseSubjectInput", bodyOptional: true, status: 200, resp: "WriteResult", errs: []int{400, 403, 413, 415, 422}},
	{method: "GET", path: "/api/v1/reports/{report}", id: "getReport", summary: "A compliance report (soc2, hipaa, iso27001) of a window, organised by control, exceptions first " +
		"(org \"*\": the whole log, superadmins; else an organization's owners, admins and auditors); or an organization's usage, chargeback (or by month) or capacity report " +
		"(its owners, admins and auditors); each appends report.generated", tag: "audit",
		params: []string{"path:report", "query:scope_org", "query:report_from", "query:report_to", "query:rep_month", "query:format"}, status: 200, resp: "report", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/reports", id: "listReports", summary: "Stored reports (made by schedules) of a scope the caller may read, newest first: poll it for new ones; download each at /api/v1/reports/{id}", tag: "audit",
		params: withList("query:scope_org", "query:kind", "query:schedule_id"), status: 200, resp: "List:StoredReport", errs: []int{400, 403, 404, 422}},
	{method: "POST", path: "/api/v1/report-schedules", id: "createReportSchedule", summary: "Schedule a report (daily, weekly or monthly at a local hour, or every N hours), each run covering the period before it; or a forecast that warns of a capacity crossing (capacity.forecast_exceeded). Who may read that kind of report in the scope may schedule it", tag: "audit",
		params: []string{"query:scope_org", "header:Idempotency-Key"}, body: "ReportScheduleInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/report-schedules", id: "listReportSchedules", summary: "Report schedules of a scope, of the kinds the caller may read", tag: "audit",
		params: withList("query:scope_org", "query:deleted"), status: 200, resp: "List:ReportSchedule", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/report-schedules/{id}", id: "getReportSchedule", summary: "One report schedule, with its next due time", tag: "audit",
		params: []string{"path:id", "query:scope_org", "query:wait_for"}, status: 200, resp: "ReportSchedule", errs: []int{400, 403, 404, 422}},
	{method: "PATCH", path: "/api/v1/report-schedules/{id}", id: "updateReportSchedule", summary: "Change a schedule's format, time zone, cadence or forecast from now on (its kind stays)", tag: "audit",
		params: []string{"path:id", "query:scope_org", "header:If-Match", "header:Idempotency-Key"}, body: "ReportSchedulePatch", status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "DELETE", path: "/api/v1/report-schedules/{id}", id: "deleteReportSchedule", summary: "End a schedule (its reports stay)", tag: "audit",
		params: []string{"path:id", "query:scope_org", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "POST", path: "/api/v1/report-schedules/{id}/pause", id: "pauseReportSchedule", summary: "Pause a schedule: runs due while it is paused are not made", tag: "audit",
		params: []string{"path:id", "query:scope_org", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "POST", path: "/api/v1/report-schedules/{id}/resume", id: "resumeReportSchedule", summary: "Resume a schedule from its next due time", tag: "audit",
		params: []string{"path:id", "query:scope_org", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},

	{method: "POST", path: "/api/v1/exports", id: "createExport", summary: "Queue an evidence export of a window of the log (202; poll Location): the whole log (superadmins) or an organization's (its owners, admins and auditors); 429 with Retry-After when the queue is full", tag: "exports",
		body: "ExportInput", status: 202, resp: "Export", errs: []int{400, 403, 404, 413, 415, 422, 429}},
	{method: "GET", path: "/api/v1/exports", id: "listExports", summary: "Exports this control plane instance ran or runs, newest first (org \"*\": all of them, superadmins)", tag: "exports",
		params: []string{"query:scope_org"}, status: 200, resp: "List:Export", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/exports/{id}", id: "getExport", summary: "One export: its state and progress (records read of the log's), and once done its window, size and SHA-256", tag: "exports",
		params: []string{"path:id"}, status: 200, resp: "Export", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/exports/{id}/bundle", id: "downloadExport", summary: "Download a finished export's bundle (409 while it is not done); check it with verify-export", tag: "exports",
		params: []string{"path:id"}, status: 200, resp: "zstd", errs: []int{400, 403, 404, 409, 422}},

	{method: "POST", path: "/api/v1/siem/sinks", id: "createSIEMSink", summary: "Forward the log to a SIEM (org \"*\": a platform sink, superadmins; else an organization's events, its owners and admins)", tag: "siem",
		params: []string{"query:scope_org", "header:Idempotency-Key"}, body: "SIEMSinkInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/siem/sinks", id: "listSIEMSinks", summary: "SIEM sinks of an organization (org \"*\": the platform's), each with its delivery status", tag: "siem",
		params: withList("query:scope_org", "query:removed"), status: 200, resp: "List:SIEMSink", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/siem/sinks/{id}", id: "getSIEMSink", summary: "One SIEM sink: where it delivers, lag in events and seconds, delivered, retries, last error, the record a receiver refuses", tag: "siem",
		params: []string{"path:id", "query:scope_org", "query:wait_for"}, status: 200, resp: "SIEMSink", errs: []int{400, 403, 404, 422}},
	{method: "PUT", path: "/api/v1/siem/sinks/{id}", id: "updateSIEMSink", summary: "Replace a SIEM sink's configuration (a secret left out keeps its value)", tag: "siem",
		params: []string{"path:id", "query:scope_org", "header:If-Match", "header:Idempotency-Key"}, body: "SIEMSinkInput", status: 200, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "DELETE", path: "/api/v1/siem/sinks/{id}", id: "removeSIEMSink", summary: "Stop a SIEM sink for good", tag: "siem",
		params: []string{"path:id", "query:scope_org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "POST", path: "/api/v1/siem/sinks/{id}/skips", id: "skipSIEMDelivery", summary: "Give up delivering one record the sink's receiver refuses for good (recorded in the log; the receiver sees the gap)", tag: "siem",
		params: []string{"path:id", "query:scope_org", "header:Idempotency-Key"}, body: "SIEMSkipInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},

	{method: "POST", path: "/api/v1/webhooks", id: "createWebhook", summary: "Deliver an organization's notifications to an HTTPS endpoint, signed per Standard Webhooks (owners, admins; the whsec_ secret is shown once)", tag: "webhooks",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "WebhookInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "GET", path: "/api/v1/webhooks", id: "listWebhooks", summary: "Webhook endpoints of an organization, each with its delivery status (never the secret)", tag: "webhooks",
		params: withList("query:org", "query:deleted"), status: 200, resp: "List:Webhook", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/webhooks/{id}", id: "getWebhook", summary: "One webhook endpoint: delivered, retried, failed, last error, lag", tag: "webhooks",
		params: []string{"path:id", "query:org", "query:wait_for"}, status: 200, resp: "Webhook", errs: []int{400, 403, 404, 422}},
	{method: "PUT", path: "/api/v1/webhooks/{id}", id: "updateWebhook", summary: "Replace a webhook endpoint's name, URL and types (the secret stays)", tag: "webhooks",
		params: []string{"path:id", "query:org", "header:If-Match", "header:Idempotency-Key"}, body: "WebhookInput", status: 200, resp: "WriteResult",
		errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "DELETE", path: "/api/v1/webhooks/{id}", id: "deleteWebhook", summary: "Stop delivering to a webhook endpoint", tag: "webhooks",
		params: []string{"path:id", "query:org", "query:reason", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "POST", path: "/api/v1/webhooks/{id}/rotate-secret", id: "rotateWebhookSecret", summary: "Give a webhook endpoint a new secret (shown once); deliveries carry the old one's signature too for 24 h", tag: "webhooks",
		params: []string{"path:id", "query:org", "header:Idempotency-Key"}, status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 422}},
	{method: "GET", path: "/api/v1/notifications/stream", id: "notificationStream", summary: "The caller's own notifications as server-sent events (id: the log position; Last-Event-ID resumes): requests they may decide, their requests approved or denied, their grants created, about to expire, expired or revoked", tag: "webhooks",
		params: []string{"header:Last-Event-ID", "query:last_event_id"}, status: 200, resp: "sse", errs: []int{400, 429}},

	{method: "GET", path: "/api/v1/analytics/usage", id: "usage", summary: "Usage per tunnel, caller or org by hour, or by day, ISO week or month in the org's time zone: requests, errors, bytes, p50/p95/p99 latency and TTFB from merged buckets, streams (org owners, admins, auditors)", tag: "analytics",
		params: []string{"query:org", "query:group_by", "query:granularity", "query:from", "query:to", "query:tunnel", "query:limit", "query:cursor", "query:wait_for"},
		status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/analytics/forecast", id: "forecast", summary: "A forecast of hourly usage (requests, bytes or streams) for a tunnel or the org, made from the log's usage windows replayed up to as_of: the model chosen by backtesting against the seasonal naive, 80% and 95% intervals, and with a threshold when it is expected to be crossed", tag: "analytics",
		params: []string{"query:org", "query:tunnel", "query:metric", "query:horizon", "query:as_of", "query:history", "query:threshold", "query:probability", "query:wait_for"},
		status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/analytics/capacity", id: "capacity", summary: "Peak hour, p95 of hourly concurrency and headroom against the nodes' configured capacity, per tunnel or for the org", tag: "analytics",
		params: []string{"query:org", "query:group_by", "query:from", "query:to", "query:tunnel", "query:limit", "query:cursor", "query:wait_for"},
		status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "GET", path: "/api/v1/analytics/chargeback", id: "chargeback", summary: "A local month's chargeback: one line per tunnel and caller, exact decimals, the rounding rule stated", tag: "analytics",
		params: []string{"query:org", "query:month", "query:wait_for"}, status: 200, resp: "object", errs: []int{400, 403, 404, 422}},
	{method: "PUT", path: "/api/v1/analytics/settings", id: "setOrgSettings", summary: "Set the org's time zone (its days, weeks and months)", tag: "analytics",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "OrgSettingsInput", status: 200, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},
	{method: "POST", path: "/api/v1/analytics/price-sheets", id: "setPriceSheet", summary: "Set the org's chargeback prices from a whole hour on (never in the past)", tag: "analytics",
		params: []string{"query:org", "header:Idempotency-Key"}, body: "PriceSheetInput", status: 201, resp: "WriteResult", errs: []int{400, 403, 404, 409, 413, 415, 422}},

	{method: "GET", path: "/api/v1/projections", id: "listProjections", summary: "Read models: position, lag, generation, errors (superadmins)", tag: "projections",
		params: []string{"query:limit", "query:cursor"}, status: 200, resp: "List:ProjectionStatus", errs: []int{400, 403}},
	{method: "POST", path: "/api/v1/projections/{name}/rebuild", id: "rebuildProjection", summary: "Rebuild a read model from position 0 and swap it in without downtime (superadmins)", tag: "projections",
		params: []string{"path:name"}, status: 200, resp: "ProjectionStatus", errs: []int{403, 404, 409}},
}

type schema = map[string]any

func str(desc string) schema { return schema{"type": "string", "description": desc} }
func strf(format, desc string) schema {
	return schema{"type": "string", "format": format, "description": desc}
}
func integer(desc string) schema { return schema{"type": "integer", "description": desc} }
func ref(name string) schema     { return schema{"$ref": "#/components/schemas/" + name} }
func object(required []string, props schema) schema {
	o := schema{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}
func nullable(s schema) schema {
	return schema{"oneOf": []any{s, schema{"type": "null"}}}
}

var parameters = map[string]schema{
	"path:id":            {"name": "id", "in": "path", "required": true, "schema": strf("uuid", "")},
	"path:org":           {"name": "org", "in": "path", "required": true, "schema": str("organization name or id")},
	"path:user_id":       {"name": "user_id", "in": "path", "required": true, "schema": str("user id, path-escaped")},
	"path:role":          {"name": "role", "in": "path", "required": true, "schema": str("owner, admin, operator, editor, viewer, auditor or superadmin")},
	"path:name":          {"name": "name", "in": "path", "required": true, "schema": str("projection name")},
	"path:report":        {"name": "report", "in": "path", "required": true, "schema": str("soc2, hipaa, iso27001, usage, chargeback or capacity (generate one now), or a stored report's id (download it)")},
	"query:report_from":  {"name": "from", "in": "query", "schema": str("window start: RFC 3339 time or date (YYYY-MM-DD, UTC); required to generate (a chargeback report may take month instead)")},
	"query:report_to":    {"name": "to", "in": "query", "schema": str("window end, excluded: RFC 3339 time or date (YYYY-MM-DD, UTC); required to generate")},
	"query:rep_month":    {"name": "month", "in": "query", "schema": str("chargeback only, instead of from and to: a month like 2026-03 in the org's time zone")},
	"query:kind":         {"name": "kind", "in": "query", "schema": str("a report kind: soc2, hipaa, iso27001, forecast, …")},
	"query:schedule_id":  {"name": "schedule_id", "in": "query", "schema": strf("uuid", "only this schedule's reports")},
	"query:login_origin": {"name": "origin", "in": "query", "schema": str("where the login returns: a tunnel host's origin, or (default) this API's")},
	"query:login_path":   {"name": "path", "in": "query", "schema": str("the local path to return to (default /)")},
	"query:login_state":  {"name": "state", "in": "query", "schema": str("the tunnel node's login nonce, posted back with the token (required for a tunnel host)")},
	"query:oidc_code":    {"name": "code", "in": "query", "schema": str("the identity provider's authorization code")},
	"query:oidc_state":   {"name": "state", "in": "query", "schema": str("the login's state")},
	"query:format":       {"name": "format", "in": "query", "schema": schema{"type": "string", "enum": []string{"html", "pdf", "xlsx", "csv", "json"}, "default": "json"}},
	"query:org":          {"name": "org", "in": "query", "schema": str("organization name or id; default: the caller's only organization (422 when ambiguous)")},
	"query:scope_org":    {"name": "org", "in": "query", "schema": str("organization name or id, or \"*\" for the platform (superadmins); default: the caller's only organization")},
	"query:limit":        {"name": "limit", "in": "query", "schema": schema{"type": "integer", "minimum": 1, "maximum": MaxLimit, "default": DefaultLimit}},
	"query:cursor":       {"name": "cursor", "in": "query", "schema": str("next_cursor of the previous page, unchanged")},
	"query:wait_for": {"name": "wait_for", "in": "query", "schema": schema{"oneOf": []any{schema{"type": "integer", "minimum": 0}, schema{"const": "latest"}},
		"description": "a write's position (or \"latest\": everything the log holds now): answer only once the read models show it (bounded; 503 with Retry-After when not in time)"}},
	"query:name":                   {"name": "name", "in": "query", "schema": str("exact name")},
	"query:owner":                  {"name": "owner", "in": "query", "schema": str("owner (user id)")},
	"query:reason":                 {"name": "reason", "in": "query", "schema": str("recorded in the event")},
	"query:deleted":                {"name": "deleted", "in": "query", "schema": schema{"type": "boolean", "default": false, "description": "include deleted ones (webhook endpoints, report schedules)"}},
	"query:last_event_id":          {"name": "last_event_id", "in": "query", "schema": integer("as Last-Event-ID, for clients that cannot set headers")},
	"header:Last-Event-ID":         {"name": "Last-Event-ID", "in": "header", "schema": integer("the id of the last event received: the feed resumes after it")},
	"query:removed":                {"name": "removed", "in": "query", "schema": schema{"type": "boolean", "default": false, "description": "include removed sinks"}},
	"query:tunnel_id":              {"name": "tunnel_id", "in": "query", "schema": strf("uuid", "")},
	"query:tunnel_state":           {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"active", "deleted", "all"}, "default": "active"}},
	"query:token_state":            {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"active", "revoked", "expired", "all"}, "default": "all"}},
	"query:node_id":                {"name": "node_id", "in": "query", "schema": strf("uuid", "")},
	"query:enrollment_token_state": {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"active", "used", "expired", "revoked", "all"}, "default": "all"}},
	"path:grant_id":                {"name": "grant_id", "in": "path", "required": true, "schema": strf("uuid", "")},
	"query:grant_state":            {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"active", "all"}, "default": "active"}},
	"query:request_state":          {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"pending", "approved", "denied", "all"}, "default": "all"}},
	"query:reach_tunnel":           {"name": "tunnel", "in": "query", "required": true, "schema": strf("uuid", "the tunnel")},
	"query:at":                     {"name": "at", "in": "query", "schema": strf("date-time", "a past time: the answer replays the log up to the last position recorded then (absent: now, from the read models)")},
	"query:activity_from":          {"name": "from", "in": "query", "schema": strf("date-time", "events recorded at or after it; usage from its hour (default: 30 days before to)")},
	"query:activity_to":            {"name": "to", "in": "query", "schema": strf("date-time", "events recorded before it (default: now)")},
	"query:kinds":                  {"name": "kinds", "in": "query", "schema": str("comma-separated: config, credentials, grants, sessions, usage (default: all)")},
	"query:requester":              {"name": "requester", "in": "query", "schema": str("user id")},
	"query:session_state": {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"connected", "ended", "unknown", "all"}, "default": "all",
		"description": "unknown: the node was lost or removed before it reported the end"}},
	"query:node_state":        {"name": "state", "in": "query", "schema": schema{"type": "string", "enum": []string{"joined", "draining", "left"}}},
	"query:user_id":           {"name": "user_id", "in": "query", "schema": str("")},
	"query:role":              {"name": "role", "in": "query", "schema": str("")},
	"query:purpose":           {"name": "purpose", "in": "query", "schema": schema{"type": "string", "enum": []string{"log", "token", "node"}}},
	"query:actor":             {"name": "actor", "in": "query", "schema": str("user id, node:<id> or system:<component>")},
	"query:type":              {"name": "type", "in": "query", "schema": str("event type, like tunnel.created")},
	"query:stream":            {"name": "stream", "in": "query", "schema": str("stream id, like tunnel-<id>")},
	"query:correlation_id":    {"name": "correlation_id", "in": "query", "schema": str("")},
	"query:request_id":        {"name": "request_id", "in": "query", "schema": str("")},
	"query:group_by":          {"name": "group_by", "in": "query", "schema": schema{"type": "string", "enum": []string{"tunnel", "caller", "org"}, "default": "tunnel"}},
	"query:granularity":       {"name": "granularity", "in": "query", "schema": schema{"type": "string", "enum": []string{"hour", "day", "week", "month"}, "default": "hour"}},
	"query:from":              {"name": "from", "in": "query", "required": true, "schema": strf("date-time", "start (back to its bucket's start)")},
	"query:to":                {"name": "to", "in": "query", "required": true, "schema": strf("date-time", "end (on to its bucket's end); at most 366 days after from")},
	"query:tunnel":            {"name": "tunnel", "in": "query", "schema": strf("uuid", "one tunnel")},
	"query:metric":            {"name": "metric", "in": "query", "schema": schema{"type": "string", "enum": []string{"requests", "bytes", "streams"}, "default": "requests"}},
	"query:horizon":           {"name": "horizon", "in": "query", "schema": schema{"type": "string", "default": "168h", "description": "whole hours, 1h to 8760h"}},
	"query:as_of":             {"name": "as_of", "in": "query", "schema": strf("date-time", "forecast as it would have been made then: only what the log held then counts")},
	"query:history":           {"name": "history", "in": "query", "schema": schema{"type": "string", "description": "how far back the series reaches (default 90 days, at least what the backtest needs)"}},
	"query:threshold":         {"name": "threshold", "in": "query", "schema": schema{"type": "number", "description": "per hour: when is it expected to be exceeded"}},
	"query:probability":       {"name": "probability", "in": "query", "schema": schema{"type": "number", "default": 0.5, "description": "the least probability of exceeding the threshold that counts"}},
	"query:month":             {"name": "month", "in": "query", "required": true, "schema": str("a month like 2026-03, in the org's time zone")},
	"query:since":             {"name": "since", "in": "query", "schema": strf("date-time", "recorded at or after")},
	"query:until":             {"name": "until", "in": "query", "schema": strf("date-time", "recorded before")},
	"query:call_from":         {"name": "from", "in": "query", "schema": strf("date-time", "calls that began at or after")},
	"query:call_to":           {"name": "to", "in": "query", "schema": strf("date-time", "calls that began before")},
	"query:caller":            {"name": "caller", "in": "query", "schema": str("a user id or an access key id")},
	"query:status":            {"name": "status", "in": "query", "schema": schema{"type": "integer", "minimum": 100, "maximum": 999}},
	"header:If-Match":         {"name": "If-Match", "in": "header", "schema": str("the version from ETag; a stale one is refused with 412")},
	"header:Idempotency-Key":  {"name": "Idempotency-Key", "in": "header", "schema": schema{"type": "string", "maxLength": 255, "description": "a repeat with the same key and body returns the first response and writes nothing; another body is 422; while the first is still running, 409 in-progress with Retry-After (a few seconds at most, also after a crash)"}},
	"header:X-Request-ID":     {"name": "X-Request-ID", "in": "header", "schema": str("echoed; generated when absent")},
	"header:X-Correlation-ID": {"name": "X-Correlation-ID", "in": "header", "schema": str("recorded in the events the request writes; generated when absent")},
}

var fieldError = object([]string{"field", "message"}, schema{"field": str(""), "message": str("")})

var schemas = map[string]schema{
	"Problem": {"type": "object", "description": "RFC 9457 problem details", "required": []string{"type", "title", "status"}, "properties": schema{
		"type": strf("uri", ""), "title": str(""), "status": integer(""), "detail": str(""), "instance": str(""),
		"request_id": str(""), "correlation_id": str(""), "errors": schema{"type": "array", "items": fieldError},
	}},
	"Health": object([]string{"status"}, schema{"status": str("ok")}),
	"Readiness": object([]string{"ready", "database"}, schema{"ready": schema{"type": "boolean"}, "database": str(""),
		"projections": schema{"type": "array", "items": ref("ProjectionStatus")}, "problems": schema{"type": "array", "items": str("")}}),
	"WriteResult": object([]string{"position"}, schema{
		"id": str("the aggregate created or changed"), "position": integer("pass as wait_for to read this write"),
		"version": integer("the aggregate's version (ETag, If-Match)"), "token": str("an issued agent token; shown once"),
		"secret":     str("an issued access key or node enrollment token, or a webhook endpoint's whsec_ signing secret; shown once"),
		"expires_at": strf("date-time", ""), "issued_at": strf("date-time", ""), "key_id": str(""), "noop": schema{"type": "boolean"},
	}),
	"OrgInput": object([]string{"name"}, schema{"name": str("DNS label"), "owner": str("user id of the first owner")}),
	"Org": object([]string{"id", "name", "created_by", "created_at", "position"}, schema{"id": strf("uuid", ""), "name": str(""),
		"created_by": str(""), "created_at": strf("date-time", ""), "position": integer("")}),
	"TunnelInput": object([]string{"name", "upstream"}, schema{"org": str("organization name or id"), "name": str("DNS label"),
		"upstream": str("like http://127.0.0.1:11434"), "protocol": schema{"type": "string", "enum": []string{"http", "tcp"}, "default": "http"},
		"labels": labelsSchema("the tunnel's labels (setting any takes the right to share)")}),
	"TunnelPatch": object(nil, schema{"name": str(""), "upstream": str(""), "protocol": schema{"type": "string", "enum": []string{"http", "tcp"}},
		"labels": labelsSchema("all of the tunnel's labels from now on ({} removes them; takes the right to share)"),
		"cors":   ref("TunnelCORS")}),
	"TunnelCORS": object([]string{"mode"}, schema{
		"mode": schema{"type": "string", "enum": []string{"off", "origins", "passthrough"},
			"description": "off: nothing added; origins: the node answers preflights of the listed origins and grants them the responses; passthrough: preflights go to the upstream without a credential"},
		"origins": schema{"type": "array", "maxItems": 32, "items": str("an origin, scheme://host[:port], like https://app.example.com")}}),
	"Tunnel": object([]string{"id", "org_id", "name", "owner", "upstream", "protocol", "state", "version", "created_at", "updated_at", "position", "agents_connected", "access_log"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "name": str(""), "owner": str(""), "upstream": str(""), "protocol": str(""),
		"state": schema{"type": "string", "enum": []string{"active", "deleted"}}, "version": integer(""), "created_at": strf("date-time", ""),
		"updated_at": strf("date-time", ""), "position": integer(""),
		"agents_connected": integer("agent sessions connected now (one per node at most), as the nodes reported them"),
		"access_log":       schema{"type": "string", "enum": []string{"windows", "calls"}, "description": "what the nodes report of the tunnel's calls"},
		"labels":           labelsSchema("the tunnel's labels"), "cors": ref("TunnelCORS"),
	}),
	"AgentSession": object([]string{"id", "node_id", "org_id", "tunnel_id", "token_id", "agent_version", "protocol", "remote_addr", "kex", "cipher", "connected_at", "position", "state"}, schema{
		"id": strf("uuid", ""), "node_id": strf("uuid", ""), "org_id": strf("uuid", ""), "tunnel_id": strf("uuid", ""), "token_id": strf("uuid", "the agent token it connected with"),
		"agent_version": str(""), "protocol": str("WebSocket subprotocol, tunnelplane.v1 or tunnelplane.v2"), "remote_addr": str("the agent's address as the node saw it (sealed in the log to the token issuer's key): [erased] once the issuer was erased, empty when the token carried no sealing key"),
		"kex": str("negotiated SSH key exchange"), "cipher": str("negotiated SSH cipher"), "connected_at": strf("date-time", "the node's clock"),
		"ended_at": strf("date-time", ""), "end_reason": str(""), "bytes_in": integer("agent → node, reported at the end"), "bytes_out": integer("node → agent"),
		"duration_ms": integer(""), "position": integer("log position of the newest event about it"),
		"state": schema{"type": "string", "enum": []string{"connected", "ended", "unknown"}, "description": "unknown: its node was lost or removed before reporting the end"},
	}),
	"TokenInput": object(nil, schema{"ttl": str("Go duration, default 720h, at most 8760h")}),
	"AgentToken": object([]string{"id", "org_id", "tunnel_id", "key_id", "issued_by", "issued_at", "expires_at", "position", "state"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "tunnel_id": strf("uuid", ""), "key_id": str(""), "issued_by": str(""),
		"issued_at": strf("date-time", ""), "expires_at": strf("date-time", ""), "revoked_at": strf("date-time", ""), "revoke_reason": str(""),
		"position": integer(""), "state": schema{"type": "string", "enum": []string{"active", "revoked", "expired"}},
	}),
	"AccessKeyInput": object(nil, schema{"ttl": str("Go duration or days (\"30d\"), default 30d, at most 365d"),
		"cidrs":     schema{"type": "array", "items": str("source prefix like 10.0.0.0/8, or an address"), "maxItems": 32},
		"rate_tier": str("name of a rate tier (recorded; not enforced yet)")}),
	"LabelAccessKeyInput": object([]string{"selector"}, schema{"org": str("organization name or id"),
		"selector":  labelsSchema("the labels a tunnel must all carry for the key to call it (1-8 pairs)"),
		"ttl":       str("Go duration or days (\"30d\"), default 30d, at most 365d"),
		"cidrs":     schema{"type": "array", "items": str("source prefix like 10.0.0.0/8, or an address"), "maxItems": 32},
		"rate_tier": str("name of a rate tier (recorded; not enforced yet)")}),
	"AccessKey": object([]string{"id", "org_id", "tunnel_id", "cidrs", "issued_by", "issued_at", "expires_at", "position", "state"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "tunnel_id": str("the tunnel it calls; empty for a key scoped by selector"),
		"selector":  labelsSchema("for a key scoped by labels: the labels a tunnel must carry"),
		"cidrs":     schema{"type": "array", "items": str(""), "description": "the only source prefixes it is accepted from; empty: any"},
		"rate_tier": str(""), "issued_by": str(""), "issued_at": strf("date-time", ""), "expires_at": strf("date-time", ""),
		"revoked_at": strf("date-time", ""), "revoke_reason": str(""), "position": integer(""),
		"state": schema{"type": "string", "enum": []string{"active", "revoked", "expired"}},
	}),
	"GrantInput": object([]string{"ttl"}, schema{"user": str("user id (or group)"), "group": str("a group of the identity provider's groups claim (or user)"),
		"ttl": str("Go duration or days (\"7d\"), at most 365d")}),
	"Grant": object([]string{"id", "tunnel_id", "subject_kind", "subject", "expires_at", "granted_by", "state"}, schema{
		"id": strf("uuid", ""), "tunnel_id": strf("uuid", ""), "subject_kind": schema{"type": "string", "enum": []string{"user", "group"}}, "subject": str(""),
		"expires_at": strf("date-time", ""), "granted_by": str(""), "request_id": strf("uuid", "the access request it completes"),
		"approvals": schema{"type": "array", "items": strf("uuid", "event id of an access.approved")},
		"state":     schema{"type": "string", "enum": []string{"active", "revoked", "expired"}},
	}),
	"AccessPolicy": object([]string{"approver_role", "required_approvals"}, schema{"approver_role": str("owner, admin, operator, editor, viewer or auditor (owners and superadmins count too)"),
		"required_approvals": integer("N approvals, 1 to 10")}),
	"Grants":         object([]string{"policy", "items"}, schema{"policy": ref("AccessPolicy"), "items": schema{"type": "array", "items": ref("Grant")}}),
	"AccessLogInput": object([]string{"access_log"}, schema{"access_log": schema{"type": "string", "enum": []string{"calls", "windows"}}}),
	"AccessCall": object([]string{"at", "caller_kind", "method", "route", "status", "bytes_in", "bytes_out", "duration_us", "node_id", "tunnel_id", "org_id", "position", "index"}, schema{
		"at": strf("date-time", "when the request arrived, by the node's clock"), "caller_kind": schema{"type": "string", "enum": []string{"user", "access_key", "anonymous", "overflow"}},
		"caller_id": str("user id or access key id"), "method": str(""), "route": str("the path without the query string, at most 256 bytes"),
		"status": integer("0 when no response was sent"), "bytes_in": integer("request body bytes"), "bytes_out": integer("response body bytes"),
		"duration_us": integer(""), "node_id": str(""), "tunnel_id": strf("uuid", ""), "org_id": strf("uuid", ""),
		"position": integer("log position of the node's batch holding the call"), "index": integer("the call's place in that batch"),
	}),
	"AccessPolicyInput": object([]string{"approver_role", "required_approvals"}, schema{"approver_role": str(""), "required_approvals": integer("")}),
	"AccessRequestInput": object([]string{"tunnel_id", "duration", "reason"}, schema{"org": str("organization name or id"), "tunnel_id": strf("uuid", ""),
		"duration": str("Go duration or days (\"7d\"), 1m to 90d"), "reason": str("required")}),
	"AccessDecisionInput": object(nil, schema{"comment": str("with an approval"), "reason": str("required to deny")}),
	"AccessRequest": object([]string{"id", "org_id", "tunnel_id", "requester", "duration_seconds", "reason", "state", "approvers", "requested_at", "position"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "tunnel_id": strf("uuid", ""), "requester": str(""), "duration_seconds": integer(""), "reason": str(""),
		"state":     schema{"type": "string", "enum": []string{"pending", "approved", "denied"}},
		"approvers": schema{"type": "array", "items": str("")}, "grant_id": strf("uuid", ""), "denied_by": str(""), "denial": str(""),
		"requested_at": strf("date-time", ""), "decided_at": strf("date-time", ""), "position": integer(""),
	}),
	"OIDCSettings":   object([]string{"issuer", "client_id"}, schema{"issuer": str("OIDC issuer URL"), "client_id": str("the client id to use at the provider")}),
	"OIDCLoginInput": object([]string{"id_token"}, schema{"id_token": str("an ID token the provider issued to client_id, at most 16 KiB")}),
	"OIDCLogin": object([]string{"token", "token_type", "expires_at", "user_id", "position"}, schema{"token": str("the user token (shown once)"),
		"token_type": schema{"type": "string", "const": "Bearer"}, "expires_at": strf("date-time", ""),
		"user_id": str("oidc-<issuer digest>:<sub>, stable per provider and subject"), "name": str(""), "groups": schema{"type": "array", "items": str("")},
		"position": integer("log position of user.logged_in")}),
	"EraseSubjectInput": object(nil, schema{"reason": str("why (recorded in subject.erased), at most 1024 bytes")}),
	"EnrollmentTokenInput": object(nil, schema{"ttl": str("Go duration or days (\"2d\"), default 1h, at most 7d"),
		"uses": schema{"type": "integer", "minimum": 1, "maximum": 1000, "default": 1, "description": "how many nodes it may enroll"}}),
	"EnrollmentToken": object([]string{"id", "issued_by", "issued_at", "expires_at", "max_uses", "nodes", "position", "state"}, schema{
		"id": strf("uuid", ""), "issued_by": str(""), "issued_at": strf("date-time", ""), "expires_at": strf("date-time", ""),
		"max_uses": integer(""), "nodes": schema{"type": "array", "items": strf("uuid", ""), "description": "the nodes it enrolled, in order"},
		"revoked_at": strf("date-time", ""), "revoke_reason": str(""), "position": integer(""),
		"state": schema{"type": "string", "enum": []string{"active", "used", "expired", "revoked"}},
	}),
	"ExportInput": object([]string{"from", "to"}, schema{
		"from": schema{"oneOf": []any{schema{"type": "integer", "minimum": 0}, schema{"type": "string"}}, "description": "first position, or an RFC 3339 time"},
		"to":   schema{"oneOf": []any{schema{"type": "integer", "minimum": 0}, schema{"type": "string"}}, "description": "last position, or an RFC 3339 time"},
		"org":  str("organization name or id: its records in full, the window's others as leaf hashes only; none: the whole log")}),
	"Export": object([]string{"id", "from", "to", "requested_by", "state", "records_done", "records_total", "created_at", "host"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "from": str("as asked"), "to": str("as asked"), "requested_by": str(""),
		"state": schema{"type": "string", "enum": []string{"queued", "running", "done", "failed"}}, "error": str("why it failed"),
		"records_done": integer("records of the log read so far"), "records_total": integer("records of the log to read"),
		"created_at": strf("date-time", ""), "started_at": strf("date-time", ""), "finished_at": strf("date-time", ""),
		"first_position": integer(""), "last_position": integer(""), "records": integer("records the bundle holds in full"),
		"bytes": integer(""), "bundle_sha256": str("as export.created records it"), "position": integer("of export.created"),
		"host": str("the control plane instance holding the bundle")}),
	"KeyAdded": object([]string{"purpose", "owner", "key_id", "algorithm", "public_key", "proof"}, schema{
		"purpose": schema{"type": "string", "const": "node"}, "owner": str("the node_id"), "key_id": str("ed25519:<hex>"),
		"algorithm": schema{"type": "string", "const": "ed25519"}, "public_key": strf("byte", "base64"),
		"proof": strf("byte", "base64 Ed25519 signature over eventstore.AddMessage (proof of possession)"),
	}),
	"EnrollNode": object([]string{"node_id", "name", "host_key", "host_key_fingerprint", "event_key"}, schema{
		"node_id": strf("uuid", "chosen by the node"), "name": str("DNS label"), "host_key": str("ssh-ed25519 public key, authorized_keys format"),
		"host_key_fingerprint": str("SHA256:…, the host key's"), "event_key": ref("KeyAdded"), "agent_url": strf("uri", ""), "ingress_url": strf("uri", ""),
	}),
	"Node": object([]string{"id", "name", "state", "lost", "host_key", "host_key_fingerprint", "event_key_id", "enrolled_at", "updated_at", "version", "position"}, schema{
		"id": strf("uuid", ""), "name": str(""), "state": schema{"type": "string", "enum": []string{"joined", "draining", "left"}}, "lost": schema{"type": "boolean"},
		"host_key": str(""), "host_key_fingerprint": str(""), "event_key_id": str(""), "agent_url": str(""), "ingress_url": str(""),
		"enrolled_at": strf("date-time", ""), "updated_at": strf("date-time", ""), "version": integer(""), "position": integer(""),
		"live":           schema{"type": "boolean", "description": "heartbeating now (when the control plane runs the node registry)"},
		"last_heartbeat": strf("date-time", "when the node was last heard from"),
	}),
	"DiscoveredNode": object([]string{"id", "agent_url", "host_key_fingerprint", "priority", "weight"}, schema{
		"id": strf("uuid", ""), "agent_url": strf("uri", "the node's agent endpoint"), "host_key_fingerprint": str("SHA256:…, to pin"),
		"priority": integer("1 first: rendezvous hashing of (tunnel, node)"), "weight": integer("share of new connections among equals"),
	}),
	"Discovery": object([]string{"tunnel_id", "items"}, schema{"tunnel_id": strf("uuid", ""), "items": schema{"type": "array", "items": ref("DiscoveredNode")}}),
	"RoleInput": object([]string{"user_id", "role"}, schema{"org": str("organization name or id; \"*\" or absent for superadmin"), "user_id": str(""),
		"role": schema{"type": "string", "enum": []string{"owner", "admin", "operator", "editor", "viewer", "auditor", "superadmin"}}}),
	"RoleAssignment": object([]string{"org_id", "user_id", "role", "assigned_at", "position"}, schema{"org_id": str("organization id or \"*\""),
		"user_id": str(""), "role": str(""), "assigned_at": strf("date-time", ""), "position": integer("")}),
	"Key": object([]string{"key_id", "purpose", "fingerprint", "valid_from", "state"}, schema{"key_id": str(""),
		"purpose": schema{"type": "string", "enum": []string{"log", "token", "node"}}, "owner": str(""), "fingerprint": str(""),
		"valid_from": integer("first log position the key may sign"), "valid_until": integer("first position it may not"),
		"state": schema{"type": "string", "enum": []string{"active", "rotated", "revoked"}}, "changed_at": strf("date-time", ""),
		"public_key": strf("byte", "Ed25519 public key"), "verifier_key": str("log keys: the C2SP note verifier key (origin+hash+base64)")}),
	"KeyInfo": object([]string{"key_id", "purpose", "fingerprint", "valid_from", "public_key"}, schema{"key_id": str(""),
		"purpose": schema{"type": "string", "enum": []string{"log", "token", "node"}}, "owner": str(""), "fingerprint": str(""),
		"valid_from": integer("first log position the key may sign"), "valid_until": integer("first position it may not (absent while in force)"),
		"public_key": strf("byte", "Ed25519 public key"), "verifier_key": str("log keys: the C2SP note verifier key (origin+hash+base64)")}),
	"LogInfo": object([]string{"origin", "size", "checkpoint", "genesis_hash", "verifier_key", "log_keys"}, schema{"origin": str("name the checkpoints are signed under"),
		"size": integer("records covered by the checkpoint"), "checkpoint": str("C2SP signed note: origin, size, base64 RFC 6962 root, signature"),
		"genesis_hash": strf("byte", "base64 hash of the genesis record: the trust anchor of anyone who reads copies of the log (nodes)"),
		"verifier_key": str("the log key in force as a C2SP note verifier key (origin+hash+base64): golang.org/x/mod/sumdb/note opens checkpoint with it"),
		"log_keys":     schema{"type": "array", "items": ref("KeyInfo"), "description": "every log key with the positions it signed (valid_from, valid_until)"}}),
	"RotationInput": object([]string{"purpose"}, schema{"purpose": schema{"type": "string", "enum": []string{"log", "token"}}}),
	"AuditEntry": object([]string{"position", "recorded_at", "event_id", "type", "stream_id"}, schema{"position": integer(""),
		"recorded_at": strf("date-time", ""), "event_id": strf("uuid", ""), "type": str(""), "stream_id": str(""), "actor": str(""),
		"org_id": str(""), "correlation_id": str(""), "causation_id": str(""), "request_id": str(""), "client_ip": str(""), "user_agent": str("")}),
	"ReportScheduleInput": object([]string{"kind", "format", "cadence"}, schema{"org": str("organization name or id, or \"*\" for the whole log"),
		"kind": str("soc2, hipaa, iso27001, forecast, or another kind this control plane makes"), "format": schema{"type": "string", "enum": []string{"html", "pdf", "xlsx", "csv", "json"}},
		"time_zone": str("IANA zone of the cadence and the periods (default: the organization's, else UTC)"), "cadence": ref("Cadence"), "forecast": ref("ForecastSpec")}),
	"ReportSchedulePatch": object(nil, schema{"format": schema{"type": "string", "enum": []string{"html", "pdf", "xlsx", "csv", "json"}},
		"time_zone": str(""), "cadence": ref("Cadence"), "forecast": ref("ForecastSpec")}),
	"Cadence": object([]string{"every"}, schema{"every": schema{"type": "string", "enum": []string{"daily", "weekly", "monthly", "interval"}},
		"hour": integer("local hour 0-23 (daily, weekly, monthly)"), "weekday": str("monday … sunday (weekly)"), "day": integer("1-28 (monthly)"),
		"interval_hours": integer("1-744 (interval: at multiples of it since 1970-01-01T00:00Z)")}),
	"ForecastSpec": object([]string{"metric", "threshold", "probability", "horizon_hours"}, schema{"tunnel_id": strf("uuid", "a tunnel; none: the organization"),
		"metric": schema{"type": "string", "enum": []string{"requests", "bytes", "streams"}}, "threshold": schema{"type": "number", "description": "per hour"},
		"probability": schema{"type": "number", "description": "(0, 1]"}, "horizon_hours": integer("1-8760")}),
	"ReportSchedule": object([]string{"id", "platform", "kind", "format", "time_zone", "cadence", "state", "created_by", "created_at", "since", "version", "position"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "platform": schema{"type": "boolean"}, "kind": str(""), "format": str(""), "time_zone": str(""),
		"cadence": ref("Cadence"), "forecast": ref("ForecastSpec"), "state": schema{"type": "string", "enum": []string{"active", "paused", "deleted"}},
		"created_by": str(""), "created_at": strf("date-time", ""), "since": strf("date-time", "runs are due after this"), "next_due_at": strf("date-time", ""),
		"version": integer(""), "position": integer("")}),
	"StoredReport": object([]string{"id", "kind", "format", "from", "to", "sha256", "bytes", "actor", "recorded_at", "position"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "kind": str(""), "format": str(""), "from": str(""), "to": str(""), "sha256": str("of the file"),
		"bytes": integer(""), "schedule_id": strf("uuid", ""), "due_at": strf("date-time", ""), "actor": str(""), "requested_by": str("the schedule's creator"),
		"recorded_at": strf("date-time", ""), "position": integer("of report.generated")}),
	"OrgSettingsInput": object([]string{"time_zone"}, schema{"time_zone": str("IANA time zone, like Europe/Berlin")}),
	"PriceSheetInput": object([]string{"effective_from", "currency", "per_gb_in", "per_gb_out", "per_1k_requests", "per_streamed_hour", "per_tunnel_day"}, schema{
		"effective_from": strf("date-time", "a whole hour, not in the past"), "currency": str("ISO 4217 code"),
		"per_gb_in": str("decimal, per 10^9 bytes from callers"), "per_gb_out": str("decimal, per 10^9 bytes to callers"),
		"per_1k_requests": str("decimal"), "per_streamed_hour": str("decimal, per hour of calls open"), "per_tunnel_day": str("decimal, per local day a tunnel served a request")}),
	"SIEMSinkInput": object([]string{"name", "transport", "format"}, schema{"org": str("organization name or id, or \"*\" for a platform sink"),
		"name": str("DNS label"), "transport": schema{"type": "string", "enum": []string{"syslog", "https"}},
		"address": str("syslog: host:port of an RFC 5425 (TLS) receiver"), "url": strf("uri", "https: the endpoint (HEC: …/services/collector/event)"),
		"profile":    schema{"type": "string", "enum": []string{"hec", "json"}, "description": "https: Splunk HEC, or a plain JSON array per batch"},
		"format":     schema{"type": "string", "enum": []string{"ocsf", "cef", "raw"}, "description": "cef over syslog only; raw is the signed record"},
		"token":      str("HEC or bearer token, sealed by the control plane before it is recorded; left out on PUT: unchanged"),
		"token_ref":  str("env:NAME or file:PATH the control plane reads the token from (platform sinks only)"),
		"client_key": str("PEM private key of the client certificate, sealed like the token"), "client_key_ref": str("env:NAME or file:PATH (platform sinks only)"),
		"server_name": str("TLS name expected of the receiver (default: its host)"), "ca_cert_pem": str("PEM CA certificates the receiver is verified with (default: the system's)"),
		"client_cert_pem": str("PEM client certificate"), "redact_client_ips": schema{"type": "boolean", "description": "hash client addresses with a key of the sink's own"},
		"types": schema{"type": "array", "items": str("event type, or a prefix ending in \".\"")}, "min_severity": integer("lowest OCSF severity_id forwarded, 0-6")}),
	"SIEMSkipInput": object([]string{"position", "reason"}, schema{"position": integer("log position of the refused record (status.stuck_position)"), "reason": str("recorded in the log")}),
	"SIEMSink": object([]string{"id", "platform", "name", "transport", "format", "ca_cert", "client_cert", "redact_client_ips", "configured_by", "configured_at", "updated_at", "version", "position", "status"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", "absent for a platform sink"), "platform": schema{"type": "boolean"}, "name": str(""),
		"transport": str(""), "address": str(""), "url": str(""), "profile": str(""), "format": str(""), "server_name": str(""),
		"ca_cert": schema{"type": "boolean"}, "client_cert": schema{"type": "boolean"},
		"token": str("\"sealed\" or the reference; never the secret"), "client_key": str("\"sealed\" or the reference; never the secret"),
		"redact_client_ips": schema{"type": "boolean"}, "types": schema{"type": "array", "items": str("")}, "min_severity": integer(""),
		"skipped":       schema{"type": "array", "items": integer("log position an operator skipped")},
		"configured_by": str(""), "configured_at": strf("date-time", ""), "updated_at": strf("date-time", ""), "removed_at": strf("date-time", ""),
		"version": integer(""), "position": integer(""), "status": ref("SIEMSinkStatus")}),
	"SIEMSinkStatus": object([]string{"next_position", "seq", "delivered", "retries", "lag_events", "lag_seconds", "refused"}, schema{
		"next_position": integer("next log position to forward"), "seq": integer("last sequence number delivered"),
		"delivered": integer(""), "retries": integer("failed deliveries"), "lag_events": integer("records of the log not yet forwarded"),
		"lag_seconds": schema{"type": "number", "description": "age of the oldest record not yet forwarded"},
		"last_error":  str(""), "last_error_at": strf("date-time", ""),
		"refused":        schema{"type": "boolean", "description": "the receiver refuses a record for good: retried until an operator skips it"},
		"stuck_position": integer("the refused record, once found"), "forwarded_at": strf("date-time", "when the cursor last moved")}),
	"WebhookInput": object([]string{"name", "url"}, schema{"org": str("organization name or id (or the org query parameter)"), "name": str("DNS label"),
		"url":   strf("uri", "https (http only to a loopback host); loopback, private and link-local addresses are refused unless the operator allowed them (SSRF)"),
		"types": schema{"type": "array", "items": schema{"type": "string", "enum": domain.WebhookEventTypes}, "description": "notification types delivered; none: all"}}),
	"Webhook": object([]string{"id", "org_id", "name", "url", "types", "created_by", "created_at", "updated_at", "version", "position", "status"}, schema{
		"id": strf("uuid", ""), "org_id": strf("uuid", ""), "name": str(""), "url": str(""), "types": schema{"type": "array", "items": str("")},
		"secret_rotated_at": strf("date-time", ""), "created_by": str(""), "created_at": strf("date-time", ""), "updated_at": strf("date-time", ""),
		"deleted_at": strf("date-time", ""), "version": integer(""), "position": integer(""), "status": ref("WebhookStatus")}),
	"WebhookStatus": object([]string{"next_position", "delivered", "retried", "failed", "lag_events", "lag_seconds"}, schema{
		"next_position": integer("next log position the deliverer looks at"), "delivered": integer("messages the receiver took (2xx)"),
		"retried": integer("messages that needed more than one try"), "failed": integer("tries that failed"),
		"lag_events": integer("records of the log not yet looked at"), "lag_seconds": schema{"type": "number", "description": "age of the oldest of them"},
		"last_error": str(""), "last_error_at": strf("date-time", ""), "last_delivered_at": strf("date-time", "")}),
	"ProjectionStatus": object([]string{"name", "position", "lag", "generation", "running", "rebuilding"}, schema{"name": str(""),
		"position": integer("last applied position, -1 for none"), "lag": integer("records behind the log head"), "generation": integer(""),
		"running": schema{"type": "boolean"}, "rebuilding": schema{"type": "boolean"}, "last_error": str("")}),
}

// renderOpenAPI builds the OpenAPI 3.1 document.
func (s *Server) renderOpenAPI() ([]byte, error) {
	paths := map[string]schema{}
	comps := map[string]any{}
	for k, v := range schemas {
		comps[k] = v
	}
	for _, op := range operations {
		o := schema{"operationId": op.id, "summary": op.summary, "tags": []string{op.tag}}
		var ps []any
		for _, p := range append(append([]string(nil), op.params...), "header:X-Request-ID", "header:X-Correlation-ID") {
			def, ok := parameters[p]
			if !ok {
				return nil, fmt.Errorf("openapi: %s %s: unknown parameter %q", op.method, op.path, p)
			}
			ps = append(ps, def)
		}
		o["parameters"] = ps
		if op.body != "" {
			o["requestBody"] = schema{"required": !op.bodyOptional, "content": schema{"application/json": schema{"schema": ref(op.body)}}}
		}
		responses := schema{}
		var ok schema
		switch {
		case op.resp == "sse":
			ok = schema{"description": "server-sent events: id (log position), event (the event type), data (the webhook message JSON); heartbeat comments",
				"content": schema{"text/event-stream": schema{"schema": schema{"type": "string"}}}}
		case op.resp == "redirect":
			ok = schema{"description": "redirect (Location)"}
		case op.resp == "html":
			ok = schema{"description": "OK", "content": schema{"text/html": schema{"schema": schema{"type": "string"}}}}
		case op.resp == "":
			ok = schema{"description": http.StatusText(op.status)}
		case op.resp == "text":
			ok = schema{"description": "OK", "content": schema{"text/plain": schema{"schema": schema{"type": "string"}}}}
		case op.resp == "zstd":
			ok = schema{"description": "the bundle (tar compressed with zstd); Repr-Digest and X-Bundle-SHA256 carry the SHA-256 export.created recorded",
				"content": schema{"application/zstd": schema{"schema": schema{"type": "string", "format": "binary"}}}}
		case op.resp == "report":
			content := schema{}
			for _, f := range render.Formats() {
				content[f.ContentType()] = schema{"schema": schema{"type": "string", "format": "binary"}}
			}
			ok = schema{"description": "the report file; X-Report-ID, X-Report-SHA256 and X-Log-Position say what report.generated recorded", "content": content}
		case op.resp == "object":
			ok = schema{"description": "OK", "content": schema{"application/json": schema{"schema": schema{"type": "object"}}}}
		case strings.HasPrefix(op.resp, "List:"):
			item := strings.TrimPrefix(op.resp, "List:")
			name := item + "List"
			comps[name] = object([]string{"items"}, schema{"items": schema{"type": "array", "items": ref(item)},
				"next_cursor": str("present when there may be more; pass as cursor")})
			ok = schema{"description": "a page", "content": schema{"application/json": schema{"schema": ref(name)}}}
		default:
			ok = schema{"description": http.StatusText(op.status), "content": schema{"application/json": schema{"schema": ref(op.resp)}}}
		}
		responses[strconv.Itoa(op.status)] = ok
		errs := op.errs
		if !op.public {
			errs = append(append([]int(nil), errs...), 401, 503)
			o["security"] = []any{schema{"bearer": []string{}}}
		} else {
			o["security"] = []any{}
		}
		for _, code := range errs {
			responses[strconv.Itoa(code)] = schema{"description": http.StatusText(code),
				"content": schema{"application/problem+json": schema{"schema": ref("Problem")}}}
		}
		o["responses"] = responses
		item := paths[op.path]
		if item == nil {
			item = schema{}
			paths[op.path] = item
		}
		m := strings.ToLower(op.method)
		if _, dup := item[m]; dup {
			return nil, fmt.Errorf("openapi: %s %s documented twice", op.method, op.path)
		}
		item[m] = o
	}
	doc := schema{
		"openapi": "3.1.0",
		"info": schema{"title": "tunnelplane admin API", "version": "1",
			"description": "Every change is a command that appends signed events; every read comes from a read model. Write responses carry " +
				"the log position; pass it as wait_for to read your write. Errors are RFC 9457 application/problem+json. A request about an " +
				"organization the caller may not act in is 403 whether or not the object exists; an object not in the named organization is 404."},
		"paths":      paths,
		"components": schema{"schemas": comps, "securitySchemes": schema{"bearer": schema{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
	}
	return json.Marshal(doc)
}

// OpenAPIRoutes lists the operations of the document as "METHOD /path" (for tests and tools).
func OpenAPIRoutes(doc []byte) ([]string, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	var out []string
	for p, ops := range d.Paths {
		for m := range ops {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.doc)
}

// labelsSchema is a map of labels (domain.CheckLabels).
func labelsSchema(desc string) schema {
	return schema{"type": "object", "description": desc + "; keys and values 1-63 lower-case letters, digits, '.', '_' or '-'",
		"additionalProperties": str(""), "maxProperties": domain.MaxTunnelLabels}
}
