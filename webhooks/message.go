package webhooks

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Message is the JSON body of a delivery: the Standard Webhooks shape (type, timestamp, data),
// data being the event's payload as the log holds it, with where it is in the log and why.
type Message struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	EventID   string    `json:"event_id"`
	// Position is the record's log position (GET /api/v1/log/… finds it, verify checks it).
	Position      uint64          `json:"position"`
	OrgID         string          `json:"org_id"`
	Actor         string          `json:"actor,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	CausationID   string          `json:"causation_id,omitempty"`
	Data          json.RawMessage `json:"data"`
}

// orgOf is the organization a record's payload names ("" when none).
func orgOf(rec *eventstore.Record) string {
	var p struct {
		OrgID string `json:"org_id"`
	}
	_ = json.Unmarshal(rec.Payload, &p) // a payload without one is no organization's
	return p.OrgID
}

// Matches tells whether an endpoint of orgID subscribed to types (empty: every notification type)
// receives rec: a notification type it named, of its organization.
func Matches(orgID string, types []string, rec *eventstore.Record) bool {
	if len(types) == 0 {
		types = domain.WebhookEventTypes
	}
	return slices.Contains(types, rec.Type) && orgOf(rec) == orgID
}

// Body is the message of rec as delivered.
func Body(rec *eventstore.Record) ([]byte, error) {
	var meta domain.Metadata
	_ = json.Unmarshal(rec.Metadata, &meta) // metadata is optional
	data := json.RawMessage(rec.Payload)
	if !json.Valid(data) {
		data = json.RawMessage("null")
	}
	return json.Marshal(Message{Type: rec.Type, Timestamp: rec.RecordedAt.UTC(), EventID: rec.EventID.String(), Position: rec.Position,
		OrgID: orgOf(rec), Actor: meta.Actor, CorrelationID: meta.CorrelationID, CausationID: meta.CausationID, Data: data})
}
