package commands

// Objects and actions of the authorization model.
const (
	ObjOrgs        = "orgs"
	ObjTunnels     = "tunnels"
	ObjTokens      = "tokens"
	ObjAccessKeys  = "access_keys"
	ObjRoles       = "roles"
	ObjNodes       = "nodes"
	ObjKeys        = "keys"
	ObjAudit       = "audit"
	ObjProjections = "projections"
	ObjSIEM        = "siem"
	// ObjAnalytics: usage rollups, capacity and chargeback (read), the org's time zone and price
	// sheets (update).
	ObjAnalytics = "analytics"
	// ObjAccessRequests: requests for access to a tunnel (anyone of the organization may make and
	// read them; approving is decided by the tunnel's access policy, not by this model).
	ObjAccessRequests = "access_requests"
	// ObjWebhooks: an organization's webhook endpoints (owners and admins).
	ObjWebhooks = "webhooks"

	ActCreate      = "create"
	ActRead        = "read"
	ActUpdate      = "update"
	ActDelete      = "delete"
	ActIssue       = "issue"
	ActRevoke      = "revoke"
	ActAssign      = "assign"
	ActAssignOwner = "assign_owner"
	ActUnassign    = "unassign"
	ActEnroll      = "enroll"
	ActDrain       = "drain"
	ActRemove      = "remove"
	ActRotate      = "rotate"
	ActRebuild     = "rebuild"
	// ActSkip on ObjSIEM: give up delivering one record to a sink.
	ActSkip = "skip"
	// ActUse on ObjTunnels: call a tunnel or hold its agent credential. No role holds it in the
	// policy; it is decided by domain.MayUseTunnel (Authorizer.CheckTunnelUse) and named in audit
	// events of its denials.
	ActUse = "use"
	// ActShare on ObjTunnels: grant others the use of a tunnel (grants, their revocation, the
	// tunnel's access policy). Issuing access keys is sharing too (ObjAccessKeys:ActIssue).
	ActShare = "share"
)
