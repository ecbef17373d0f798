package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Compliance is the compliance read model (report/compliance reads it; docs/compliance.md).
const Compliance = "compliance"

// Exception rules the compliance projection finds as it applies the log (the others are found
// when a report reads the window; docs/compliance.md).
const (
	// RuleAccessAfterWithdrawal: a user acted, or was denied, in an organization after the last
	// role they held there was withdrawn.
	RuleAccessAfterWithdrawal = "access_after_withdrawal"
)

// complianceSkipped are the types the compliance read model does not index: usage windows (the
// bulk of the log; reports of usage read their own rollups) and the name reservations that
// duplicate their organization or tunnel event.
var complianceSkipped = map[string]bool{
	domain.TypeUsageRecorded:      true,
	domain.TypeOrgNameReserved:    true,
	domain.TypeTunnelNameReserved: true,
	domain.TypeTunnelNameReleased: true,
}

// ComplianceIndexes tells whether the compliance read model indexes events of a type: a report
// can name only those.
func ComplianceIndexes(eventType string) bool { return !complianceSkipped[eventType] }

type complianceProjection struct{}

func (complianceProjection) Name() string { return Compliance }
func (complianceProjection) Tables() []string {
	return []string{"rm_compliance_events", "rm_compliance_hourly", "rm_compliance_credentials", "rm_compliance_roles", "rm_compliance_withdrawn", "rm_compliance_exceptions"}
}
func (complianceProjection) Handles(t string) bool { return ComplianceIndexes(t) }

// complianceFields are the payload fields the read model takes, by their JSON names in every
// event type that has them. They are read leniently (a field of another JSON type reads as
// empty), so a future event type that uses one of these names for something else does not stop
// the projection.
type complianceFields struct {
	OrgID, UserID, ActorID, TokenID, KeyID, SessionID, NodeID, TunnelID, SinkID, ExportID, ReportID string
	Name, Reason, Role, Action, Resource, Subject, RemoteAddr, Version                              string
	Cipher, Kex, ProtocolVersion, AgentVersion, IssuedBy, Command, Result, Report, Format           string
	SHA256, BundleSHA256, Purpose, Owner, OldKeyID, NewKeyID                                        string
	Count, Events                                                                                   int64
	ExpiresAt                                                                                       time.Time
	DroppedDenials, DroppedAuthFailures, DroppedEvents                                              map[string]int64
}

func parseComplianceFields(payload []byte) (complianceFields, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return complianceFields{}, err
	}
	str := func(k string) string {
		var s string
		if v, ok := raw[k]; ok && json.Unmarshal(v, &s) == nil {
			return s
		}
		return ""
	}
	num := func(k string) int64 {
		var n int64
		if v, ok := raw[k]; ok && json.Unmarshal(v, &n) == nil {
			return n
		}
		return 0
	}
	counts := func(k string) map[string]int64 {
		var m map[string]int64
		if v, ok := raw[k]; ok && json.Unmarshal(v, &m) == nil {
			return m
		}
		return nil
	}
	f := complianceFields{
		OrgID: str("org_id"), UserID: str("user_id"), ActorID: str("actor_id"), TokenID: str("token_id"), KeyID: str("key_id"),
		SessionID: str("session_id"), NodeID: str("node_id"), TunnelID: str("tunnel_id"), SinkID: str("sink_id"), ExportID: str("export_id"),
		ReportID: str("report_id"), Name: str("name"), Reason: str("reason"), Role: str("role"), Action: str("action"), Resource: str("resource"),
		Subject: str("subject"), RemoteAddr: str("remote_addr"), Version: str("version"), Cipher: str("cipher"), Kex: str("kex"),
		ProtocolVersion: str("protocol_version"), AgentVersion: str("agent_version"), IssuedBy: str("issued_by"), Command: str("command"),
		Result: str("result"), Report: str("report"), Format: str("format"), SHA256: str("sha256"), BundleSHA256: str("bundle_sha256"),
		Purpose: str("purpose"), Owner: str("owner"), OldKeyID: str("old_key_id"), NewKeyID: str("new_key_id"),
		Count: num("count"), Events: num("events"),
		DroppedDenials: counts("dropped_denials"), DroppedAuthFailures: counts("dropped_auth_failures"), DroppedEvents: counts("dropped_events"),
	}
	if v, ok := raw["expires_at"]; ok {
		_ = json.Unmarshal(v, &f.ExpiresAt)
	}
	return f, nil
}

// complianceText bounds what the read model copies of a payload string (payloads are bounded
// already; this keeps report cells short).
func complianceText(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func (complianceProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	f, err := parseComplianceFields(rec.Payload)
	if err != nil {
		return fmt.Errorf("%s at position %d: %w", rec.Type, rec.Position, err)
	}
	m := metadata(rec)
	org, actor := orDefault(f.OrgID, m.OrgID), m.Actor
	if actor == "" && m.NodeID != "" {
		actor = "node:" + m.NodeID
	}
	subject := firstOf(f.UserID, f.TokenID, f.KeyID, f.SessionID, f.SinkID, f.ExportID, f.ReportID, f.TunnelID, f.NodeID, f.OrgID)
	weight := int64(1)
	var detail string
	var attrs map[string]string
	at := rec.RecordedAt
	switch rec.Type {
	case domain.TypeRoleAssigned, domain.TypeRoleUnassigned:
		detail = f.Role
	case domain.TypeAccessDenied:
		subject, actor, detail, weight = f.ActorID, orDefault(f.ActorID, actor), f.Action+" on "+f.Resource, max(f.Count, 1)
	case domain.TypeAuthFailed:
		subject, detail, weight = f.Subject, f.Reason, max(f.Count, 1)
		if subject == "" && f.RemoteAddr != "" {
			subject = "from " + f.RemoteAddr
		}
	case domain.TypeIngestRejected:
		subject, detail, weight = firstOf(f.NodeID, f.Subject), f.Reason, max(f.Events, 1)
	case domain.TypeAuditOverflowed:
		subject = "auditor"
		detail = fmt.Sprintf("not recorded one by one: %d denials, %d authentication failures; %d audit events dropped",
			sum(f.DroppedDenials), sum(f.DroppedAuthFailures), sum(f.DroppedEvents))
		weight = max(sum(f.DroppedDenials)+sum(f.DroppedAuthFailures)+sum(f.DroppedEvents), 1)
	case domain.TypeAgentTokenIssued, domain.TypeAccessKeyIssued:
		detail = "tunnel " + f.TunnelID + ", expires " + f.ExpiresAt.UTC().Format(time.RFC3339)
		kind, id := "agent_token", f.TokenID
		if rec.Type == domain.TypeAccessKeyIssued {
			kind, id = "access_key", f.KeyID
		}
		b.Queue(`INSERT INTO rm_compliance_credentials (generation, kind, credential_id, org_id, tunnel_id, issued_by, issued_at, expires_at, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
			gen, kind, id, nullable(org), nullable(f.TunnelID), nullable(orDefault(f.IssuedBy, actor)), at, f.ExpiresAt, int64(rec.Position))
	case domain.TypeAgentTokenRevoked, domain.TypeAccessKeyRevoked:
		detail = f.Reason
		kind, id := "agent_token", f.TokenID
		if rec.Type == domain.TypeAccessKeyRevoked {
			kind, id = "access_key", f.KeyID
		}
		b.Queue(`UPDATE rm_compliance_credentials SET revoked_at = coalesce(revoked_at, $4) WHERE generation = $1 AND kind = $2 AND credential_id = $3`,
			gen, kind, id, at)
	case domain.TypeAgentConnected:
		subject = f.SessionID
		detail = f.ProtocolVersion + " " + f.Cipher + " " + f.Kex
		attrs = map[string]string{"node_id": f.NodeID, "tunnel_id": f.TunnelID, "protocol": f.ProtocolVersion, "cipher": f.Cipher, "kex": f.Kex,
			"agent_version": f.AgentVersion}
		at = occurredAt(rec)
	case domain.TypeAgentDisconnected, domain.TypeAgentReplaced:
		detail = f.Reason
		at = occurredAt(rec)
	case domain.TypeNodeStarted:
		subject, detail = f.NodeID, f.Version
		attrs = map[string]string{"version": f.Version}
	case domain.TypeNodeCommandExecuted:
		detail = f.Command + ": " + f.Result
	case domain.TypeExportCreated:
		detail = "bundle sha256 " + f.BundleSHA256
	case domain.TypeReportGenerated:
		detail = f.Report + " " + f.Format + " sha256 " + f.SHA256
	case eventstore.TypeGenesis, eventstore.TypeKeyAdded, eventstore.TypeKeyRotated, eventstore.TypeKeyRevoked:
		detail, subject = logKeyRecord(b, gen, rec, f, actor)
		org = ""
	default:
		detail = firstOf(f.Name, f.Reason, f.Version)
	}
	if subject == "" {
		subject = rec.StreamID
	}
	var attrsJSON []byte
	if attrs != nil {
		if attrsJSON, err = json.Marshal(attrs); err != nil {
			return err
		}
	}
	// The rule first: the event is judged against the roles as they were before it.
	if org != "" && actor != "" && rec.Type != domain.TypeRoleAssigned && rec.Type != domain.TypeRoleUnassigned {
		what := "succeeded: " + rec.Type
		if rec.Type == domain.TypeAccessDenied {
			what = "denied: " + detail + " ×" + strconv.FormatInt(weight, 10)
		}
		b.Queue(`INSERT INTO rm_compliance_exceptions (generation, position, rule, recorded_at, org_id, subject, detail, weight, since, since_position)
			SELECT $1, $2, $3, $4, w.org_id, w.user_id, $7 || ' (last role ' || w.role || ' withdrawn)', $8, w.withdrawn_at, w.position
			FROM rm_compliance_withdrawn w WHERE w.generation = $1 AND w.user_id = $6 AND w.org_id IN ($5, '*')
			AND NOT EXISTS (SELECT 1 FROM rm_compliance_roles r WHERE r.generation = $1 AND r.user_id = $6 AND r.org_id IN ($5, '*'))
			ON CONFLICT DO NOTHING`,
			gen, int64(rec.Position), RuleAccessAfterWithdrawal, at, org, actor, complianceText(what), weight)
	}
	switch rec.Type {
	case domain.TypeRoleAssigned:
		b.Queue(`INSERT INTO rm_compliance_roles (generation, org_id, user_id, role) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, gen, f.OrgID, f.UserID, f.Role)
		b.Queue(`DELETE FROM rm_compliance_withdrawn WHERE generation = $1 AND org_id = $2 AND user_id = $3`, gen, f.OrgID, f.UserID)
	case domain.TypeRoleUnassigned:
		b.Queue(`DELETE FROM rm_compliance_roles WHERE generation = $1 AND org_id = $2 AND user_id = $3 AND role = $4`, gen, f.OrgID, f.UserID, f.Role)
		b.Queue(`INSERT INTO rm_compliance_withdrawn (generation, org_id, user_id, role, withdrawn_at, position)
			SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM rm_compliance_roles WHERE generation = $1 AND org_id = $2 AND user_id = $3)
			ON CONFLICT (generation, org_id, user_id) DO UPDATE SET role = excluded.role, withdrawn_at = excluded.withdrawn_at, position = excluded.position`,
			gen, f.OrgID, f.UserID, f.Role, at, int64(rec.Position))
	}
	// The hourly rollup's keys: see migration 000009 and ComplianceHourKey.
	hourSubject, hourDetail := ComplianceHourKey(rec.Type, complianceText(subject), complianceText(detail), attrs)
	queueHourly(b, gen, at.UTC().Truncate(time.Hour), org, rec.Type, hourSubject, hourDetail, weight, int64(rec.Position))
	b.Queue(`INSERT INTO rm_compliance_events (generation, position, recorded_at, type, org_id, actor, subject, detail, weight, attrs)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		gen, int64(rec.Position), at, rec.Type, nullable(org), nullable(complianceText(actor)), complianceText(subject), nullable(complianceText(detail)), weight, attrsJSON)
	return nil
}

// logKeyRecord keeps the log's own keys as credentials (kind "<purpose>_key"): when each came
// into force and when it was rotated out or revoked.
func logKeyRecord(b *pgx.Batch, gen int, rec eventstore.Record, f complianceFields, actor string) (detail, subject string) {
	insert := func(purpose, id string) {
		b.Queue(`INSERT INTO rm_compliance_credentials (generation, kind, credential_id, issued_by, issued_at, position)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, gen, purpose+"_key", id, nullable(actor), rec.RecordedAt, int64(rec.Position))
	}
	revoke := func(id string) {
		b.Queue(`UPDATE rm_compliance_credentials SET revoked_at = coalesce(revoked_at, $3) WHERE generation = $1 AND credential_id = $2
			AND kind LIKE '%\_key'`, gen, id, rec.RecordedAt)
	}
	switch rec.Type {
	case eventstore.TypeGenesis:
		insert(string(eventstore.PurposeLog), f.KeyID)
		return "log key " + f.KeyID, f.KeyID
	case eventstore.TypeKeyAdded:
		insert(f.Purpose, f.KeyID)
		return strings.TrimSpace(f.Purpose + " key added " + f.Owner), f.KeyID
	case eventstore.TypeKeyRotated:
		revoke(f.OldKeyID)
		insert(f.Purpose, f.NewKeyID)
		return f.Purpose + " key " + f.OldKeyID + " rotated to " + f.NewKeyID, f.NewKeyID
	case eventstore.TypeKeyRevoked:
		revoke(f.KeyID)
		return "key revoked: " + f.Reason, f.KeyID
	}
	return "", ""
}

// hourlyUpsert adds events to an hourly row. Its arguments: generation, hour, org, type, subject,
// detail, weight, first position, last position, events.
const hourlyUpsert = `INSERT INTO rm_compliance_hourly (generation, hour, org_id, type, subject, detail, weight, first_position, last_position, events)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (generation, hour, org_id, type, subject, detail) DO UPDATE SET events = rm_compliance_hourly.events + excluded.events,
	weight = rm_compliance_hourly.weight + excluded.weight, first_position = least(rm_compliance_hourly.first_position, excluded.first_position),
	last_position = greatest(rm_compliance_hourly.last_position, excluded.last_position)`

// queueHourly adds an event to its hourly row. Events of one hour and key come in runs, and
// updating one row many times in a transaction is slow (each update a new row version), so an
// upsert of the same row already queued in this batch takes the event instead of a new one.
func queueHourly(b *pgx.Batch, gen int, hour time.Time, org, typ, subject, detail string, weight, pos int64) {
	for i := len(b.QueuedQueries) - 1; i >= 0; i-- {
		q := b.QueuedQueries[i]
		if q.SQL != hourlyUpsert {
			continue
		}
		a := q.Arguments
		if a[0] == gen && a[1].(time.Time).Equal(hour) && a[2] == org && a[3] == typ && a[4] == subject && a[5] == detail {
			a[6] = a[6].(int64) + weight
			a[8] = max(a[8].(int64), pos)
			a[9] = a[9].(int64) + 1
			return
		}
	}
	b.Queue(hourlyUpsert, gen, hour, org, typ, subject, detail, weight, pos, pos, int64(1))
}

// ComplianceHourKey is how the hourly rollup keys an event beyond its hour, organization and
// type: failed authentications by subject and reason, agent sessions by node and
// "protocol|cipher|kex"; other types not at all. Reports compute the same key from the raw rows
// of a window's partial hours (readmodels), so both halves group alike.
func ComplianceHourKey(eventType, subject, detail string, attrs map[string]string) (string, string) {
	switch eventType {
	case domain.TypeAuthFailed:
		return subject, detail
	case domain.TypeAgentConnected:
		return attrs["node_id"], attrs["protocol"] + "|" + attrs["cipher"] + "|" + attrs["kex"]
	}
	return "", ""
}

func firstOf(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
