package siem_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/siem"
	"github.com/tunnelplane/tunnelplane/siem/internal/ocsfschema"
)

var (
	schemaOnce sync.Once
	schema     *ocsfschema.Schema
	schemaErr  error
)

// ocsf is the OCSF schema at ../shared/ocsf-schema from the project root (or
// TUNNELPLANE_OCSF_SCHEMA), read as published: uncompiled.
func ocsf(t *testing.T) *ocsfschema.Schema {
	t.Helper()
	dir := os.Getenv("TUNNELPLANE_OCSF_SCHEMA")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "..", "shared", "ocsf-schema")
	}
	if _, err := os.Stat(filepath.Join(dir, "dictionary.json")); err != nil {
		t.Skipf("no OCSF schema at %s (set TUNNELPLANE_OCSF_SCHEMA): %v", dir, err)
	}
	schemaOnce.Do(func() { schema, schemaErr = ocsfschema.Load(dir) })
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	return schema
}

func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatal("no go.mod above " + dir)
	return ""
}

func ptr[T any](v T) *T { return &v }

// samples holds one event of every type the log holds (the domain's and the log's own), filled
// the way the product fills them.
func samples() map[string]any {
	at := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	org, tun, node := uuid.NewString(), uuid.NewString(), uuid.NewString()
	key := make([]byte, 32)
	return map[string]any{
		eventstore.TypeGenesis:         eventstore.GenesisPayload{LogID: uuid.NewString(), Origin: "tunnelplane/log/abcd", Algorithm: "ed25519", KeyID: "ed25519:aa", PublicKey: key},
		eventstore.TypeKeyAdded:        eventstore.KeyAddedPayload{Purpose: "node", Owner: node, KeyID: "ed25519:bb", Algorithm: "ed25519", PublicKey: key, Proof: []byte{1}},
		eventstore.TypeKeyRotated:      eventstore.KeyRotatedPayload{Purpose: "log", OldKeyID: "ed25519:aa", NewKeyID: "ed25519:cc", Algorithm: "ed25519", PublicKey: key},
		eventstore.TypeKeyRevoked:      eventstore.KeyRevokedPayload{KeyID: "ed25519:bb", Reason: "node removed"},
		domain.TypeOrganizationCreated: domain.OrganizationCreated{OrgID: org, Name: "acme", CreatedBy: "root"},
		domain.TypeOrgNameReserved:     domain.OrgNameReserved{OrgID: org, Name: "acme"},
		domain.TypeTunnelCreated:       domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:11434", Protocol: "http"},
		domain.TypeTunnelUpdated:       domain.TunnelUpdated{TunnelID: tun, OrgID: org, Name: ptr("chat")},
		domain.TypeTunnelDeleted:       domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "chat", Reason: "done"},
		domain.TypeTunnelNameReserved:  domain.TunnelNameReserved{OrgID: org, Name: "llm", TunnelID: tun},
		domain.TypeTunnelNameReleased:  domain.TunnelNameReleased{OrgID: org, Name: "llm", TunnelID: tun},
		domain.TypeNodeEnrolled:        domain.NodeEnrolled{NodeID: node, Name: "edge-1", HostKey: "ssh-ed25519 AAAA", HostKeyFingerprint: "SHA256:x", EventKeyID: "k1"},
		domain.TypeNodeDrainRequested:  domain.NodeDrainRequested{NodeID: node},
		domain.TypeNodeDrained:         domain.NodeDrained{NodeID: node, AgentsDisconnected: 3},
		domain.TypeNodeRemoved:         domain.NodeRemoved{NodeID: node, Reason: "retired"},
		domain.TypeNodeLost:            domain.NodeLost{NodeID: node, LastSeen: at},
		domain.TypeNodeRecovered:       domain.NodeRecovered{NodeID: node},
		domain.TypeNodeCommandExecuted: domain.NodeCommandExecuted{CommandID: uuid.NewString(), Command: "drain_node", NodeID: node, Result: "error", Detail: "busy"},
		domain.TypeNodeStarted:         domain.NodeStarted{NodeID: node, Version: "1.2.3"},
		domain.TypeAgentTokenIssued:    domain.AgentTokenIssued{TokenID: uuid.NewString(), OrgID: org, TunnelID: tun, ExpiresAt: at.Add(time.Hour), KeyID: "k", IssuedBy: "alice"},
		domain.TypeAgentTokenRevoked:   domain.AgentTokenRevoked{TokenID: uuid.NewString(), OrgID: org, TunnelID: tun, Reason: "leaked"},
		domain.TypeAccessKeyIssued: domain.AccessKeyIssued{KeyID: uuid.NewString(), OrgID: org, TunnelID: tun, SecretHash: domain.HashAccessKey("tpk_x"),
			ExpiresAt: at.Add(time.Hour), CIDRs: []string{"10.0.0.0/8"}, RateTier: "free", DerivedFrom: "ed25519:1", IssuedBy: "alice"},
		domain.TypeAccessKeyRevoked:  domain.AccessKeyRevoked{KeyID: uuid.NewString(), OrgID: org, TunnelID: tun, Reason: "leaked"},
		domain.TypeRoleAssigned:      domain.RoleAssigned{OrgID: org, UserID: "bob", Role: "operator"},
		domain.TypeRoleUnassigned:    domain.RoleUnassigned{OrgID: org, UserID: "bob", Role: "operator"},
		domain.TypeAccessDenied:      domain.AccessDenied{ActorID: "mallory", OrgID: org, Action: "tunnels:delete", Resource: "tunnel/" + tun, Count: 4, WindowStart: at, WindowEnd: at.Add(time.Minute)},
		domain.TypeAuthFailed:        domain.AuthFailed{Reason: "token expired 3m ago", Subject: "bob", RemoteAddr: "192.0.2.7:51234", UserAgent: "curl/8", Count: 2, At: at},
		domain.TypeIngestRejected:    domain.IngestRejected{Subject: "nodefacts." + node, NodeID: node, KeyID: "k", Reason: "bad signature", Events: 5},
		domain.TypeAuditOverflowed:   domain.AuditOverflowed{WindowStart: at, WindowEnd: at.Add(time.Minute), DroppedDenials: map[string]int{"mallory": 10}},
		domain.TypeAgentConnected:    domain.AgentConnected{NodeID: node, SessionID: uuid.NewString(), OrgID: org, TunnelID: tun, TokenID: "t", AgentVersion: "1", ProtocolVersion: "2", RemoteAddr: "[2001:db8::1]:40000", KeyExchange: "mlkem768x25519-sha256", Cipher: "aes128-gcm@openssh.com", HostKeyAlgo: "ssh-ed25519"},
		domain.TypeAgentDisconnected: domain.AgentDisconnected{NodeID: node, SessionID: uuid.NewString(), OrgID: org, TunnelID: tun, TokenID: "t", BytesIn: 10, BytesOut: 20, DurationMS: 3000, Reason: "agent unresponsive"},
		domain.TypeAgentReplaced:     domain.AgentReplaced{NodeID: node, OrgID: org, TunnelID: tun, OldSessionID: "a", OldTokenID: "b", NewSessionID: "c", NewTokenID: "d"},
		domain.TypeFailoverStarted:   domain.FailoverStarted{NodeID: node, SessionID: uuid.NewString(), OrgID: org, TunnelID: tun, TokenID: "t", FromNodeID: "node-a", Cause: domain.CauseKeepaliveTimeout, DetectedAt: at},
		domain.TypeFailoverCompleted: domain.FailoverCompleted{NodeID: node, SessionID: uuid.NewString(), OrgID: org, TunnelID: tun, TokenID: "t", FromNodeID: "node-a", Cause: domain.CauseNodeLost, DurationMS: 840},
		domain.TypeFailbackCompleted: domain.FailbackCompleted{NodeID: node, SessionID: uuid.NewString(), OrgID: org, TunnelID: tun, TokenID: "t", FromNodeID: "node-c", HealthyForMS: 30000},
		domain.TypeUsageRecorded: domain.UsageRecorded{NodeID: node, OrgID: org, TunnelID: tun, WindowStart: at, WindowEnd: at.Add(time.Minute),
			CallerKind: domain.CallerAccessKey, CallerID: uuid.NewString(), Requests: 7, BytesIn: 100, BytesOut: 2000, StreamsMax: 2, StreamedMS: 9000,
			Latency: &domain.Histogram{Offset: 150, Counts: []int64{3, 0, 4}}, TTFB: &domain.Histogram{Offset: 80, Counts: []int64{7}}},
		domain.TypeAccessPolicySet: domain.AccessPolicySet{OrgID: org, TunnelID: tun, ApproverRole: "editor", RequiredApprovals: 2, SetBy: "alice"},
		domain.TypeGrantCreated: domain.GrantCreated{GrantID: uuid.NewString(), OrgID: org, TunnelID: tun, SubjectKind: "group", Subject: "ml-team",
			ExpiresAt: at.Add(time.Hour), GrantedBy: "alice", RequestID: uuid.NewString(), Approvals: []string{uuid.NewString()}},
		domain.TypeGrantRevoked:        domain.GrantRevoked{GrantID: uuid.NewString(), OrgID: org, TunnelID: tun, RevokedBy: "alice", Reason: "done"},
		domain.TypeGrantExpired:        domain.GrantExpired{GrantID: uuid.NewString(), OrgID: org, TunnelID: tun, ExpiresAt: at},
		domain.TypeAccessRequested:     domain.AccessRequested{RequestID: uuid.NewString(), OrgID: org, TunnelID: tun, Requester: "vic", DurationSeconds: 3600, Reason: "demo"},
		domain.TypeAccessApproved:      domain.AccessApproved{ApprovalID: uuid.NewString(), RequestID: uuid.NewString(), OrgID: org, TunnelID: tun, Approver: "alice"},
		domain.TypeAccessRequestDenied: domain.AccessRequestDenied{RequestID: uuid.NewString(), OrgID: org, TunnelID: tun, DeniedBy: "alice", Reason: "not now"},
		domain.TypeSIEMSinkConfigured:  domain.SIEMSinkConfigured{SinkID: uuid.NewString(), OrgID: org, SIEMSinkSpec: domain.SIEMSinkSpec{Name: "splunk", Transport: "https", URL: "https://splunk.example:8088/services/collector/event", Profile: "hec", Format: "ocsf", Token: "sealed:v1:abc"}},
		domain.TypeSIEMSinkUpdated:     domain.SIEMSinkUpdated{SinkID: uuid.NewString(), SIEMSinkSpec: domain.SIEMSinkSpec{Name: "rsyslog", Transport: "syslog", Address: "siem.example:6514", Format: "cef"}},
		domain.TypeSIEMSinkRemoved:     domain.SIEMSinkRemoved{SinkID: uuid.NewString(), OrgID: org, Reason: "moved to another SIEM"},
		domain.TypeSIEMDeliverySkipped: domain.SIEMDeliverySkipped{SinkID: uuid.NewString(), Position: 41, Reason: "the receiver refuses it for good"},
		domain.TypeExportCreated:       domain.ExportCreated{ExportID: uuid.NewString(), From: 10, To: 99, Records: 90, CheckpointSize: 120, BundleSHA256: "ab12"},
		domain.TypeEnrollmentTokenIssued: domain.EnrollmentTokenIssued{TokenID: uuid.NewString(), SecretHash: domain.HashEnrollmentSecret("tpe_x"),
			ExpiresAt: at.Add(time.Hour), MaxUses: 1, DerivedFrom: "ed25519:1", IssuedBy: "root"},
		domain.TypeEnrollmentTokenUsed:    domain.EnrollmentTokenUsed{TokenID: uuid.NewString(), NodeID: node, Use: 1},
		domain.TypeEnrollmentTokenRevoked: domain.EnrollmentTokenRevoked{TokenID: uuid.NewString(), Reason: "not needed"},
		domain.TypeOrgSettingsUpdated:     domain.OrgSettingsUpdated{OrgID: org, TimeZone: "Europe/Berlin"},
		domain.TypePriceSheetSet: domain.PriceSheetSet{OrgID: org, EffectiveFrom: time.Date(2026, 3, 15, 0, 0, 0, 0, time.UTC), Currency: "EUR",
			PerGBIn: "0.02", PerGBOut: "0.05", Per1kRequests: "0.10", PerStreamedHour: "0.30", PerTunnelDay: "1.00"},
		domain.TypeTunnelAccessLogSet: domain.TunnelAccessLogSet{TunnelID: tun, OrgID: org, AccessLog: domain.AccessLogCalls, Previous: domain.AccessLogWindows},
		domain.TypeAccessCallsRecorded: domain.AccessCallsRecorded{NodeID: node, Dropped: 3, Calls: []domain.AccessCall{
			{At: at, OrgID: org, TunnelID: tun, CallerKind: domain.CallerUser, CallerID: "alice", Method: "POST", Route: "/v1/chat/completions", Status: 200, BytesIn: 120, BytesOut: 4000, DurationUS: 1500},
			{At: at, OrgID: org, TunnelID: tun, CallerKind: domain.CallerAccessKey, CallerID: uuid.NewString(), Method: "GET", Route: "/v1/models", Status: 403, BytesOut: 300, DurationUS: 90}}},
		domain.TypeReportGenerated: domain.ReportGenerated{ReportID: uuid.NewString(), Report: "soc2", OrgID: org, From: "2026-01-01T00:00:00Z",
			To: "2026-04-01T00:00:00Z", Format: "pdf", Position: 99, CheckpointSize: 100, SHA256: "cd34", Bytes: 5000},
		domain.TypeUserLoggedIn: domain.UserLoggedIn{UserID: "oidc-0123456789abcdef:alice", Issuer: "https://idp.example", Method: domain.LoginMethodOIDC,
			Groups: []string{"ml-team"}, TokenID: uuid.NewString(), ExpiresAt: at.Add(time.Hour), Host: "chat.tunnels.example"},
		domain.TypeUserDeleted: domain.UserDeleted{OrgID: org, UserID: "oidc-0123456789abcdef:alice", DeletedBy: "root", Reason: "left the company",
			RolesWithdrawn: 2, GrantsRevoked: 1, RequestsDenied: 1},
		domain.TypeSubjectErased: domain.SubjectErased{Subject: "vic", KeysDestroyed: 2, Reason: "GDPR art. 17 request"},
		domain.TypeWebhookEndpointCreated: domain.WebhookEndpointCreated{EndpointID: uuid.NewString(), OrgID: org, Name: "chatops", URL: "https://hooks.example/tp",
			Types: []string{domain.TypeAccessRequested}, Secret: "sealed:v1:abc"},
		domain.TypeWebhookEndpointUpdated: domain.WebhookEndpointUpdated{EndpointID: uuid.NewString(), OrgID: org, Name: "chatops", URL: "https://hooks.example/v2"},
		domain.TypeWebhookSecretRotated:   domain.WebhookSecretRotated{EndpointID: uuid.NewString(), OrgID: org, Secret: "sealed:v1:def"},
		domain.TypeWebhookEndpointDeleted: domain.WebhookEndpointDeleted{EndpointID: uuid.NewString(), OrgID: org, Reason: "moved"},
		domain.TypeGrantExpiring: domain.GrantExpiring{GrantID: uuid.NewString(), OrgID: org, TunnelID: tun, SubjectKind: domain.GrantToUser,
			Subject: "bob", ExpiresAt: at},
		domain.TypeReportScheduleCreated: domain.ReportScheduleCreated{ScheduleID: uuid.NewString(), OrgID: org, CreatedBy: "alice", Since: at, ReportScheduleSpec: domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", TimeZone: "Europe/Berlin", Cadence: domain.Cadence{Every: "monthly", Hour: 6, Day: 1}}},
		domain.TypeReportScheduleUpdated: domain.ReportScheduleUpdated{ScheduleID: uuid.NewString(), OrgID: org, Since: at, ReportScheduleSpec: domain.ReportScheduleSpec{Kind: "soc2", Format: "pdf", TimeZone: "Europe/Berlin", Cadence: domain.Cadence{Every: "monthly", Hour: 6, Day: 1}}},
		domain.TypeReportSchedulePaused:  domain.ReportSchedulePaused{ScheduleID: uuid.NewString(), OrgID: org},
		domain.TypeReportScheduleResumed: domain.ReportScheduleResumed{ScheduleID: uuid.NewString(), OrgID: org, Since: at},
		domain.TypeReportScheduleDeleted: domain.ReportScheduleDeleted{ScheduleID: uuid.NewString(), OrgID: org},
		domain.TypeCapacityForecastExceeded: domain.CapacityForecastExceeded{ScheduleID: uuid.NewString(), OrgID: org, TunnelID: tun, DueAt: at, AsOf: at, Position: 99,
			HistoryHours: 2160, SeriesStart: at.Add(-500 * time.Hour), SeriesHours: 500, HorizonHours: 168, Model: "holt_winters", Params: []domain.ForecastParam{{Name: "alpha", Value: 0.2}},
			Metric: "requests", Threshold: 5000, MinProbability: 0.8, Hour: at.Add(30 * time.Hour), Probability: 0.85, ReportID: uuid.NewString()},
	}
}

// allTypes are the domain's event types and the log's own.
func allTypes() []string {
	out := siem.LogEventTypes()
	for _, et := range domain.EventTypes() {
		out = append(out, et.Name)
	}
	return out
}

// typeOf is the record type of a sample.
func typeOf(ev any) string {
	switch ev.(type) {
	case eventstore.GenesisPayload:
		return eventstore.TypeGenesis
	case eventstore.KeyAddedPayload:
		return eventstore.TypeKeyAdded
	case eventstore.KeyRotatedPayload:
		return eventstore.TypeKeyRotated
	case eventstore.KeyRevokedPayload:
		return eventstore.TypeKeyRevoked
	}
	return ev.(domain.Event).EventType()
}

// record is ev as the log holds it at pos, with metadata md.
func record(t testing.TB, pos uint64, ev any, md domain.Metadata) *eventstore.Record {
	t.Helper()
	payload, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := json.Marshal(md)
	if err != nil {
		t.Fatal(err)
	}
	hash := make([]byte, 32)
	hash[0], hash[31] = byte(pos), 0xab
	return &eventstore.Record{Position: pos, StreamID: "s-" + typeOf(ev), StreamVersion: 1, EventID: uuid.Must(uuid.NewV7()),
		Type: typeOf(ev), SchemaVersion: 1, StoredSchemaVersion: 1, Payload: payload, StoredPayload: payload, Metadata: meta,
		RecordedAt: time.Date(2026, 12, 2, 6, 0, 1, 0, time.UTC), Hash: hash}
}

// Every domain event type maps to an OCSF class, and every event it writes holds to the OCSF
// 1.8 schema: required attributes present, no attribute the class or object does not have,
// types, enum values, class/category/type uids that agree.
func TestEveryEventTypeIsValidOCSF(t *testing.T) {
	t.Parallel()
	s := ocsf(t)
	all := samples()
	for _, typ := range allTypes() {
		et := struct{ Name string }{typ}
		ev, ok := all[et.Name]
		if !ok {
			t.Errorf("no sample event of type %s: add one, and its OCSF mapping", et.Name)
			continue
		}
		for _, md := range []domain.Metadata{
			{},
			{Actor: "alice", OrgID: "org-1", CorrelationID: uuid.NewString(), CausationID: uuid.NewString(), RequestID: "r-1", ClientIP: "198.51.100.9", UserAgent: "cli"},
			{Actor: "node:" + uuid.NewString()},
			{Actor: "system:audit"},
		} {
			rec := record(t, 42, ev, md)
			out, err := siem.OCSF(siem.Entry{Record: rec, Seq: 7}, siem.DefaultProduct("1.2.3"))
			if err != nil {
				t.Fatalf("%s: %v", et.Name, err)
			}
			if err := s.Validate(out); err != nil {
				t.Errorf("%s (actor %q): not valid OCSF %s:\n%v\n%s", et.Name, md.Actor, s.Version, err, out)
				continue
			}
			var got struct {
				ClassUID int `json:"class_uid"`
				Metadata struct {
					UID      string `json:"uid"`
					Sequence uint64 `json:"sequence"`
				} `json:"metadata"`
				Unmapped struct {
					TP struct {
						Position   uint64 `json:"position"`
						RecordHash string `json:"record_hash"`
					} `json:"tunnelplane"`
				} `json:"unmapped"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if got.Metadata.UID != rec.EventID.String() || got.Metadata.Sequence != 7 || got.Unmapped.TP.Position != 42 ||
				!strings.HasSuffix(got.Unmapped.TP.RecordHash, "ab") || s.ClassName(got.ClassUID) == "" {
				t.Errorf("%s: event id, sequence, position or hash missing: %s", et.Name, out)
			}
		}
	}
}

// The referee is not a pushover: events that break the schema in each way are refused.
func TestTheSchemaCheckRefusesBrokenEvents(t *testing.T) {
	t.Parallel()
	s := ocsf(t)
	rec := record(t, 1, samples()[domain.TypeAuthFailed], domain.Metadata{})
	good, err := siem.OCSF(siem.Entry{Record: rec, Seq: 1}, siem.DefaultProduct("1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(good); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(m map[string]any)
		want string
	}{
		"a required attribute missing": {func(m map[string]any) { delete(m, "user") }, "required attribute user"},
		"an unknown attribute":         {func(m map[string]any) { m["colour"] = "red" }, "not an attribute"},
		"a value outside its enum":     {func(m map[string]any) { m["severity_id"] = 42 }, "severity_id: 42 is not one of"},
		"a string for an integer":      {func(m map[string]any) { m["time"] = "yesterday" }, "want an integer"},
		"a type_uid that disagrees":    {func(m map[string]any) { m["type_uid"] = 300299 }, "type_uid"},
		"a class of another category":  {func(m map[string]any) { m["category_uid"] = 4 }, "category_uid"},
		"an object missing its one-of": {func(m map[string]any) { m["user"] = map[string]any{"type": "User"} }, "at least one of"},
		"a nested required attribute":  {func(m map[string]any) { delete(m["metadata"].(map[string]any), "product") }, "metadata: required attribute product"},
		"a malformed IP":               {func(m map[string]any) { m["src_endpoint"] = map[string]any{"ip": "999.1.1.1"} }, "not a valid ip_t"},
	} {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		tc.edit(m)
		b, _ := json.Marshal(m)
		err := s.Validate(b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

// An event type this build does not know is an error to handle, never a silent skip.
func TestUnknownEventTypesAreRefused(t *testing.T) {
	t.Parallel()
	rec := record(t, 1, samples()[domain.TypeNodeStarted], domain.Metadata{})
	rec.Type = "future.thing"
	if _, err := siem.OCSF(siem.Entry{Record: rec, Seq: 1}, siem.DefaultProduct("1")); !errors.Is(err, siem.ErrUnmapped) {
		t.Fatalf("%v, want ErrUnmapped", err)
	}
}

// The raw format carries the record exactly as hashed: the stored payload's bytes, untouched.
func TestRawCarriesTheStoredBytes(t *testing.T) {
	t.Parallel()
	rec := record(t, 5, samples()[domain.TypeNodeStarted], domain.Metadata{Actor: "system:x"})
	rec.StoredPayload = []byte(`{"node_id":"n",  "version":"odd spacing kept"}`)
	b, err := siem.Raw(siem.Entry{Record: rec, Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Position      uint64 `json:"position"`
		SinkSeq       uint64 `json:"sink_seq"`
		StoredPayload []byte `json:"stored_payload"`
		Hash          string `json:"hash"`
		EventID       string `json:"event_id"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Position != 5 || got.SinkSeq != 2 || string(got.StoredPayload) != string(rec.StoredPayload) || got.EventID != rec.EventID.String() || !strings.HasSuffix(got.Hash, "ab") {
		t.Fatalf("%s", b)
	}
}

// docs/siem.md's table is the mapping: one row per event type, class, activity and severity as
// the code has them.
func TestTheDocumentedMappingIsTheMapping(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "siem.md"))
	if err != nil {
		t.Fatal(err)
	}
	sev := map[int]string{1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
	rows := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "| `") {
			typ := strings.Trim(strings.Split(line, "|")[1], " `")
			rows[typ] = line
		}
	}
	for _, typ := range allTypes() {
		et := struct{ Name string }{typ}
		m, ok := siem.OCSFMapping(et.Name)
		if !ok {
			t.Errorf("%s has no OCSF mapping", et.Name)
			continue
		}
		want := fmt.Sprintf("| `%s` | %s (%d) | %s (%d) | %s |", et.Name, m.ClassName, m.ClassUID, m.ActivityName, m.ActivityID, sev[m.SeverityID])
		if rows[et.Name] != want {
			t.Errorf("docs/siem.md says\n  %s\nthe code maps\n  %s", rows[et.Name], want)
		}
		delete(rows, et.Name)
	}
	for typ := range rows {
		t.Errorf("docs/siem.md maps %s, which is no event type", typ)
	}
}

// A usage window names its caller as actor.user beside the node that counted it (actor.app_*):
// a user by uid, an access key by credential_uid, anonymous callers by name; an overflow window
// and a version 1 window (every caller) name none. Valid OCSF, and what the reference builds.
func TestUsageWindowsNameTheirCaller(t *testing.T) {
	t.Parallel()
	s := ocsf(t)
	base := samples()[domain.TypeUsageRecorded].(domain.UsageRecorded)
	for _, c := range []struct{ kind, id, user, words string }{
		{domain.CallerUser, "alice", `"user":{"uid":"alice"}`, "7 calls by user alice through"},
		{domain.CallerAccessKey, "key-1", `"user":{"credential_uid":"key-1","type":"Tunnel access key","type_id":99,"uid":"key-1"}`, "7 calls by access key key-1 through"},
		{domain.CallerAnonymous, "", `"user":{"name":"anonymous"}`, "7 calls by anonymous callers through"},
		{domain.CallerOverflow, "", "", "7 calls by callers past the node's bound per window through"},
		{"", "", "", "7 calls through"},
	} {
		u := base
		u.CallerKind, u.CallerID = c.kind, c.id
		e := siem.Entry{Record: record(t, 3, u, domain.Metadata{Actor: "node:n-1"}), Seq: 1}
		got, err := siem.OCSF(e, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := siem.OCSFByMaps(e, siem.DefaultProduct("1"))
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: %v\n got %s\nwant %s", c.kind, err, got, want)
		}
		if err := s.Validate(got); err != nil {
			t.Errorf("%q: %v\n%s", c.kind, err, got)
		}
		actor := `"actor":{"app_name":"tunnelplane node","app_uid":"n-1"`
		if c.user != "" {
			actor += "," + c.user
		}
		if !strings.Contains(string(got), actor+"}") || !strings.Contains(string(got), c.words) {
			t.Errorf("%q: want %s} and %q in\n%s", c.kind, actor, c.words, got)
		}
	}
}

// A login for one host (a browser's, for a tunnel host) names that host as where the user
// authenticated (dst_endpoint.hostname); a login valid everywhere (the CLI's) names none.
func TestALoginNamesItsHost(t *testing.T) {
	t.Parallel()
	s := ocsf(t)
	base := samples()[domain.TypeUserLoggedIn].(domain.UserLoggedIn)
	for _, host := range []string{"chat.tunnels.example", ""} {
		l := base
		l.Host = host
		e := siem.Entry{Record: record(t, 5, l, domain.Metadata{Actor: l.UserID, ClientIP: "192.0.2.7"}), Seq: 1}
		got, err := siem.OCSF(e, siem.DefaultProduct("1"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := siem.OCSFByMaps(e, siem.DefaultProduct("1"))
		if err != nil || string(got) != string(want) {
			t.Errorf("%q: %v\n got %s\nwant %s", host, err, got, want)
		}
		if err := s.Validate(got); err != nil {
			t.Errorf("%q: %v\n%s", host, err, got)
		}
		dst := `"dst_endpoint":{"hostname":"` + host + `"}`
		if strings.Contains(string(got), dst) != (host != "") || (host == "" && strings.Contains(string(got), "dst_endpoint")) {
			t.Errorf("%q: dst_endpoint wrong in\n%s", host, got)
		}
	}
}
