package domain

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Event type names. Stored events are found by these strings forever: never rename one.
const (
	TypeOrganizationCreated = "organization.created"
	TypeOrgNameReserved     = "organization.name_reserved"
	TypeOrgSettingsUpdated  = "organization.settings_updated"
	TypePriceSheetSet       = "chargeback.price_sheet_set"

	TypeTunnelCreated      = "tunnel.created"
	TypeTunnelUpdated      = "tunnel.updated"
	TypeTunnelDeleted      = "tunnel.deleted"
	TypeTunnelNameReserved = "tunnel.name_reserved"
	TypeTunnelNameReleased = "tunnel.name_released"

	TypeNodeEnrolled        = "node.enrolled"
	TypeNodeDrainRequested  = "node.drain_requested"
	TypeNodeDrained         = "node.drained"
	TypeNodeRemoved         = "node.removed"
	TypeNodeLost            = "node.lost"
	TypeNodeRecovered       = "node.recovered"
	TypeNodeCommandExecuted = "node.command_executed"
	TypeNodeStarted         = "node.started"

	TypeAgentTokenIssued  = "agent_token.issued"
	TypeAgentTokenRevoked = "agent_token.revoked"

	TypeAccessKeyIssued  = "access_key.issued"
	TypeAccessKeyRevoked = "access_key.revoked"

	TypeEnrollmentTokenIssued  = "enrollment_token.issued"
	TypeEnrollmentTokenUsed    = "enrollment_token.used"
	TypeEnrollmentTokenRevoked = "enrollment_token.revoked"

	TypeRoleAssigned   = "role.assigned"
	TypeRoleUnassigned = "role.unassigned"

	TypeAccessPolicySet     = "access.policy_set"
	TypeGrantCreated        = "grant.created"
	TypeGrantRevoked        = "grant.revoked"
	TypeGrantExpired        = "grant.expired"
	TypeAccessRequested     = "access.requested"
	TypeAccessApproved      = "access.approved"
	TypeAccessRequestDenied = "access.denied"

	TypeAccessDenied    = "audit.access_denied"
	TypeAuthFailed      = "audit.auth_failed"
	TypeIngestRejected  = "audit.ingest_rejected"
	TypeAuditOverflowed = "audit.overflowed"

	TypeUserLoggedIn = "user.logged_in"
	TypeUserDeleted  = "user.deleted"

	TypeAgentConnected    = "agent.connected"
	TypeAgentDisconnected = "agent.disconnected"
	TypeAgentReplaced     = "agent.replaced"
	TypeUsageRecorded     = "usage.recorded"

	TypeSIEMSinkConfigured  = "siem.sink_configured"
	TypeSIEMSinkUpdated     = "siem.sink_updated"
	TypeSIEMSinkRemoved     = "siem.sink_removed"
	TypeSIEMDeliverySkipped = "siem.delivery_skipped"

	TypeExportCreated = "export.created"

	TypeReportGenerated = "report.generated"

	TypeSubjectErased         = "subject.erased"
	TypeReportScheduleCreated = "report.schedule_created"
	TypeReportScheduleUpdated = "report.schedule_updated"
	TypeReportSchedulePaused  = "report.schedule_paused"
	TypeReportScheduleResumed = "report.schedule_resumed"
	TypeReportScheduleDeleted = "report.schedule_deleted"

	TypeCapacityForecastExceeded = "capacity.forecast_exceeded"
)

// NodeReportable tells whether a node may report events of a type (in its own facts stream).
// Everything else is the control plane's to record: a role grant or a tunnel deletion a node
// wrote would otherwise reach the read models and every node's view.
func NodeReportable(eventType string) bool {
	switch eventType {
	case TypeAgentConnected, TypeAgentDisconnected, TypeAgentReplaced, TypeUsageRecorded, TypeNodeCommandExecuted, TypeNodeDrained, TypeNodeStarted,
		TypeFailoverStarted, TypeFailoverCompleted, TypeFailbackCompleted, TypeAccessCallsRecorded:
		return true
	}
	return false
}

// NodeNeeds tells whether nodes act on an event type: their view of the log folds it in. The
// relay sends nodes every other record withheld (position, type, time and hashes only), so audit
// events with callers' addresses, usage and SIEM settings never reach them; they still verify
// every checkpoint over the whole log. ("$log" records, the key history, always go whole.)
func NodeNeeds(eventType string) bool {
	switch eventType {
	case TypeOrganizationCreated, TypeTunnelCreated, TypeTunnelUpdated, TypeTunnelDeleted,
		TypeRoleAssigned, TypeRoleUnassigned, TypeAgentTokenIssued, TypeAgentTokenRevoked, TypeNodeDrainRequested,
		TypeAccessKeyIssued, TypeAccessKeyRevoked,
		TypeGrantCreated, TypeGrantRevoked, TypeGrantExpired,
		TypeTunnelAccessLogSet, TypeUserDeleted:
		return true
	}
	return false
}

// EventType names a type, its current schema version, and how a stored payload of an older
// version is lifted to the next one (Upcasters[v]: v → v+1).
type EventType struct {
	Name          string
	SchemaVersion uint32
	Upcasters     map[uint32]func([]byte) ([]byte, error)
}

// EventTypes is the closed set of domain event types, for registration with the event store.
func EventTypes() []EventType {
	names := []string{
		TypeOrganizationCreated, TypeOrgNameReserved,
		TypeTunnelCreated, TypeTunnelUpdated, TypeTunnelDeleted, TypeTunnelNameReserved, TypeTunnelNameReleased,
		TypeNodeEnrolled, TypeNodeDrainRequested, TypeNodeDrained, TypeNodeRemoved, TypeNodeLost, TypeNodeRecovered, TypeNodeCommandExecuted, TypeNodeStarted,
		TypeAgentTokenIssued, TypeAgentTokenRevoked,
		TypeAccessKeyIssued, TypeAccessKeyRevoked,
		TypeEnrollmentTokenIssued, TypeEnrollmentTokenUsed, TypeEnrollmentTokenRevoked,
		TypeRoleAssigned, TypeRoleUnassigned,
		TypeAccessPolicySet, TypeGrantCreated, TypeGrantRevoked, TypeGrantExpired, TypeAccessRequested, TypeAccessApproved, TypeAccessRequestDenied,
		TypeAccessDenied, TypeAuthFailed, TypeIngestRejected, TypeAuditOverflowed,
		TypeAgentConnected, TypeAgentDisconnected, TypeAgentReplaced, TypeUsageRecorded,
		TypeSIEMSinkConfigured, TypeSIEMSinkUpdated, TypeSIEMSinkRemoved, TypeSIEMDeliverySkipped,
		TypeExportCreated,
		TypeFailoverStarted, TypeFailoverCompleted, TypeFailbackCompleted,
		TypeOrgSettingsUpdated, TypePriceSheetSet,
		TypeReportGenerated,
		TypeSubjectErased,
		TypeWebhookEndpointCreated, TypeWebhookEndpointUpdated, TypeWebhookSecretRotated, TypeWebhookEndpointDeleted, TypeGrantExpiring,
		TypeReportScheduleCreated, TypeReportScheduleUpdated, TypeReportSchedulePaused, TypeReportScheduleResumed, TypeReportScheduleDeleted,
		TypeCapacityForecastExceeded,
		TypeTunnelAccessLogSet, TypeAccessCallsRecorded,
		TypeUserLoggedIn, TypeUserDeleted,
	}
	out := make([]EventType, len(names))
	for i, n := range names {
		out[i] = EventType{Name: n, SchemaVersion: SchemaVersionOf(n)}
		if n == TypeUsageRecorded {
			out[i].Upcasters = map[uint32]func([]byte) ([]byte, error){1: UpcastUsageV1}
		}
	}
	return out
}

// SchemaVersionOf is the schema version new events of a type are written with.
func SchemaVersionOf(eventType string) uint32 {
	if eventType == TypeUsageRecorded {
		return UsageSchemaVersion
	}
	return 1
}

// Event is a domain event payload.
type Event interface {
	EventType() string
}

// Recorded is a stored event as an aggregate replays it.
type Recorded struct {
	Type          string
	Payload       []byte
	StreamVersion uint64
	RecordedAt    time.Time
}

// Decode unmarshals a recorded payload into the event type its name says.
func Decode(typ string, payload []byte) (Event, error) {
	e, err := New(typ)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(payload, e); err != nil {
		return nil, fmt.Errorf("decode %s: %w", typ, err)
	}
	return e, nil
}

// New returns a new zero event of the type its name says (a pointer, to decode into), or
// ErrUnknownEvent.
func New(typ string) (Event, error) {
	var e Event
	switch typ {
	case TypeOrganizationCreated:
		e = &OrganizationCreated{}
	case TypeOrgNameReserved:
		e = &OrgNameReserved{}
	case TypeOrgSettingsUpdated:
		e = &OrgSettingsUpdated{}
	case TypePriceSheetSet:
		e = &PriceSheetSet{}
	case TypeTunnelCreated:
		e = &TunnelCreated{}
	case TypeTunnelUpdated:
		e = &TunnelUpdated{}
	case TypeTunnelDeleted:
		e = &TunnelDeleted{}
	case TypeTunnelNameReserved:
		e = &TunnelNameReserved{}
	case TypeTunnelNameReleased:
		e = &TunnelNameReleased{}
	case TypeNodeEnrolled:
		e = &NodeEnrolled{}
	case TypeNodeDrainRequested:
		e = &NodeDrainRequested{}
	case TypeNodeDrained:
		e = &NodeDrained{}
	case TypeNodeRemoved:
		e = &NodeRemoved{}
	case TypeNodeLost:
		e = &NodeLost{}
	case TypeNodeRecovered:
		e = &NodeRecovered{}
	case TypeNodeCommandExecuted:
		e = &NodeCommandExecuted{}
	case TypeNodeStarted:
		e = &NodeStarted{}
	case TypeAgentTokenIssued:
		e = &AgentTokenIssued{}
	case TypeAgentTokenRevoked:
		e = &AgentTokenRevoked{}
	case TypeAccessKeyIssued:
		e = &AccessKeyIssued{}
	case TypeAccessKeyRevoked:
		e = &AccessKeyRevoked{}
	case TypeEnrollmentTokenIssued:
		e = &EnrollmentTokenIssued{}
	case TypeEnrollmentTokenUsed:
		e = &EnrollmentTokenUsed{}
	case TypeEnrollmentTokenRevoked:
		e = &EnrollmentTokenRevoked{}
	case TypeRoleAssigned:
		e = &RoleAssigned{}
	case TypeRoleUnassigned:
		e = &RoleUnassigned{}
	case TypeAccessPolicySet:
		e = &AccessPolicySet{}
	case TypeGrantCreated:
		e = &GrantCreated{}
	case TypeGrantRevoked:
		e = &GrantRevoked{}
	case TypeGrantExpired:
		e = &GrantExpired{}
	case TypeAccessRequested:
		e = &AccessRequested{}
	case TypeAccessApproved:
		e = &AccessApproved{}
	case TypeAccessRequestDenied:
		e = &AccessRequestDenied{}
	case TypeAccessDenied:
		e = &AccessDenied{}
	case TypeAuthFailed:
		e = &AuthFailed{}
	case TypeIngestRejected:
		e = &IngestRejected{}
	case TypeAuditOverflowed:
		e = &AuditOverflowed{}
	case TypeAgentConnected:
		e = &AgentConnected{}
	case TypeAgentDisconnected:
		e = &AgentDisconnected{}
	case TypeAgentReplaced:
		e = &AgentReplaced{}
	case TypeUsageRecorded:
		e = &UsageRecorded{}
	case TypeSIEMSinkConfigured:
		e = &SIEMSinkConfigured{}
	case TypeSIEMSinkUpdated:
		e = &SIEMSinkUpdated{}
	case TypeSIEMSinkRemoved:
		e = &SIEMSinkRemoved{}
	case TypeSIEMDeliverySkipped:
		e = &SIEMDeliverySkipped{}
	case TypeExportCreated:
		e = &ExportCreated{}
	case TypeFailoverStarted:
		e = &FailoverStarted{}
	case TypeFailoverCompleted:
		e = &FailoverCompleted{}
	case TypeFailbackCompleted:
		e = &FailbackCompleted{}
	case TypeReportGenerated:
		e = &ReportGenerated{}
	case TypeSubjectErased:
		e = &SubjectErased{}
	case TypeWebhookEndpointCreated:
		e = &WebhookEndpointCreated{}
	case TypeWebhookEndpointUpdated:
		e = &WebhookEndpointUpdated{}
	case TypeWebhookSecretRotated:
		e = &WebhookSecretRotated{}
	case TypeWebhookEndpointDeleted:
		e = &WebhookEndpointDeleted{}
	case TypeGrantExpiring:
		e = &GrantExpiring{}
	case TypeReportScheduleCreated:
		e = &ReportScheduleCreated{}
	case TypeReportScheduleUpdated:
		e = &ReportScheduleUpdated{}
	case TypeReportSchedulePaused:
		e = &ReportSchedulePaused{}
	case TypeReportScheduleResumed:
		e = &ReportScheduleResumed{}
	case TypeReportScheduleDeleted:
		e = &ReportScheduleDeleted{}
	case TypeCapacityForecastExceeded:
		e = &CapacityForecastExceeded{}
	case TypeTunnelAccessLogSet:
		e = &TunnelAccessLogSet{}
	case TypeAccessCallsRecorded:
		e = &AccessCallsRecorded{}
	case TypeUserLoggedIn:
		e = &UserLoggedIn{}
	case TypeUserDeleted:
		e = &UserDeleted{}
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, typ)
	}
	return e, nil
}

// ---- organizations ----

// OrganizationCreated starts a tenant.
type OrganizationCreated struct {
	OrgID     string `json:"org_id"`
	Name      string `json:"name"`
	CreatedBy string `json:"created_by"`
}

// OrgNameReserved claims an organization name platform-wide (stream OrgNameStream).
type OrgNameReserved struct {
	OrgID string `json:"org_id"`
	Name  string `json:"name"`
}

// ---- tunnels ----

// TunnelCreated registers a tunnel to an upstream the agent will connect to.
type TunnelCreated struct {
	TunnelID string `json:"tunnel_id"`
	OrgID    string `json:"org_id"`
	Owner    string `json:"owner"`
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Protocol string `json:"protocol"`
	// Labels let access keys scoped by a label selector call the tunnel (none: no such key).
	Labels map[string]string `json:"labels,omitempty"`
}

// TunnelUpdated records changed fields only (nil: unchanged).
type TunnelUpdated struct {
	TunnelID string  `json:"tunnel_id"`
	OrgID    string  `json:"org_id"`
	Name     *string `json:"name,omitempty"`
	Upstream *string `json:"upstream,omitempty"`
	Protocol *string `json:"protocol,omitempty"`
	// Labels are the tunnel's labels from now on, all of them (an empty map: none).
	Labels *map[string]string `json:"labels,omitempty"`
	// CORS is the tunnel's cross-origin setting from now on.
	CORS *TunnelCORS `json:"cors,omitempty"`
}

// TunnelDeleted ends a tunnel; its agents are disconnected.
type TunnelDeleted struct {
	TunnelID string `json:"tunnel_id"`
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	Reason   string `json:"reason,omitempty"`
}

// TunnelNameReserved claims a tunnel name in an organization (stream TunnelNameStream).
type TunnelNameReserved struct {
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	TunnelID string `json:"tunnel_id"`
}

// TunnelNameReleased frees a name after a rename or deletion.
type TunnelNameReleased struct {
	OrgID    string `json:"org_id"`
	Name     string `json:"name"`
	TunnelID string `json:"tunnel_id"`
}

// ---- nodes ----

// NodeEnrolled registers a data-plane node and its two keys (one purpose each).
type NodeEnrolled struct {
	NodeID             string `json:"node_id"`
	Name               string `json:"name"`
	HostKey            string `json:"host_key"` // SSH public key, authorized_keys format
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	EventKeyID         string `json:"event_key_id"`
	AgentURL           string `json:"agent_url,omitempty"`
	IngressURL         string `json:"ingress_url,omitempty"`
}

// NodeDrainRequested asks a node to stop taking agents and let its connections go.
type NodeDrainRequested struct {
	NodeID string `json:"node_id"`
}

// NodeDrained is the node's report that draining finished.
type NodeDrained struct {
	NodeID             string `json:"node_id"`
	AgentsDisconnected int    `json:"agents_disconnected"`
}

// NodeStarted is a node's report that a process of it started: sessions it reported before are
// gone (a process that was killed could not report their ends).
type NodeStarted struct {
	NodeID  string `json:"node_id"`
	Version string `json:"version"`
}

// NodeRemoved takes a node out of the cluster for good; its event key is revoked.
type NodeRemoved struct {
	NodeID string `json:"node_id"`
	Reason string `json:"reason,omitempty"`
}

// NodeLost records that a node stopped heartbeating.
type NodeLost struct {
	NodeID   string    `json:"node_id"`
	LastSeen time.Time `json:"last_seen"`
}

// NodeRecovered records that a lost node heartbeats again.
type NodeRecovered struct {
	NodeID string `json:"node_id"`
}

// NodeCommandExecuted is a node's outcome of a control-plane command.
type NodeCommandExecuted struct {
	CommandID string `json:"command_id"`
	Command   string `json:"command"`
	NodeID    string `json:"node_id"`
	Result    string `json:"result"` // "ok" or "error"
	Detail    string `json:"detail,omitempty"`
}

// ---- agent tokens ----

// AgentTokenIssued records a credential for one tunnel. The token itself is never stored.
type AgentTokenIssued struct {
	TokenID   string    `json:"token_id"`
	OrgID     string    `json:"org_id"`
	TunnelID  string    `json:"tunnel_id"`
	ExpiresAt time.Time `json:"expires_at"`
	KeyID     string    `json:"key_id"`
	IssuedBy  string    `json:"issued_by"`
	// SealKey (base64 of an X25519 public key) and SealGen are the issuer's sealing key: nodes
	// seal agent.connected's remote_addr of this token's agents to it (compliance/pii/sealbox).
	// Tokens issued before, or by a control plane without a keyring, have none; their agents'
	// addresses are left out.
	SealKey string `json:"seal_key,omitempty"`
	SealGen int    `json:"seal_gen,omitempty"`
}

// AgentTokenRevoked makes a token unusable at once; agents using it are disconnected.
type AgentTokenRevoked struct {
	TokenID  string `json:"token_id"`
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id"`
	Reason   string `json:"reason,omitempty"`
}

// ---- tunnel access keys ----

// AccessKeyIssued records a credential that calls one tunnel, or the tunnels of its organization
// whose labels match its selector, and nothing else. The log keeps the SHA-256 of the secret
// (hex), never the secret, which its issuer was shown once.
type AccessKeyIssued struct {
	KeyID    string `json:"key_id"`
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id,omitempty"` // "" for a key scoped by Selector
	// Selector, for a key scoped by labels, are the label pairs a tunnel of OrgID must all carry
	// for the key to call it (at the time of the call).
	Selector   map[string]string `json:"selector,omitempty"`
	SecretHash string            `json:"secret_hash"`
	ExpiresAt  time.Time         `json:"expires_at"`
	// CIDRs are the only source prefixes the key is accepted from (canonical); none: any.
	CIDRs    []string `json:"cidrs,omitempty"`
	RateTier string   `json:"rate_tier,omitempty"`
	// DerivedFrom is the token key the secret was derived from (commands/token.AccessKeySecret):
	// a node refuses the access key once that key is revoked.
	DerivedFrom string `json:"derived_from,omitempty"`
	IssuedBy    string `json:"issued_by"`
}

// AccessKeyRevoked makes an access key unusable at once, on every node.
type AccessKeyRevoked struct {
	KeyID    string `json:"key_id"`
	OrgID    string `json:"org_id"`
	TunnelID string `json:"tunnel_id,omitempty"` // "" for a key scoped by labels
	Reason   string `json:"reason,omitempty"`
}

// ---- node enrollment tokens ----

// EnrollmentTokenIssued records a credential that enrolls data-plane nodes and does nothing else.
// The log keeps the SHA-256 of the token (hex), never the token, which its issuer was shown once.
type EnrollmentTokenIssued struct {
	TokenID    string    `json:"token_id"`
	SecretHash string    `json:"secret_hash"`
	ExpiresAt  time.Time `json:"expires_at"`
	MaxUses    int       `json:"max_uses"`
	// DerivedFrom is the token key the secret was derived from (commands/token).
	DerivedFrom string `json:"derived_from,omitempty"`
	IssuedBy    string `json:"issued_by"`
}

// EnrollmentTokenUsed records that the token enrolled a node: appended to the token's stream in
// the transaction of the node's node.enrolled (whose metadata names the token as its actor), at
// the stream version the use was decided on, so a use beyond max_uses cannot be appended.
type EnrollmentTokenUsed struct {
	TokenID string `json:"token_id"`
	NodeID  string `json:"node_id"`
	// Use counts the token's uses, from 1.
	Use int `json:"use"`
}

// EnrollmentTokenRevoked makes an enrollment token unusable at once.
type EnrollmentTokenRevoked struct {
	TokenID string `json:"token_id"`
	Reason  string `json:"reason,omitempty"`
}

// ---- roles ----

// RoleAssigned grants a user a role in an organization (PlatformOrg for superadmin).
type RoleAssigned struct {
	OrgID  string `json:"org_id"`
	UserID string `json:"user_id"`
	Role   Role   `json:"role"`
}

// RoleUnassigned withdraws a role.
type RoleUnassigned struct {
	OrgID  string `json:"org_id"`
	UserID string `json:"user_id"`
	Role   Role   `json:"role"`
}

// ---- audit ----

// AccessDenied aggregates denied requests of one actor over a window (not one event per request).
type AccessDenied struct {
	ActorID     string    `json:"actor_id"`
	OrgID       string    `json:"org_id,omitempty"`
	Action      string    `json:"action"`
	Resource    string    `json:"resource"`
	Count       int       `json:"count"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
}

// AuthFailed records a failed authentication (login monitoring).
type AuthFailed struct {
	Reason     string    `json:"reason"`
	Subject    string    `json:"subject,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	UserAgent  string    `json:"user_agent,omitempty"`
	Count      int       `json:"count"`
	At         time.Time `json:"at"`
}

// IngestRejected records node events refused by the ingester (unsigned, unknown key, malformed).
type IngestRejected struct {
	Subject string `json:"subject"`
	NodeID  string `json:"node_id,omitempty"`
	KeyID   string `json:"key_id,omitempty"`
	Reason  string `json:"reason"`
	Events  int    `json:"events"`
}

// Reasons the auditor counts in AuditOverflowed. Stored in events: never rename one.
const (
	// OverflowKeyCap: the window already held as many distinct actors (or subjects and addresses)
	// as the auditor keeps; the request was counted, not recorded in an event of its own.
	OverflowKeyCap = "key_cap"
	// OverflowTooLarge, OverflowInvalid, OverflowUnknownType: the store refused the event for good
	// (ErrTooLarge, ErrInvalidEvent, ErrUnknownEventType), even reduced to its bounded fields.
	OverflowTooLarge    = "too_large"
	OverflowInvalid     = "invalid"
	OverflowUnknownType = "unknown_type"
)

// AuditOverflowed counts what the auditor did not record one by one over a window: requests
// beyond its bound on distinct keys, and events the store refused for good. A flood shows in the
// log as this count instead of growing memory or blocking later events. The maps are by reason
// (the Overflow* constants).
type AuditOverflowed struct {
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// DroppedDenials and DroppedAuthFailures count refused requests and failed authentications
	// that are in no access_denied or auth_failed event.
	DroppedDenials      map[string]int `json:"dropped_denials,omitempty"`
	DroppedAuthFailures map[string]int `json:"dropped_auth_failures,omitempty"`
	// DroppedEvents counts audit events not written.
	DroppedEvents map[string]int `json:"dropped_events,omitempty"`
	// ReducedEvents counts events written only after their fields were cut further.
	ReducedEvents int `json:"reduced_events,omitempty"`
}

// ---- data-plane facts (signed by the node that saw them) ----

// AgentConnected: an agent authenticated and holds its tunnel on a node.
type AgentConnected struct {
	NodeID          string `json:"node_id"`
	SessionID       string `json:"session_id"`
	OrgID           string `json:"org_id"`
	TunnelID        string `json:"tunnel_id"`
	TokenID         string `json:"token_id"`
	AgentVersion    string `json:"agent_version"`
	ProtocolVersion string `json:"protocol_version"`
	RemoteAddr      string `json:"remote_addr"`
	KeyExchange     string `json:"kex"`
	Cipher          string `json:"cipher"`
	HostKeyAlgo     string `json:"host_key_algorithm"`
}

// AgentDisconnected: the session ended.
type AgentDisconnected struct {
	NodeID     string `json:"node_id"`
	SessionID  string `json:"session_id"`
	OrgID      string `json:"org_id"`
	TunnelID   string `json:"tunnel_id"`
	TokenID    string `json:"token_id"`
	BytesIn    int64  `json:"bytes_in"`
	BytesOut   int64  `json:"bytes_out"`
	DurationMS int64  `json:"duration_ms"`
	Reason     string `json:"reason"`
}

// AgentReplaced records that an agent took over a tunnel another agent, with another token, held
// on the node: only on the new agent's explicit request (connect --replace). The old session then
// ends with a reason naming the new one.
type AgentReplaced struct {
	NodeID       string `json:"node_id"`
	OrgID        string `json:"org_id"`
	TunnelID     string `json:"tunnel_id"`
	OldSessionID string `json:"old_session_id"`
	OldTokenID   string `json:"old_token_id"`
	NewSessionID string `json:"new_session_id"`
	NewTokenID   string `json:"new_token_id"`
}

// UsageRecorded is one tunnel's traffic from one caller over one window on one node (schema
// version 2; version 1 was per tunnel, with fixed latency buckets, and is upcast: UpcastUsageV1).
type UsageRecorded struct {
	NodeID      string    `json:"node_id"`
	OrgID       string    `json:"org_id"`
	TunnelID    string    `json:"tunnel_id"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// CallerKind is CallerUser, CallerAccessKey, CallerAnonymous, CallerOverflow (callers past the
	// node's bound on distinct callers per window, summed) or "" (a version 1 window: every caller).
	CallerKind string           `json:"caller_kind,omitempty"`
	CallerID   string           `json:"caller_id,omitempty"` // user id or access key id
	Requests   int64            `json:"requests"`
	Errors     map[string]int64 `json:"errors,omitempty"` // by class: upstream, timeout, agent_absent, limit, …
	BytesIn    int64            `json:"bytes_in"`
	BytesOut   int64            `json:"bytes_out"`
	// StreamsMax is the most calls open at once in the window; StreamedMS the time calls were
	// open within it, summed (so StreamedMS / the window's length is the mean number open).
	StreamsMax int64 `json:"streams_max,omitempty"`
	StreamedMS int64 `json:"streamed_ms,omitempty"`
	// Latency is each call's whole duration; TTFB the time to its response's first byte.
	Latency *Histogram `json:"latency_us,omitempty"`
	TTFB    *Histogram `json:"ttfb_us,omitempty"`
}

// Caller kinds of UsageRecorded.
const (
	CallerUser      = "user"
	CallerAccessKey = "access_key"
	CallerAnonymous = "anonymous"
	CallerOverflow  = "overflow"
)

// UsageSchemaVersion is the schema version usage.recorded is written with.
const UsageSchemaVersion = 2

// Validate checks a window as a hostile node could send it.
func (u *UsageRecorded) Validate() error {
	switch u.CallerKind {
	case "", CallerAnonymous, CallerOverflow:
		if u.CallerID != "" {
			return fmt.Errorf("%w: usage: caller kind %q takes no caller id", ErrInvalidFact, u.CallerKind)
		}
	case CallerUser, CallerAccessKey:
		if u.CallerID == "" || len(u.CallerID) > 128 {
			return fmt.Errorf("%w: usage: caller id of kind %q must be 1..128 bytes", ErrInvalidFact, u.CallerKind)
		}
	default:
		return fmt.Errorf("%w: usage: unknown caller kind", ErrInvalidFact)
	}
	if u.Requests < 0 || u.BytesIn < 0 || u.BytesOut < 0 || u.StreamsMax < 0 || u.StreamedMS < 0 {
		return fmt.Errorf("%w: usage: negative count", ErrInvalidFact)
	}
	if !u.WindowEnd.After(u.WindowStart) {
		return fmt.Errorf("%w: usage: window ends before it starts", ErrInvalidFact)
	}
	if len(u.Errors) > 32 {
		return fmt.Errorf("%w: usage: more than 32 error classes", ErrInvalidFact)
	}
	for _, n := range u.Errors {
		if n < 0 {
			return fmt.Errorf("%w: usage: negative error count", ErrInvalidFact)
		}
	}
	if err := u.Latency.Validate(); err != nil {
		return fmt.Errorf("usage latency: %w", err)
	}
	if err := u.TTFB.Validate(); err != nil {
		return fmt.Errorf("usage ttfb: %w", err)
	}
	return nil
}

// UpcastUsageV1 lifts a version 1 usage.recorded payload to version 2. Version 1 counted each
// call's time to first byte (or its whole duration when no response started) in fixed buckets
// with upper bounds in milliseconds; each bucket's calls move to the log-scaled TTFB bucket of
// that upper bound ("+Inf" to the last), so v1 percentiles keep v1's coarser resolution. The
// window stays unattributed to a caller (CallerKind "").
func UpcastUsageV1(payload []byte) ([]byte, error) {
	var v1 struct {
		UsageRecorded
		LatencyBuckets map[string]int64 `json:"latency_ms_buckets,omitempty"`
	}
	if err := json.Unmarshal(payload, &v1); err != nil {
		return nil, fmt.Errorf("usage.recorded v1: %w", err)
	}
	u := v1.UsageRecorded
	u.Latency, u.TTFB = nil, nil
	if len(v1.LatencyBuckets) > 0 {
		var counts [HistogramBuckets]int64
		for bound, n := range v1.LatencyBuckets {
			i := HistogramMaxIndex
			if bound != "+Inf" {
				ms, err := strconv.ParseInt(bound, 10, 64)
				if err != nil || ms < 0 {
					return nil, fmt.Errorf("usage.recorded v1: latency bucket %q: %w", bound, ErrInvalidFact)
				}
				i = HistogramIndex(time.Duration(ms) * time.Millisecond)
			}
			if n < 0 {
				return nil, fmt.Errorf("usage.recorded v1: %w: negative bucket count", ErrInvalidFact)
			}
			counts[i] += n
		}
		u.TTFB = HistogramOf(&counts)
	}
	return json.Marshal(u)
}

func (OrganizationCreated) EventType() string { return TypeOrganizationCreated }
func (OrgNameReserved) EventType() string     { return TypeOrgNameReserved }
func (TunnelCreated) EventType() string       { return TypeTunnelCreated }
func (TunnelUpdated) EventType() string       { return TypeTunnelUpdated }
func (TunnelDeleted) EventType() string       { return TypeTunnelDeleted }
func (TunnelNameReserved) EventType() string  { return TypeTunnelNameReserved }
func (TunnelNameReleased) EventType() string  { return TypeTunnelNameReleased }
func (NodeEnrolled) EventType() string        { return TypeNodeEnrolled }
func (NodeDrainRequested) EventType() string  { return TypeNodeDrainRequested }
func (NodeDrained) EventType() string         { return TypeNodeDrained }
func (NodeRemoved) EventType() string         { return TypeNodeRemoved }
func (NodeLost) EventType() string            { return TypeNodeLost }
func (NodeRecovered) EventType() string       { return TypeNodeRecovered }
func (NodeCommandExecuted) EventType() string { return TypeNodeCommandExecuted }
func (NodeStarted) EventType() string         { return TypeNodeStarted }
func (AgentTokenIssued) EventType() string    { return TypeAgentTokenIssued }
func (AgentTokenRevoked) EventType() string   { return TypeAgentTokenRevoked }
func (AccessKeyIssued) EventType() string     { return TypeAccessKeyIssued }
func (AccessKeyRevoked) EventType() string    { return TypeAccessKeyRevoked }
func (RoleAssigned) EventType() string        { return TypeRoleAssigned }
func (RoleUnassigned) EventType() string      { return TypeRoleUnassigned }
func (AccessDenied) EventType() string        { return TypeAccessDenied }
func (AuthFailed) EventType() string          { return TypeAuthFailed }
func (IngestRejected) EventType() string      { return TypeIngestRejected }
func (AuditOverflowed) EventType() string     { return TypeAuditOverflowed }
func (AgentConnected) EventType() string      { return TypeAgentConnected }
func (AgentDisconnected) EventType() string   { return TypeAgentDisconnected }
func (AgentReplaced) EventType() string       { return TypeAgentReplaced }
func (UsageRecorded) EventType() string       { return TypeUsageRecorded }

// Metadata travels with every appended event (the event store's metadata bytes, as JSON). Every
// field is optional, but commands always set Actor and CorrelationID.
type Metadata struct {
	Actor         string    `json:"actor,omitempty"` // user id, "node:<id>", "system:<component>"
	OrgID         string    `json:"org_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	CausationID   string    `json:"causation_id,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
	UserAgent     string    `json:"user_agent,omitempty"`
	Command       string    `json:"command,omitempty"`
	NodeID        string    `json:"node_id,omitempty"`
	OccurredAt    time.Time `json:"occurred_at,omitzero"`
}
