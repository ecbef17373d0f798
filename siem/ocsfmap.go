package siem

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// The OCSF 1.8 classes tunnelplane's events map to.
type ocsfClass struct {
	uid, category          int
	className, categoryKey string
	// withoutSource: the class has no src_endpoint (the caller's address is then left out).
	withoutSource bool
}

var (
	classAccountChange    = ocsfClass{3001, 3, "Account Change", "Identity & Access Management", false}
	classAuthentication   = ocsfClass{3002, 3, "Authentication", "Identity & Access Management", false}
	classEntityManagement = ocsfClass{3004, 3, "Entity Management", "Identity & Access Management", false}
	classUserAccess       = ocsfClass{3005, 3, "User Access Management", "Identity & Access Management", false}
	classNetworkActivity  = ocsfClass{4001, 4, "Network Activity", "Network Activity", false}
	classTunnelActivity   = ocsfClass{4014, 4, "Tunnel Activity", "Network Activity", false}
	classAppLifecycle     = ocsfClass{6002, 6, "Application Lifecycle", "Application Activity", true}
	classAPIActivity      = ocsfClass{6003, 6, "API Activity", "Application Activity", false}
	classAppError         = ocsfClass{6008, 6, "Application Error", "Application Activity", true}
)

// OCSF severity_id and status_id values.
const (
	sevInformational = 1
	sevLow           = 2
	sevMedium        = 3
	sevHigh          = 4

	statusSuccess = 1
	statusFailure = 2

	activityOther = 99
)

// ocsfMapping is how one event type becomes an OCSF event: its class, activity and severity,
// and the class's own attributes (fill may also change status and severity).
type ocsfMapping struct {
	class    ocsfClass
	activity int
	// activityName names the activity: the class's caption for it, or ours for activity 99.
	activityName string
	severity     int
	message      func(d decoded) string
	// words, when set, is message in parts (joined, they are message): appended one by one, a
	// message costs no string of its own per record.
	words func(d decoded) messageWords
	fill  func(d decoded, o *ocsfEvent)
	// fixed: what the mapping writes of every event alike (renderFixed), set for the table's.
	fixed *ocsfFixed
}

// messageWords are a message's parts, in order; the unused are empty.
type messageWords [6]string

// appendMessage appends d's message as the body of a JSON string.
func (m ocsfMapping) appendMessage(b []byte, d decoded) []byte {
	if m.words == nil {
		return appendJSONStringBody(b, m.message(d))
	}
	for _, w := range m.words(d) {
		b = appendJSONStringBody(b, w)
	}
	return b
}

// ocsfMappings is the table docs/siem.md documents: every domain event type and the log's own
// records (genesis, key history), no other.
var ocsfMappings = map[string]ocsfMapping{
	eventstore.TypeGenesis: entity(1, "Create", "Event log", func(d decoded) (string, string) {
		g := d.event.(*eventstore.GenesisPayload)
		return g.LogID, g.Origin
	}),
	eventstore.TypeKeyAdded: withSeverity(entity(1, "Create", "Signing key", func(d decoded) (string, string) {
		k := d.event.(*eventstore.KeyAddedPayload)
		return k.KeyID, string(k.Purpose) + " key" + owner(k.Owner)
	}), sevLow),
	eventstore.TypeKeyRotated: withSeverity(entity(3, "Update", "Signing key", func(d decoded) (string, string) {
		k := d.event.(*eventstore.KeyRotatedPayload)
		return k.NewKeyID, string(k.Purpose) + " key" + owner(k.Owner) + " replacing " + k.OldKeyID
	}), sevLow),
	eventstore.TypeKeyRevoked: withSeverity(entity(9, "Disable", "Signing key", func(d decoded) (string, string) {
		return d.event.(*eventstore.KeyRevokedPayload).KeyID, ""
	}), sevMedium),
	domain.TypeOrganizationCreated: entity(1, "Create", "Organization", func(d decoded) (string, string) {
		e := d.event.(*domain.OrganizationCreated)
		return e.OrgID, e.Name
	}),
	domain.TypeOrgNameReserved: entity(1, "Create", "Organization name", func(d decoded) (string, string) {
		e := d.event.(*domain.OrgNameReserved)
		return e.OrgID, e.Name
	}),
	domain.TypeTunnelCreated: entity(1, "Create", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelCreated)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelUpdated: entity(3, "Update", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelUpdated)
		name := ""
		if e.Name != nil {
			name = *e.Name
		}
		return e.TunnelID, name
	}),
	domain.TypeTunnelDeleted: entity(4, "Delete", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelDeleted)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelNameReserved: entity(1, "Create", "Tunnel name", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelNameReserved)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelNameReleased: entity(4, "Delete", "Tunnel name", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelNameReleased)
		return e.TunnelID, e.Name
	}),
	domain.TypeNodeEnrolled: entity(6, "Enroll", "Node", func(d decoded) (string, string) {
		e := d.event.(*domain.NodeEnrolled)
		return e.NodeID, e.Name
	}),
	domain.TypeNodeDrainRequested: entity(11, "Deactivate", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeDrainRequested).NodeID, ""
	}),
	domain.TypeNodeDrained: entity(12, "Suspend", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeDrained).NodeID, ""
	}),
	domain.TypeNodeRemoved: entity(7, "Unenroll", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeRemoved).NodeID, ""
	}),
	domain.TypeNodeLost: withSeverity(entity(activityOther, "Lost", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeLost).NodeID, ""
	}), sevMedium),
	domain.TypeNodeRecovered: entity(13, "Resume", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeRecovered).NodeID, ""
	}),
	domain.TypeNodeCommandExecuted: {class: classEntityManagement, activity: 3, activityName: "Update", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.NodeCommandExecuted)
			return "node " + e.NodeID + " ran " + e.Command + ": " + e.Result
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.NodeCommandExecuted)
			o.entity.set, o.entity.uid, o.entity.kind = true, e.NodeID, "Node"
			if e.Result != "ok" {
				o.status(statusFailure, e.Detail)
				o.severity = sevLow
			}
		}},
	domain.TypeNodeStarted: {class: classAppLifecycle, activity: 3, activityName: "Start", severity: sevInformational,
		message: func(d decoded) string { return "node " + d.event.(*domain.NodeStarted).NodeID + " started" },
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.NodeStarted)
			o.app.set, o.app.uid, o.app.version = true, e.NodeID, e.Version
		}},
	domain.TypeAgentTokenIssued: entity(1, "Create", "Agent token", func(d decoded) (string, string) {
		return d.event.(*domain.AgentTokenIssued).TokenID, ""
	}),
	domain.TypeAgentTokenRevoked: entity(9, "Disable", "Agent token", func(d decoded) (string, string) {
		return d.event.(*domain.AgentTokenRevoked).TokenID, ""
	}),
	domain.TypeAccessKeyIssued: entity(1, "Create", "Tunnel access key", func(d decoded) (string, string) {
		return d.event.(*domain.AccessKeyIssued).KeyID, ""
	}),
	domain.TypeAccessKeyRevoked: entity(9, "Disable", "Tunnel access key", func(d decoded) (string, string) {
		return d.event.(*domain.AccessKeyRevoked).KeyID, ""
	}),
	domain.TypeAccessPolicySet: entity(3, "Update", "Tunnel access policy", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessPolicySet)
		return e.TunnelID, string(e.ApproverRole)
	}),
	domain.TypeGrantCreated: entity(1, "Create", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantCreated)
		return e.GrantID, e.SubjectKind + ":" + e.Subject
	}),
	domain.TypeGrantRevoked: entity(9, "Disable", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantRevoked)
		return e.GrantID, ""
	}),
	domain.TypeGrantExpired: entity(9, "Disable", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantExpired)
		return e.GrantID, ""
	}),
	domain.TypeAccessRequested: entity(1, "Create", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessRequested)
		return e.RequestID, e.Requester
	}),
	domain.TypeAccessApproved: entity(3, "Update", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessApproved)
		return e.RequestID, e.Approver
	}),
	domain.TypeAccessRequestDenied: entity(3, "Update", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessRequestDenied)
		return e.RequestID, e.DeniedBy
	}),
	domain.TypeEnrollmentTokenIssued: entity(1, "Create", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenIssued).TokenID, ""
	}),
	domain.TypeEnrollmentTokenUsed: entity(activityOther, "Use", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenUsed).TokenID, ""
	}),
	domain.TypeEnrollmentTokenRevoked: entity(9, "Disable", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenRevoked).TokenID, ""
	}),
	domain.TypeRoleAssigned: {class: classUserAccess, activity: 1, activityName: "Assign Privileges", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.RoleAssigned)
			return "role " + string(e.Role) + " assigned to " + e.UserID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.RoleAssigned)
			o.user.kind, o.user.v = userUID, e.UserID
			o.privilege = some(string(e.Role))
		}},
	domain.TypeRoleUnassigned: {class: classUserAccess, activity: 2, activityName: "Revoke Privileges", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.RoleUnassigned)
			return "role " + string(e.Role) + " withdrawn from " + e.UserID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.RoleUnassigned)
			o.user.kind, o.user.v = userUID, e.UserID
			o.privilege = some(string(e.Role))
		}},
	// A deletion ends a person's access at once: worth a look.
	domain.TypeUserDeleted: {class: classAccountChange, activity: 6, activityName: "Delete", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.UserDeleted)
			return e.UserID + " deleted from " + orgScope(e.OrgID) + ": " + e.Reason
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.UserDeleted)
			o.user.kind, o.user.v = userUID, e.UserID
		}},
	domain.TypeAuthFailed: {class: classAuthentication, activity: 1, activityName: "Logon", severity: sevMedium,
		message: func(d decoded) string { return "authentication failed: " + d.event.(*domain.AuthFailed).Reason },
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AuthFailed)
			o.user.kind, o.user.v = userName, "unknown"
			if e.Subject != "" {
				o.user.kind, o.user.v = userUID, e.Subject
			}
			o.service = some("tunnelplane")
			o.status(statusFailure, e.Reason)
			o.count = someInt(e.Count)
			if ep := endpoint(e.RemoteAddr); ep.kind != endpointNone {
				o.srcEnd = ep
			}
		}},
	domain.TypeUserLoggedIn: {class: classAuthentication, activity: 1, activityName: "Logon", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.UserLoggedIn)
			return e.UserID + " logged in through " + e.Issuer
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.UserLoggedIn)
			o.user.kind, o.user.v = userUID, e.UserID
			o.service = some("tunnelplane")
			o.status(statusSuccess, "")
			o.srcEndpoint(d)
			if e.Host != "" { // the one host the token is for (a browser login)
				o.dstHost = some(e.Host)
			}
		}},
	domain.TypeAccessDenied: {class: classAPIActivity, activity: activityOther, activityName: "Denied", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.AccessDenied)
			return e.ActorID + " was denied " + e.Action + " on " + e.Resource
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AccessDenied)
			o.actor = ocsfActor{kind: actorUser, uid: e.ActorID}
			o.api = some(e.Action)
			o.resource = some(e.Resource)
			o.srcEndpoint(d)
			o.status(statusFailure, "access denied")
			o.count = someInt(e.Count)
			o.window.set, o.window.start, o.window.end = true, e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
		}},
	domain.TypeIngestRejected: {class: classAPIActivity, activity: 1, activityName: "Create", severity: sevMedium,
		message: func(d decoded) string { return "node facts refused: " + d.event.(*domain.IngestRejected).Reason },
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.IngestRejected)
			o.actor = ocsfActor{kind: actorAppWithID, appName: "tunnelplane node", uid: nonEmpty(e.NodeID, "unknown")}
			o.api = some("publish node facts")
			o.srcEnd = ocsfEndpoint{kind: endpointUID, v: nonEmpty(e.NodeID, e.Subject)}
			o.status(statusFailure, e.Reason)
			o.count = someInt(e.Events)
		}},
	domain.TypeAuditOverflowed: {class: classAppError, activity: activityOther, activityName: "Audit overflow", severity: sevHigh,
		message: func(d decoded) string {
			return "the audit writer dropped or reduced events between " + d.event.(*domain.AuditOverflowed).WindowStart.UTC().Format("15:04:05") +
				" and " + d.event.(*domain.AuditOverflowed).WindowEnd.UTC().Format("15:04:05")
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AuditOverflowed)
			o.window.set, o.window.start, o.window.end = true, e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
		}},
	domain.TypeAgentConnected: {class: classTunnelActivity, activity: 1, activityName: "Open", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentConnected)
			return "agent connected to node " + e.NodeID + " for tunnel " + e.TunnelID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AgentConnected)
			o.sessionUID = some(e.SessionID)
			if ep := endpoint(e.RemoteAddr); ep.kind != endpointNone {
				o.srcEnd = ep
			}
			o.dstUID = some(e.NodeID)
			o.protocol = "ssh"
		}},
	domain.TypeAgentDisconnected: {class: classTunnelActivity, activity: 2, activityName: "Close", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentDisconnected)
			return "agent disconnected from node " + e.NodeID + ": " + e.Reason
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AgentDisconnected)
			o.sessionUID = some(e.SessionID)
			o.dstUID = some(e.NodeID)
			o.traffic.set, o.traffic.in, o.traffic.out = true, e.BytesIn, e.BytesOut
			o.duration = someInt(e.DurationMS)
			o.statusDetail = some(e.Reason)
		}},
	domain.TypeAgentReplaced: {class: classTunnelActivity, activity: activityOther, activityName: "Replace", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentReplaced)
			return "agent session " + e.OldSessionID + " replaced by " + e.NewSessionID + " on node " + e.NodeID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AgentReplaced)
			o.sessionUID = some(e.NewSessionID)
			o.dstUID = some(e.NodeID)
		}},
	domain.TypeFailoverStarted: {class: classTunnelActivity, activity: activityOther, activityName: "Failover", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.FailoverStarted)
			return "agent of tunnel " + e.TunnelID + " left node " + e.FromNodeID + " (" + e.Cause + "), reported by node " + e.NodeID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.FailoverStarted)
			o.sessionUID = some(e.SessionID)
			o.dstUID = some(e.NodeID)
			o.statusDetail = some(e.Cause)
		}},
	domain.TypeFailoverCompleted: {class: classTunnelActivity, activity: activityOther, activityName: "Failover", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.FailoverCompleted)
			return "agent of tunnel " + e.TunnelID + " moved from node " + e.FromNodeID + " to node " + e.NodeID + " (" + e.Cause + ")"
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.FailoverCompleted)
			o.sessionUID = some(e.SessionID)
			o.dstUID = some(e.NodeID)
			o.statusDetail = some(e.Cause)
			o.duration = someInt(e.DurationMS)
		}},
	domain.TypeFailbackCompleted: {class: classTunnelActivity, activity: activityOther, activityName: "Failback", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.FailbackCompleted)
			return "agent of tunnel " + e.TunnelID + " moved back from node " + e.FromNodeID + " to node " + e.NodeID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.FailbackCompleted)
			o.sessionUID = some(e.SessionID)
			o.dstUID = some(e.NodeID)
		}},
	domain.TypeUsageRecorded: {class: classNetworkActivity, activity: 6, activityName: "Traffic", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.UsageRecorded)
			return strconv.FormatInt(e.Requests, 10) + " calls" + usageCallerWords(e) + " through tunnel " + e.TunnelID + " on node " + e.NodeID
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.UsageRecorded)
			o.traffic.set, o.traffic.in, o.traffic.out = true, e.BytesIn, e.BytesOut
			o.count = someInt(e.Requests)
			o.window.set, o.window.start, o.window.end = true, e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
			o.dstUID = some(e.NodeID)
			switch e.CallerKind {
			case domain.CallerUser:
				o.actor.caller = ocsfCaller{kind: callerUser, v: e.CallerID}
			case domain.CallerAccessKey:
				o.actor.caller = ocsfCaller{kind: callerAccessKey, v: e.CallerID}
			case domain.CallerAnonymous:
				o.actor.caller = ocsfCaller{kind: callerName, v: "anonymous"}
			}
		}},
	// What a tunnel's nodes report about its calls decides what "who accessed what" can answer.
	domain.TypeTunnelAccessLogSet: withSeverity(entity(3, "Update", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelAccessLogSet)
		return e.TunnelID, "access log " + e.AccessLog
	}), sevLow),
	domain.TypeAccessCallsRecorded: {class: classNetworkActivity, activity: 6, activityName: "Traffic", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AccessCallsRecorded)
			return accessCallsWords(e)
		},
		fill: func(d decoded, o *ocsfEvent) {
			e := d.event.(*domain.AccessCallsRecorded)
			in, out := e.Bytes()
			o.traffic.set, o.traffic.in, o.traffic.out = true, in, out
			o.count = someInt(int64(len(e.Calls)))
			o.dstUID = some(e.NodeID)
		}},
	domain.TypeSIEMSinkConfigured: entity(1, "Create", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMSinkConfigured)
		return e.SinkID, e.Name
	}),
	domain.TypeSIEMSinkUpdated: withSeverity(entity(3, "Update", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMSinkUpdated)
		return e.SinkID, e.Name
	}), sevLow),
	// Removing a sink, or skipping a record, is what someone hiding their tracks would do.
	domain.TypeSIEMSinkRemoved: withSeverity(entity(4, "Delete", "SIEM sink", func(d decoded) (string, string) {
		return d.event.(*domain.SIEMSinkRemoved).SinkID, ""
	}), sevMedium),
	domain.TypeSIEMDeliverySkipped: withSeverity(entity(activityOther, "Skip", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMDeliverySkipped)
		return e.SinkID, "record " + strconv.FormatUint(e.Position, 10) + " skipped"
	}), sevMedium),
	// Evidence leaving the log is worth a look: who took which window.
	domain.TypeExportCreated: withSeverity(entity(1, "Create", "Evidence bundle", func(d decoded) (string, string) {
		e := d.event.(*domain.ExportCreated)
		return e.ExportID, "positions " + strconv.FormatUint(e.From, 10) + ".." + strconv.FormatUint(e.To, 10)
	}), sevLow),
	domain.TypeOrgSettingsUpdated: entity(3, "Update", "Organization settings", func(d decoded) (string, string) {
		e := d.event.(*domain.OrgSettingsUpdated)
		return e.OrgID, "time zone " + e.TimeZone
	}),
	// Prices decide what an organization is charged: a change is worth a look.
	domain.TypePriceSheetSet: withSeverity(entity(1, "Create", "Price sheet", func(d decoded) (string, string) {
		e := d.event.(*domain.PriceSheetSet)
		return e.OrgID, e.Currency + " from " + e.EffectiveFrom.UTC().Format("2006-01-02T15:04:05Z")
	}), sevLow),
	// A report is evidence leaving the log too (derived, not the records): who took which report.
	domain.TypeReportGenerated: withSeverity(entity(1, "Create", "Report", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportGenerated)
		return e.ReportID, e.Report + " " + e.From + ".." + e.To + " (" + e.Format + ")"
	}), sevLow),
	// Erasing a subject's personal data cannot be undone: worth a look.
	domain.TypeSubjectErased: withSeverity(entity(4, "Delete", "Personal data", func(d decoded) (string, string) {
		e := d.event.(*domain.SubjectErased)
		return e.Subject, "of subject " + e.Subject + ", " + strconv.FormatInt(e.KeysDestroyed, 10) + " keys destroyed"
	}), sevMedium),
	// A webhook sends an organization's notifications out: where, and a change of it, are worth a look.
	domain.TypeWebhookEndpointCreated: withSeverity(entity(1, "Create", "Webhook endpoint", func(d decoded) (string, string) {
		e := d.event.(*domain.WebhookEndpointCreated)
		return e.EndpointID, e.Name + " " + domain.WebhookHost(e.URL)
	}), sevLow),
	domain.TypeWebhookEndpointUpdated: withSeverity(entity(3, "Update", "Webhook endpoint", func(d decoded) (string, string) {
		e := d.event.(*domain.WebhookEndpointUpdated)
		return e.EndpointID, e.Name + " " + domain.WebhookHost(e.URL)
	}), sevLow),
	domain.TypeWebhookSecretRotated: entity(3, "Update", "Webhook endpoint", func(d decoded) (string, string) {
		return d.event.(*domain.WebhookSecretRotated).EndpointID, "secret rotated"
	}),
	domain.TypeWebhookEndpointDeleted: entity(4, "Delete", "Webhook endpoint", func(d decoded) (string, string) {
		return d.event.(*domain.WebhookEndpointDeleted).EndpointID, ""
	}),
	domain.TypeGrantExpiring: entity(activityOther, "Expiring", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantExpiring)
		return e.GrantID, e.SubjectKind + ":" + e.Subject + " until " + e.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z")
	}),
	domain.TypeReportScheduleCreated: entity(1, "Create", "Report schedule", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportScheduleCreated)
		return e.ScheduleID, e.Kind + " " + e.Cadence.Every + " (" + e.Format + ")"
	}),
	domain.TypeReportScheduleUpdated: entity(3, "Update", "Report schedule", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportScheduleUpdated)
		return e.ScheduleID, e.Kind + " " + e.Cadence.Every + " (" + e.Format + ")"
	}),
	domain.TypeReportSchedulePaused: entity(activityOther, "Pause", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportSchedulePaused).ScheduleID, ""
	}),
	domain.TypeReportScheduleResumed: entity(activityOther, "Resume", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportScheduleResumed).ScheduleID, ""
	}),
	domain.TypeReportScheduleDeleted: entity(4, "Delete", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportScheduleDeleted).ScheduleID, ""
	}),
	// A capacity warning asks for an operator's attention before the tunnel runs out.
	domain.TypeCapacityForecastExceeded: withSeverity(entity(activityOther, "Forecast exceeded", "Capacity", func(d decoded) (string, string) {
		e := d.event.(*domain.CapacityForecastExceeded)
		scope := "organization " + e.OrgID
		if e.TunnelID != "" {
			scope = "tunnel " + e.TunnelID
		}
		return e.ScheduleID, scope + " " + e.Metric + " above " + strconv.FormatFloat(e.Threshold, 'f', -1, 64) + "/h around " +
			e.Hour.UTC().Format("2006-01-02T15:04:05Z") + " (p=" + strconv.FormatFloat(e.Probability, 'f', 2, 64) + ")"
	}), sevMedium),
}

// accessCallsWords says what a batch of call records holds.
func accessCallsWords(e *domain.AccessCallsRecorded) string {
	m := strconv.Itoa(len(e.Calls)) + " call records from node " + e.NodeID
	if e.Dropped > 0 {
		m += ", " + strconv.FormatInt(e.Dropped, 10) + " calls not recorded (the node's queue was full)"
	}
	return m
}

// usageCallerWords names a usage window's caller in its message (" by user alice").
func usageCallerWords(e *domain.UsageRecorded) string {
	switch e.CallerKind {
	case domain.CallerUser:
		return " by user " + e.CallerID
	case domain.CallerAccessKey:
		return " by access key " + e.CallerID
	case domain.CallerAnonymous:
		return " by anonymous callers"
	case domain.CallerOverflow:
		return " by callers past the node's bound per window"
	}
	return ""
}

// entity maps an event to Entity Management: activity, the entity's kind, and its id and name.
func entity(activity int, activityName, kind string, idName func(d decoded) (id, name string)) ocsfMapping {
	done := ": " + strings.ToLower(activityName)
	closeDone := ")" + done
	words := func(d decoded) messageWords {
		id, name := idName(d)
		if name != "" {
			return messageWords{kind, " ", name, " (", id, closeDone}
		}
		return messageWords{kind, " ", id, done}
	}
	return ocsfMapping{class: classEntityManagement, activity: activity, activityName: activityName, severity: sevInformational,
		message: func(d decoded) string {
			w := words(d)
			return strings.Join(w[:], "")
		},
		words: words,
		fill: func(d decoded, o *ocsfEvent) {
			id, name := idName(d)
			o.entity.set, o.entity.uid, o.entity.kind, o.entity.name = true, id, kind, name
		}}
}

func owner(o string) string {
	if o == "" {
		return ""
	}
	return " of " + o
}

func withSeverity(m ocsfMapping, severity int) ocsfMapping {
	m.severity = severity
	return m
}

// endpoint is a network endpoint from "host:port" or a bare address, or none.
func endpoint(addr string) ocsfEndpoint {
	if addr == "" {
		return ocsfEndpoint{}
	}
	host, port := addr, ""
	if strings.IndexByte(addr, ':') >= 0 { // without one, SplitHostPort fails: a bare host
		var err error
		if host, port, err = net.SplitHostPort(addr); err != nil {
			host, port = addr, ""
		}
	}
	if strings.HasPrefix(host, redactedPrefix) {
		return ocsfEndpoint{kind: endpointUID, v: host} // hashed (Redactor): an identity, not an address
	}
	ep := ocsfEndpoint{kind: endpointHostname, v: host}
	// net.ParseIP, then IP.String: no zone, and an IPv4-mapped address written as IPv4.
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		ep = ocsfEndpoint{kind: endpointIP, ip: ip.Unmap()}
	}
	if port != "" {
		if p, err := strconv.Atoi(port); err == nil && p > 0 && p < 65536 {
			ep.port = p
		}
	}
	return ep
}

func nonEmpty(s, fallback string) string {
	if s != "" {
		return s
	}
	return fallback
}

// orgScope names an organization id for a message, or every organization for domain.PlatformOrg.
func orgScope(org string) string {
	if org == domain.PlatformOrg {
		return "every organization"
	}
	return "organization " + org
}
