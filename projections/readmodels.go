package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Names of the built-in projections; each serves the view of the same name.
const (
	Orgs            = "orgs"
	Tunnels         = "tunnels"
	Nodes           = "nodes"
	AgentTokens     = "agent_tokens"
	RoleAssignments = "role_assignments"
	Audit           = "audit"
	AgentSessions   = "agent_sessions"
)

// All returns the built-in projections.
func All() []Projection {
	return []Projection{orgsProjection{}, tunnelsProjection{}, nodesProjection{}, tokensProjection{}, rolesProjection{}, auditProjection{},
		sessionsProjection{}, siemSinksProjection{}, accessKeysProjection{}, webhooksProjection{},
		enrollmentTokensProjection{}, usageProjection{}, complianceProjection{}, accessRequestsProjection{}, reportSchedulesProjection{}, accessCallsProjection{}}
}

// folds tells whether p applies rec. A node's facts stream holds only what a node may report (the
// ingester refuses the rest); another type found there was written around that check, and no
// read model takes it, except the audit index, which lists everything the log holds.
func folds(p Projection, rec eventstore.Record) bool {
	if !p.Handles(rec.Type) {
		return false
	}
	return p.Name() == Audit || !strings.HasPrefix(rec.StreamID, domain.NodeFactsStream("")) || domain.NodeReportable(rec.Type)
}

// decode parses a domain event; events of other packages (the store's "$log" stream) are nil.
func decode(rec eventstore.Record) (domain.Event, error) {
	if rec.StreamID == eventstore.LogStream {
		return nil, nil
	}
	return domain.Decode(rec.Type, rec.Payload)
}

type orgsProjection struct{}

func (orgsProjection) Name() string          { return Orgs }
func (orgsProjection) Tables() []string      { return []string{"rm_orgs"} }
func (orgsProjection) Handles(t string) bool { return t == domain.TypeOrganizationCreated }
func (orgsProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	ev := e.(*domain.OrganizationCreated)
	meta := metadata(rec)
	b.Queue(`INSERT INTO rm_orgs (generation, org_id, name, created_by, created_at, position) VALUES ($1, $2, $3, $4, $5, $6)`,
		gen, ev.OrgID, ev.Name, orDefault(ev.CreatedBy, meta.Actor), rec.RecordedAt, int64(rec.Position))
	return nil
}

type tunnelsProjection struct{}

func (tunnelsProjection) Name() string     { return Tunnels }
func (tunnelsProjection) Tables() []string { return []string{"rm_tunnels"} }
func (tunnelsProjection) Handles(t string) bool {
	return t == domain.TypeTunnelCreated || t == domain.TypeTunnelUpdated || t == domain.TypeTunnelDeleted || t == domain.TypeTunnelAccessLogSet
}
func (tunnelsProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.TunnelCreated:
		labels := ev.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		queue(b, rec, `INSERT INTO rm_tunnels (generation, tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position, labels)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9, $10, $11)`,
			gen, ev.TunnelID, ev.OrgID, ev.Name, ev.Owner, ev.Upstream, ev.Protocol, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position), labels)
	case *domain.TunnelUpdated:
		// Labels and CORS are whole values: nil (not in the event) keeps the column.
		queue(b, rec, `UPDATE rm_tunnels SET name = coalesce($3, name), upstream = coalesce($4, upstream), protocol = coalesce($5, protocol),
			labels = coalesce($9, labels), cors = coalesce($10, cors),
			version = $6, updated_at = $7, position = $8 WHERE generation = $1 AND tunnel_id = $2`,
			gen, ev.TunnelID, ev.Name, ev.Upstream, ev.Protocol, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position), ev.Labels, ev.CORS)
	case *domain.TunnelAccessLogSet:
		queue(b, rec, `UPDATE rm_tunnels SET access_log = $3, version = $4, updated_at = $5, position = $6 WHERE generation = $1 AND tunnel_id = $2`,
			gen, ev.TunnelID, ev.AccessLog, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position))
	case *domain.TunnelDeleted:
		queue(b, rec, `UPDATE rm_tunnels SET state = 'deleted', version = $3, updated_at = $4, position = $5 WHERE generation = $1 AND tunnel_id = $2`,
			gen, ev.TunnelID, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position))
	}
	return nil
}

type nodesProjection struct{}

func (nodesProjection) Name() string     { return Nodes }
func (nodesProjection) Tables() []string { return []string{"rm_nodes"} }
func (nodesProjection) Handles(t string) bool {
	switch t {
	case domain.TypeNodeEnrolled, domain.TypeNodeDrainRequested, domain.TypeNodeRemoved, domain.TypeNodeLost, domain.TypeNodeRecovered:
		return true
	}
	return false
}
func (nodesProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	set := func(sql string, nodeID string) {
		queue(b, rec, `UPDATE rm_nodes SET `+sql+`, version = $3, updated_at = $4, position = $5 WHERE generation = $1 AND node_id = $2`,
			gen, nodeID, int64(rec.StreamVersion), rec.RecordedAt, int64(rec.Position))
	}
	switch ev := e.(type) {
	case *domain.NodeEnrolled:
		queue(b, rec, `INSERT INTO rm_nodes (generation, node_id, name, state, host_key, host_key_fingerprint, event_key_id, agent_url, ingress_url,
			enrolled_at, updated_at, version, position) VALUES ($1, $2, $3, 'joined', $4, $5, $6, $7, $8, $9, $9, $10, $11)`,
			gen, ev.NodeID, ev.Name, ev.HostKey, ev.HostKeyFingerprint, ev.EventKeyID, ev.AgentURL, ev.IngressURL, rec.RecordedAt, int64(rec.StreamVersion), int64(rec.Position))
	case *domain.NodeDrainRequested:
		set(`state = 'draining'`, ev.NodeID)
	case *domain.NodeRemoved:
		set(`state = 'left'`, ev.NodeID)
	case *domain.NodeLost:
		set(`lost = true`, ev.NodeID)
	case *domain.NodeRecovered:
		set(`lost = false`, ev.NodeID)
	}
	return nil
}

type tokensProjection struct{}

func (tokensProjection) Name() string     { return AgentTokens }
func (tokensProjection) Tables() []string { return []string{"rm_agent_tokens"} }
func (tokensProjection) Handles(t string) bool {
	return t == domain.TypeAgentTokenIssued || t == domain.TypeAgentTokenRevoked
}
func (tokensProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.AgentTokenIssued:
		queue(b, rec, `INSERT INTO rm_agent_tokens (generation, token_id, org_id, tunnel_id, key_id, issued_by, issued_at, expires_at, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, gen, ev.TokenID, ev.OrgID, ev.TunnelID, ev.KeyID, ev.IssuedBy, rec.RecordedAt, ev.ExpiresAt, int64(rec.Position))
	case *domain.AgentTokenRevoked:
		queue(b, rec, `UPDATE rm_agent_tokens SET revoked_at = $3, revoke_reason = $4, position = $5 WHERE generation = $1 AND token_id = $2`,
			gen, ev.TokenID, rec.RecordedAt, ev.Reason, int64(rec.Position))
	}
	return nil
}

type rolesProjection struct{}

func (rolesProjection) Name() string     { return RoleAssignments }
func (rolesProjection) Tables() []string { return []string{"rm_role_assignments"} }
func (rolesProjection) Handles(t string) bool {
	return t == domain.TypeRoleAssigned || t == domain.TypeRoleUnassigned
}
func (rolesProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	switch ev := e.(type) {
	case *domain.RoleAssigned:
		queue(b, rec, `INSERT INTO rm_role_assignments (generation, org_id, user_id, role, assigned_at, position) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (generation, org_id, user_id, role) DO UPDATE SET assigned_at = excluded.assigned_at, position = excluded.position`,
			gen, ev.OrgID, ev.UserID, string(ev.Role), rec.RecordedAt, int64(rec.Position))
	case *domain.RoleUnassigned:
		queue(b, rec, `DELETE FROM rm_role_assignments WHERE generation = $1 AND org_id = $2 AND user_id = $3 AND role = $4`,
			gen, ev.OrgID, ev.UserID, string(ev.Role))
	}
	return nil
}

type auditProjection struct{}

func (auditProjection) Name() string        { return Audit }
func (auditProjection) Tables() []string    { return []string{"rm_audit"} }
func (auditProjection) Handles(string) bool { return true }
func (auditProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	m := metadata(rec)
	org := m.OrgID
	if org == "" {
		var p struct {
			OrgID string `json:"org_id"`
		}
		_ = json.Unmarshal(rec.Payload, &p)
		org = p.OrgID
	}
	actor := m.Actor
	if actor == "" && m.NodeID != "" {
		actor = "node:" + m.NodeID
	}
	b.Queue(`INSERT INTO rm_audit (generation, position, recorded_at, event_id, type, stream_id, actor, org_id, correlation_id,
		causation_id, request_id, client_ip, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		gen, int64(rec.Position), rec.RecordedAt, pgtype.UUID{Bytes: rec.EventID, Valid: true}, rec.Type, rec.StreamID, nullable(actor), nullable(org), nullable(m.CorrelationID),
		nullable(m.CausationID), nullable(m.RequestID), nullable(m.ClientIP), nullable(m.UserAgent))
	return nil
}

// sessionsProjection keeps every agent session a node reported. A node's reports arrive in order,
// and it reports its start before any session of the new process, so the start closes what the
// previous process never reported ended (it was killed, or crashed). A node holds at most one
// session per tunnel, so a new session of a tunnel on a node also closes an open one there.
type sessionsProjection struct{}

// End reasons of sessions their node never reported ended: its next process said it started
// (the previous one was killed or crashed), or, from a node that does not report its starts, it
// reported a newer session of the same tunnel.
const (
	ReasonNodeRestarted = "not reported: the node restarted"
	ReasonSuperseded    = "not reported: the node reported a newer session of this tunnel (it restarted or crashed)"
)

func (sessionsProjection) Name() string     { return AgentSessions }
func (sessionsProjection) Tables() []string { return []string{"rm_agent_sessions"} }
func (sessionsProjection) Handles(t string) bool {
	return t == domain.TypeAgentConnected || t == domain.TypeAgentDisconnected || t == domain.TypeNodeStarted
}
func (sessionsProjection) Apply(_ context.Context, b *pgx.Batch, gen int, rec eventstore.Record) error {
	e, err := decode(rec)
	if err != nil {
		return err
	}
	// What a node says is taken about itself only: the node is the one whose stream holds it
	// (the ingester lets a node write only its own), whatever the payload names.
	node, ok := strings.CutPrefix(rec.StreamID, domain.NodeFactsStream(""))
	if !ok {
		return fmt.Errorf("%s at position %d is in stream %q, not a node's facts stream", rec.Type, rec.Position, rec.StreamID)
	}
	at := occurredAt(rec)
	switch ev := e.(type) {
	case *domain.NodeStarted:
		if err := validIDs(rec, node); err != nil {
			return err
		}
		b.Queue(`UPDATE rm_agent_sessions SET ended_at = greatest($3, connected_at), end_reason = $4
			WHERE generation = $1 AND node_id = $2 AND ended_at IS NULL`, gen, node, at, ReasonNodeRestarted)
	case *domain.AgentConnected:
		if err := validIDs(rec, ev.SessionID, node, ev.OrgID, ev.TunnelID, ev.TokenID); err != nil {
			return err
		}
		b.Queue(`UPDATE rm_agent_sessions SET ended_at = greatest($4, connected_at), end_reason = $5
			WHERE generation = $1 AND node_id = $2 AND tunnel_id = $3 AND ended_at IS NULL`,
			gen, node, ev.TunnelID, at, ReasonSuperseded)
		// A session id already taken (by another node's report) is not this node's to reuse.
		b.Queue(`INSERT INTO rm_agent_sessions (generation, session_id, node_id, org_id, tunnel_id, token_id, agent_version, protocol,
			remote_addr, kex, cipher, connected_at, position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
			ON CONFLICT (generation, session_id) DO NOTHING`,
			gen, ev.SessionID, node, ev.OrgID, ev.TunnelID, ev.TokenID, ev.AgentVersion, ev.ProtocolVersion, ev.RemoteAddr,
			ev.KeyExchange, ev.Cipher, at, int64(rec.Position))
	case *domain.AgentDisconnected:
		if err := validIDs(rec, ev.SessionID, node); err != nil {
			return err
		}
		// The node's own report wins over a guessed end. A report about a session this node did
		// not report connected changes nothing.
		b.Queue(`UPDATE rm_agent_sessions SET ended_at = greatest($4, connected_at), end_reason = $5, bytes_in = $6, bytes_out = $7,
			duration_ms = $8, position = $9 WHERE generation = $1 AND session_id = $2 AND node_id = $3`,
			gen, ev.SessionID, node, at, ev.Reason, ev.BytesIn, ev.BytesOut, ev.DurationMS, int64(rec.Position))
	}
	return nil
}

// occurredAt is when the event happened where it happened (a node's clock), else when it was
// recorded.
func occurredAt(rec eventstore.Record) time.Time {
	if m := metadata(rec); !m.OccurredAt.IsZero() {
		return m.OccurredAt
	}
	return rec.RecordedAt
}

func validIDs(rec eventstore.Record, ids ...string) error {
	for _, id := range ids {
		if !domain.ValidID(id) {
			return fmt.Errorf("%s at position %d: %q is not an id", rec.Type, rec.Position, id)
		}
	}
	return nil
}

func metadata(rec eventstore.Record) domain.Metadata {
	var m domain.Metadata
	_ = json.Unmarshal(rec.Metadata, &m) // metadata is informational; a bad one indexes as empty
	return m
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// queue adds a statement that must change a row: one that changes none means the read model is
// out of step with the log, and the projection stops rather than silently drift.
func queue(b *pgx.Batch, rec eventstore.Record, sql string, args ...any) {
	b.Queue(sql, args...).Exec(func(ct pgconn.CommandTag) error {
		if ct.RowsAffected() == 0 {
			return fmt.Errorf("%s at position %d changed no row: the read model is out of step with the log", rec.Type, rec.Position)
		}
		return nil
	})
}

// ByName returns the built-in projection of that name (nil if none).
func ByName(name string) Projection {
	for _, p := range All() {
		if p.Name() == name {
			return p
		}
	}
	return nil
}
