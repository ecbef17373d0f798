package siem

// The OCSF builder as it was before the typed encoder: every event a map[string]any, marshalled
// by encoding/json. Kept as the reference the encoder must match byte for byte
// (TestOCSFIsTheMapBuiltReference); not used by the product.

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// OCSFByMaps is OCSF as the map-based builder writes it.
func OCSFByMaps(e Entry, p Product) ([]byte, error) {
	d, err := decode(e)
	if err != nil {
		return nil, err
	}
	b, _, err := refEncode(d, p)
	return b, err
}

// refOrgID is decoded.orgID as it was: the payload probed for org_id.
func refOrgID(d decoded) string {
	if d.md.OrgID != "" {
		return d.md.OrgID
	}
	var probe struct {
		OrgID string `json:"org_id"`
	}
	_ = json.Unmarshal(d.Record.Payload, &probe)
	return probe.OrgID
}

// refEvent is one OCSF event under construction.
type refEvent map[string]any

func (o refEvent) status(id int, detail string) {
	o["status_id"] = id
	o["status"] = map[int]string{statusSuccess: "Success", statusFailure: "Failure"}[id]
	if detail != "" {
		o["status_detail"] = detail
	}
}

// srcEndpoint is the caller's address from the record's metadata, when it has one.
func (o refEvent) srcEndpoint(d decoded) {
	if ep := refEndpoint(d.md.ClientIP); ep != nil {
		o["src_endpoint"] = ep
		return
	}
	o["src_endpoint"] = map[string]any{"name": "unknown"}
}

// refEncode is the decoded entry as OCSF JSON, and its severity_id.
func refEncode(d decoded, p Product) ([]byte, int, error) {
	e := d.Entry
	m, ok := refMappings[d.Record.Type]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", ErrUnmapped, d.Record.Type)
	}
	o := refEvent{
		"class_uid":     m.class.uid,
		"class_name":    m.class.className,
		"category_uid":  m.class.category,
		"category_name": m.class.categoryKey,
		"activity_id":   m.activity,
		"activity_name": m.activityName,
		"type_uid":      m.class.uid*100 + m.activity,
		"type_name":     m.class.className + ": " + m.activityName,
		"severity_id":   m.severity,
		"time":          d.when().UnixMilli(),
		"message":       m.message(d),
	}
	o.status(statusSuccess, "")
	md := map[string]any{
		"version":     OCSFVersion,
		"product":     map[string]any{"name": p.Name, "vendor_name": p.Vendor, "version": p.Version},
		"uid":         d.Record.EventID.String(),
		"sequence":    e.Seq,
		"logged_time": d.Record.RecordedAt.UnixMilli(),
		"log_name":    "tunnelplane event log",
		"event_code":  d.Record.Type,
	}
	if d.md.CorrelationID != "" {
		md["correlation_uid"] = d.md.CorrelationID
	}
	if org := refOrgID(d); org != "" {
		md["tenant_uid"] = org
	}
	o["metadata"] = md
	if actor := refActor(d.md.Actor); actor != nil {
		o["actor"] = actor
	}
	if d.md.ClientIP != "" && !m.class.withoutSource {
		o.srcEndpoint(d)
	}
	m.fill(d, o)
	o["severity"] = refSeverityNames[o["severity_id"].(int)]
	payload := json.RawMessage(d.Record.Payload)
	if e.Redact != nil {
		// The payload as recorded holds the addresses: give the redacted event instead.
		b, err := json.Marshal(d.event)
		if err != nil {
			return nil, 0, fmt.Errorf("siem: record %d: %w", d.Record.Position, err)
		}
		payload = b
	}
	o["unmapped"] = map[string]any{"tunnelplane": map[string]any{
		"position":     d.Record.Position,
		"event_type":   d.Record.Type,
		"stream_id":    d.Record.StreamID,
		"record_hash":  d.hash(),
		"sink_seq":     e.Seq,
		"payload":      payload,
		"request_id":   d.md.RequestID,
		"causation_id": d.md.CausationID,
	}}
	b, err := json.Marshal(o)
	return b, o["severity_id"].(int), err
}

var refSeverityNames = map[int]string{sevInformational: "Informational", sevLow: "Low", sevMedium: "Medium", sevHigh: "High"}

// refActor is who acted, from the record's metadata actor: a user id, "node:<id>" or
// "system:<component>".
func refActor(actor string) map[string]any {
	switch {
	case actor == "":
		return nil
	case strings.HasPrefix(actor, "node:"):
		return map[string]any{"app_name": "tunnelplane node", "app_uid": strings.TrimPrefix(actor, "node:")}
	case strings.HasPrefix(actor, "system:"):
		return map[string]any{"app_name": "tunnelplane " + strings.TrimPrefix(actor, "system:")}
	}
	return map[string]any{"user": map[string]any{"uid": actor}}
}

// refMapping is how one event type becomes an OCSF event: its class, activity and severity,
// and the class's own attributes (fill may also change status and severity).
type refMapping struct {
	class    ocsfClass
	activity int
	// activityName names the activity: the class's caption for it, or ours for activity 99.
	activityName string
	severity     int
	message      func(d decoded) string
	fill         func(d decoded, o refEvent)
}

// refMappings is the table docs/siem.md documents: every domain event type and the log's own
// records (genesis, key history), no other.
var refMappings = map[string]refMapping{
	domain.TypeAccessKeyIssued: refEntity(1, "Create", "Tunnel access key", func(d decoded) (string, string) {
		return d.event.(*domain.AccessKeyIssued).KeyID, ""
	}),
	domain.TypeAccessKeyRevoked: refEntity(9, "Disable", "Tunnel access key", func(d decoded) (string, string) {
		return d.event.(*domain.AccessKeyRevoked).KeyID, ""
	}),
	domain.TypeEnrollmentTokenIssued: refEntity(1, "Create", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenIssued).TokenID, ""
	}),
	domain.TypeEnrollmentTokenRevoked: refEntity(9, "Disable", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenRevoked).TokenID, ""
	}),
	domain.TypeEnrollmentTokenUsed: refEntity(activityOther, "Use", "Node enrollment token", func(d decoded) (string, string) {
		return d.event.(*domain.EnrollmentTokenUsed).TokenID, ""
	}),
	domain.TypeExportCreated: refWithSeverity(refEntity(1, "Create", "Evidence bundle", func(d decoded) (string, string) {
		e := d.event.(*domain.ExportCreated)
		return e.ExportID, "positions " + strconv.FormatUint(e.From, 10) + ".." + strconv.FormatUint(e.To, 10)
	}), sevLow),
	domain.TypeOrgSettingsUpdated: refEntity(3, "Update", "Organization settings", func(d decoded) (string, string) {
		e := d.event.(*domain.OrgSettingsUpdated)
		return e.OrgID, "time zone " + e.TimeZone
	}),
	domain.TypePriceSheetSet: refWithSeverity(refEntity(1, "Create", "Price sheet", func(d decoded) (string, string) {
		e := d.event.(*domain.PriceSheetSet)
		return e.OrgID, e.Currency + " from " + e.EffectiveFrom.UTC().Format("2006-01-02T15:04:05Z")
	}), sevLow),
	domain.TypeReportGenerated: refWithSeverity(refEntity(1, "Create", "Report", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportGenerated)
		return e.ReportID, e.Report + " " + e.From + ".." + e.To + " (" + e.Format + ")"
	}), sevLow),
	domain.TypeSIEMDeliverySkipped: refWithSeverity(refEntity(activityOther, "Skip", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMDeliverySkipped)
		return e.SinkID, "record " + strconv.FormatUint(e.Position, 10) + " skipped"
	}), sevMedium),
	domain.TypeSIEMSinkConfigured: refEntity(1, "Create", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMSinkConfigured)
		return e.SinkID, e.Name
	}),
	domain.TypeSIEMSinkRemoved: refWithSeverity(refEntity(4, "Delete", "SIEM sink", func(d decoded) (string, string) {
		return d.event.(*domain.SIEMSinkRemoved).SinkID, ""
	}), sevMedium),
	domain.TypeSIEMSinkUpdated: refWithSeverity(refEntity(3, "Update", "SIEM sink", func(d decoded) (string, string) {
		e := d.event.(*domain.SIEMSinkUpdated)
		return e.SinkID, e.Name
	}), sevLow),
	domain.TypeReportScheduleCreated: refEntity(1, "Create", "Report schedule", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportScheduleCreated)
		return e.ScheduleID, e.Kind + " " + e.Cadence.Every + " (" + e.Format + ")"
	}),
	domain.TypeReportScheduleUpdated: refEntity(3, "Update", "Report schedule", func(d decoded) (string, string) {
		e := d.event.(*domain.ReportScheduleUpdated)
		return e.ScheduleID, e.Kind + " " + e.Cadence.Every + " (" + e.Format + ")"
	}),
	domain.TypeReportSchedulePaused: refEntity(activityOther, "Pause", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportSchedulePaused).ScheduleID, ""
	}),
	domain.TypeReportScheduleResumed: refEntity(activityOther, "Resume", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportScheduleResumed).ScheduleID, ""
	}),
	domain.TypeReportScheduleDeleted: refEntity(4, "Delete", "Report schedule", func(d decoded) (string, string) {
		return d.event.(*domain.ReportScheduleDeleted).ScheduleID, ""
	}),
	// A capacity warning asks for an operator's attention before the tunnel runs out.
	domain.TypeCapacityForecastExceeded: refWithSeverity(refEntity(activityOther, "Forecast exceeded", "Capacity", func(d decoded) (string, string) {
		e := d.event.(*domain.CapacityForecastExceeded)
		scope := "organization " + e.OrgID
		if e.TunnelID != "" {
			scope = "tunnel " + e.TunnelID
		}
		return e.ScheduleID, scope + " " + e.Metric + " above " + strconv.FormatFloat(e.Threshold, 'f', -1, 64) + "/h around " +
			e.Hour.UTC().Format("2006-01-02T15:04:05Z") + " (p=" + strconv.FormatFloat(e.Probability, 'f', 2, 64) + ")"
	}), sevMedium),
	eventstore.TypeGenesis: refEntity(1, "Create", "Event log", func(d decoded) (string, string) {
		g := d.event.(*eventstore.GenesisPayload)
		return g.LogID, g.Origin
	}),
	eventstore.TypeKeyAdded: refWithSeverity(refEntity(1, "Create", "Signing key", func(d decoded) (string, string) {
		k := d.event.(*eventstore.KeyAddedPayload)
		return k.KeyID, string(k.Purpose) + " key" + refOwner(k.Owner)
	}), sevLow),
	eventstore.TypeKeyRotated: refWithSeverity(refEntity(3, "Update", "Signing key", func(d decoded) (string, string) {
		k := d.event.(*eventstore.KeyRotatedPayload)
		return k.NewKeyID, string(k.Purpose) + " key" + refOwner(k.Owner) + " replacing " + k.OldKeyID
	}), sevLow),
	eventstore.TypeKeyRevoked: refWithSeverity(refEntity(9, "Disable", "Signing key", func(d decoded) (string, string) {
		return d.event.(*eventstore.KeyRevokedPayload).KeyID, ""
	}), sevMedium),
	domain.TypeOrganizationCreated: refEntity(1, "Create", "Organization", func(d decoded) (string, string) {
		e := d.event.(*domain.OrganizationCreated)
		return e.OrgID, e.Name
	}),
	domain.TypeOrgNameReserved: refEntity(1, "Create", "Organization name", func(d decoded) (string, string) {
		e := d.event.(*domain.OrgNameReserved)
		return e.OrgID, e.Name
	}),
	domain.TypeTunnelCreated: refEntity(1, "Create", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelCreated)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelUpdated: refEntity(3, "Update", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelUpdated)
		name := ""
		if e.Name != nil {
			name = *e.Name
		}
		return e.TunnelID, name
	}),
	domain.TypeTunnelDeleted: refEntity(4, "Delete", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelDeleted)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelNameReserved: refEntity(1, "Create", "Tunnel name", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelNameReserved)
		return e.TunnelID, e.Name
	}),
	domain.TypeTunnelNameReleased: refEntity(4, "Delete", "Tunnel name", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelNameReleased)
		return e.TunnelID, e.Name
	}),
	domain.TypeNodeEnrolled: refEntity(6, "Enroll", "Node", func(d decoded) (string, string) {
		e := d.event.(*domain.NodeEnrolled)
		return e.NodeID, e.Name
	}),
	domain.TypeNodeDrainRequested: refEntity(11, "Deactivate", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeDrainRequested).NodeID, ""
	}),
	domain.TypeNodeDrained: refEntity(12, "Suspend", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeDrained).NodeID, ""
	}),
	domain.TypeNodeRemoved: refEntity(7, "Unenroll", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeRemoved).NodeID, ""
	}),
	domain.TypeNodeLost: refWithSeverity(refEntity(activityOther, "Lost", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeLost).NodeID, ""
	}), sevMedium),
	domain.TypeNodeRecovered: refEntity(13, "Resume", "Node", func(d decoded) (string, string) {
		return d.event.(*domain.NodeRecovered).NodeID, ""
	}),
	domain.TypeNodeCommandExecuted: {class: classEntityManagement, activity: 3, activityName: "Update", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.NodeCommandExecuted)
			return "node " + e.NodeID + " ran " + e.Command + ": " + e.Result
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.NodeCommandExecuted)
			o["entity"] = map[string]any{"uid": e.NodeID, "type": "Node"}
			if e.Result != "ok" {
				o.status(statusFailure, e.Detail)
				o["severity_id"] = sevLow
			}
		}},
	domain.TypeNodeStarted: {class: classAppLifecycle, activity: 3, activityName: "Start", severity: sevInformational,
		message: func(d decoded) string { return "node " + d.event.(*domain.NodeStarted).NodeID + " started" },
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.NodeStarted)
			o["app"] = map[string]any{"name": "tunnelplane node", "uid": e.NodeID, "version": e.Version, "vendor_name": "tunnelplane"}
		}},
	domain.TypeAgentTokenIssued: refEntity(1, "Create", "Agent token", func(d decoded) (string, string) {
		return d.event.(*domain.AgentTokenIssued).TokenID, ""
	}),
	domain.TypeAgentTokenRevoked: refEntity(9, "Disable", "Agent token", func(d decoded) (string, string) {
		return d.event.(*domain.AgentTokenRevoked).TokenID, ""
	}),
	domain.TypeAccessPolicySet: refEntity(3, "Update", "Tunnel access policy", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessPolicySet)
		return e.TunnelID, string(e.ApproverRole)
	}),
	domain.TypeGrantCreated: refEntity(1, "Create", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantCreated)
		return e.GrantID, e.SubjectKind + ":" + e.Subject
	}),
	domain.TypeGrantRevoked: refEntity(9, "Disable", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantRevoked)
		return e.GrantID, ""
	}),
	domain.TypeGrantExpired: refEntity(9, "Disable", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantExpired)
		return e.GrantID, ""
	}),
	domain.TypeAccessRequested: refEntity(1, "Create", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessRequested)
		return e.RequestID, e.Requester
	}),
	domain.TypeAccessApproved: refEntity(3, "Update", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessApproved)
		return e.RequestID, e.Approver
	}),
	domain.TypeAccessRequestDenied: refEntity(3, "Update", "Access request", func(d decoded) (string, string) {
		e := d.event.(*domain.AccessRequestDenied)
		return e.RequestID, e.DeniedBy
	}),
	domain.TypeRoleAssigned: {class: classUserAccess, activity: 1, activityName: "Assign Privileges", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.RoleAssigned)
			return "role " + string(e.Role) + " assigned to " + e.UserID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.RoleAssigned)
			o["user"] = map[string]any{"uid": e.UserID}
			o["privileges"] = []any{string(e.Role)}
		}},
	domain.TypeRoleUnassigned: {class: classUserAccess, activity: 2, activityName: "Revoke Privileges", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.RoleUnassigned)
			return "role " + string(e.Role) + " withdrawn from " + e.UserID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.RoleUnassigned)
			o["user"] = map[string]any{"uid": e.UserID}
			o["privileges"] = []any{string(e.Role)}
		}},
	domain.TypeUserDeleted: {class: classAccountChange, activity: 6, activityName: "Delete", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.UserDeleted)
			scope := "organization " + e.OrgID
			if e.OrgID == "*" {
				scope = "every organization"
			}
			return e.UserID + " deleted from " + scope + ": " + e.Reason
		},
		fill: func(d decoded, o refEvent) {
			o["user"] = map[string]any{"uid": d.event.(*domain.UserDeleted).UserID}
		}},
	domain.TypeAuthFailed: {class: classAuthentication, activity: 1, activityName: "Logon", severity: sevMedium,
		message: func(d decoded) string { return "authentication failed: " + d.event.(*domain.AuthFailed).Reason },
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AuthFailed)
			user := map[string]any{"name": "unknown"}
			if e.Subject != "" {
				user = map[string]any{"uid": e.Subject}
			}
			o["user"] = user
			o["service"] = map[string]any{"name": "tunnelplane"}
			o.status(statusFailure, e.Reason)
			o["count"] = e.Count
			if ep := refEndpoint(e.RemoteAddr); ep != nil {
				o["src_endpoint"] = ep
			}
		}},
	domain.TypeUserLoggedIn: {class: classAuthentication, activity: 1, activityName: "Logon", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.UserLoggedIn)
			return e.UserID + " logged in through " + e.Issuer
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.UserLoggedIn)
			o["user"] = map[string]any{"uid": e.UserID}
			o["service"] = map[string]any{"name": "tunnelplane"}
			o.status(statusSuccess, "")
			o.srcEndpoint(d)
			if e.Host != "" {
				o["dst_endpoint"] = map[string]any{"hostname": e.Host}
			}
		}},
	domain.TypeAccessDenied: {class: classAPIActivity, activity: activityOther, activityName: "Denied", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.AccessDenied)
			return e.ActorID + " was denied " + e.Action + " on " + e.Resource
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AccessDenied)
			o["actor"] = map[string]any{"user": map[string]any{"uid": e.ActorID}}
			o["api"] = map[string]any{"operation": e.Action}
			o["resources"] = []any{map[string]any{"name": e.Resource}}
			o.srcEndpoint(d)
			o.status(statusFailure, "access denied")
			o["count"] = e.Count
			o["start_time"], o["end_time"] = e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
		}},
	domain.TypeIngestRejected: {class: classAPIActivity, activity: 1, activityName: "Create", severity: sevMedium,
		message: func(d decoded) string { return "node facts refused: " + d.event.(*domain.IngestRejected).Reason },
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.IngestRejected)
			o["actor"] = map[string]any{"app_name": "tunnelplane node", "app_uid": nonEmpty(e.NodeID, "unknown")}
			o["api"] = map[string]any{"operation": "publish node facts"}
			o["src_endpoint"] = map[string]any{"uid": nonEmpty(e.NodeID, e.Subject)}
			o.status(statusFailure, e.Reason)
			o["count"] = e.Events
		}},
	domain.TypeAuditOverflowed: {class: classAppError, activity: activityOther, activityName: "Audit overflow", severity: sevHigh,
		message: func(d decoded) string {
			return "the audit writer dropped or reduced events between " + d.event.(*domain.AuditOverflowed).WindowStart.UTC().Format("15:04:05") +
				" and " + d.event.(*domain.AuditOverflowed).WindowEnd.UTC().Format("15:04:05")
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AuditOverflowed)
			o["start_time"], o["end_time"] = e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
		}},
	domain.TypeAgentConnected: {class: classTunnelActivity, activity: 1, activityName: "Open", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentConnected)
			return "agent connected to node " + e.NodeID + " for tunnel " + e.TunnelID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AgentConnected)
			o["session"] = map[string]any{"uid": e.SessionID}
			if ep := refEndpoint(e.RemoteAddr); ep != nil {
				o["src_endpoint"] = ep
			}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
			o["protocol_name"] = "ssh"
		}},
	domain.TypeAgentDisconnected: {class: classTunnelActivity, activity: 2, activityName: "Close", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentDisconnected)
			return "agent disconnected from node " + e.NodeID + ": " + e.Reason
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AgentDisconnected)
			o["session"] = map[string]any{"uid": e.SessionID}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
			o["traffic"] = map[string]any{"bytes_in": e.BytesIn, "bytes_out": e.BytesOut, "bytes": e.BytesIn + e.BytesOut}
			o["duration"] = e.DurationMS
			o["status_detail"] = e.Reason
		}},
	domain.TypeAgentReplaced: {class: classTunnelActivity, activity: activityOther, activityName: "Replace", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.AgentReplaced)
			return "agent session " + e.OldSessionID + " replaced by " + e.NewSessionID + " on node " + e.NodeID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AgentReplaced)
			o["session"] = map[string]any{"uid": e.NewSessionID}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
		}},
	domain.TypeFailoverStarted: {class: classTunnelActivity, activity: activityOther, activityName: "Failover", severity: sevLow,
		message: func(d decoded) string {
			e := d.event.(*domain.FailoverStarted)
			return "agent of tunnel " + e.TunnelID + " left node " + e.FromNodeID + " (" + e.Cause + "), reported by node " + e.NodeID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.FailoverStarted)
			o["session"] = map[string]any{"uid": e.SessionID}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
			o["status_detail"] = e.Cause
		}},
	domain.TypeFailoverCompleted: {class: classTunnelActivity, activity: activityOther, activityName: "Failover", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.FailoverCompleted)
			return "agent of tunnel " + e.TunnelID + " moved from node " + e.FromNodeID + " to node " + e.NodeID + " (" + e.Cause + ")"
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.FailoverCompleted)
			o["session"] = map[string]any{"uid": e.SessionID}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
			o["status_detail"] = e.Cause
			o["duration"] = e.DurationMS
		}},
	domain.TypeFailbackCompleted: {class: classTunnelActivity, activity: activityOther, activityName: "Failback", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.FailbackCompleted)
			return "agent of tunnel " + e.TunnelID + " moved back from node " + e.FromNodeID + " to node " + e.NodeID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.FailbackCompleted)
			o["session"] = map[string]any{"uid": e.SessionID}
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
		}},
	domain.TypeSubjectErased: refWithSeverity(refEntity(4, "Delete", "Personal data", func(d decoded) (string, string) {
		e := d.event.(*domain.SubjectErased)
		return e.Subject, "of subject " + e.Subject + ", " + strconv.FormatInt(e.KeysDestroyed, 10) + " keys destroyed"
	}), sevMedium),
	domain.TypeTunnelAccessLogSet: refWithSeverity(refEntity(3, "Update", "Tunnel", func(d decoded) (string, string) {
		e := d.event.(*domain.TunnelAccessLogSet)
		return e.TunnelID, "access log " + e.AccessLog
	}), sevLow),
	domain.TypeAccessCallsRecorded: {class: classNetworkActivity, activity: 6, activityName: "Traffic", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.AccessCallsRecorded)
			m := strconv.Itoa(len(e.Calls)) + " call records from node " + e.NodeID
			if e.Dropped > 0 {
				m += ", " + strconv.FormatInt(e.Dropped, 10) + " calls not recorded (the node's queue was full)"
			}
			return m
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.AccessCallsRecorded)
			var in, out int64
			for _, c := range e.Calls {
				in, out = in+c.BytesIn, out+c.BytesOut
			}
			o["traffic"] = map[string]any{"bytes_in": in, "bytes_out": out, "bytes": in + out}
			o["count"] = len(e.Calls)
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
		}},
	domain.TypeUsageRecorded: {class: classNetworkActivity, activity: 6, activityName: "Traffic", severity: sevInformational,
		message: func(d decoded) string {
			e := d.event.(*domain.UsageRecorded)
			return strconv.FormatInt(e.Requests, 10) + " calls" + usageCallerWords(e) + " through tunnel " + e.TunnelID + " on node " + e.NodeID
		},
		fill: func(d decoded, o refEvent) {
			e := d.event.(*domain.UsageRecorded)
			o["traffic"] = map[string]any{"bytes_in": e.BytesIn, "bytes_out": e.BytesOut, "bytes": e.BytesIn + e.BytesOut}
			o["count"] = e.Requests
			o["start_time"], o["end_time"] = e.WindowStart.UnixMilli(), e.WindowEnd.UnixMilli()
			o["dst_endpoint"] = map[string]any{"uid": e.NodeID}
			var user map[string]any
			switch e.CallerKind {
			case domain.CallerUser:
				user = map[string]any{"uid": e.CallerID}
			case domain.CallerAccessKey:
				user = map[string]any{"credential_uid": e.CallerID, "type": "Tunnel access key", "type_id": 99, "uid": e.CallerID}
			case domain.CallerAnonymous:
				user = map[string]any{"name": "anonymous"}
			default:
				return
			}
			actor, _ := o["actor"].(map[string]any)
			if actor == nil {
				actor = map[string]any{}
				o["actor"] = actor
			}
			actor["user"] = user
		}},
	domain.TypeWebhookEndpointCreated: refWithSeverity(refEntity(1, "Create", "Webhook endpoint", func(d decoded) (string, string) {
		e := d.event.(*domain.WebhookEndpointCreated)
		return e.EndpointID, e.Name + " " + domain.WebhookHost(e.URL)
	}), sevLow),
	domain.TypeWebhookEndpointUpdated: refWithSeverity(refEntity(3, "Update", "Webhook endpoint", func(d decoded) (string, string) {
		e := d.event.(*domain.WebhookEndpointUpdated)
		return e.EndpointID, e.Name + " " + domain.WebhookHost(e.URL)
	}), sevLow),
	domain.TypeWebhookSecretRotated: refEntity(3, "Update", "Webhook endpoint", func(d decoded) (string, string) {
		return d.event.(*domain.WebhookSecretRotated).EndpointID, "secret rotated"
	}),
	domain.TypeWebhookEndpointDeleted: refEntity(4, "Delete", "Webhook endpoint", func(d decoded) (string, string) {
		return d.event.(*domain.WebhookEndpointDeleted).EndpointID, ""
	}),
	domain.TypeGrantExpiring: refEntity(activityOther, "Expiring", "Tunnel grant", func(d decoded) (string, string) {
		e := d.event.(*domain.GrantExpiring)
		return e.GrantID, e.SubjectKind + ":" + e.Subject + " until " + e.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z")
	}),
}

// entity maps an event to Entity Management: activity, the entity's kind, and its id and name.
func refEntity(activity int, activityName, kind string, idName func(d decoded) (id, name string)) refMapping {
	return refMapping{class: classEntityManagement, activity: activity, activityName: activityName, severity: sevInformational,
		message: func(d decoded) string {
			id, name := idName(d)
			if name != "" {
				id = name + " (" + id + ")"
			}
			return kind + " " + id + ": " + strings.ToLower(activityName)
		},
		fill: func(d decoded, o refEvent) {
			id, name := idName(d)
			ent := map[string]any{"uid": id, "type": kind}
			if name != "" {
				ent["name"] = name
			}
			o["entity"] = ent
		}}
}

func refOwner(o string) string {
	if o == "" {
		return ""
	}
	return " of " + o
}

func refWithSeverity(m refMapping, severity int) refMapping {
	m.severity = severity
	return m
}

// endpoint is a network endpoint from "host:port" or a bare address, or nil.
func refEndpoint(addr string) map[string]any {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.HasPrefix(host, redactedPrefix) {
		return map[string]any{"uid": host} // hashed (Redactor): an identity, not an address
	}
	ep := map[string]any{}
	if ip := net.ParseIP(host); ip != nil {
		ep["ip"] = ip.String()
	} else {
		ep["hostname"] = host
	}
	if p, err := strconv.Atoi(port); err == nil && p > 0 && p < 65536 {
		ep["port"] = p
	}
	return ep
}
