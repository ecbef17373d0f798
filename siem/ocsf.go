package siem

import (
	"encoding/json"
	"fmt"
	"strings"
)

// OCSFVersion is the OCSF schema version of the OCSF format.
const OCSFVersion = "1.8.0"

// ocsfEvent is one OCSF event under construction.
type ocsfEvent map[string]any

func (o ocsfEvent) status(id int, detail string) {
	o["status_id"] = id
	o["status"] = map[int]string{statusSuccess: "Success", statusFailure: "Failure"}[id]
	if detail != "" {
		o["status_detail"] = detail
	}
}

// srcEndpoint is the caller's address from the record's metadata, when it has one.
func (o ocsfEvent) srcEndpoint(d decoded) {
	if ep := endpoint(d.md.ClientIP); ep != nil {
		o["src_endpoint"] = ep
		return
	}
	o["src_endpoint"] = map[string]any{"name": "unknown"}
}

// OCSF is the entry as an OCSF 1.8 event (JSON): the class and activity of ocsfMappings, the
// actor and caller from the record's metadata, metadata.uid = the event id (the dedupe key),
// metadata.sequence = the sink's sequence number, and under unmapped.tunnelplane the log
// position, the record's hash, its type and its payload as recorded.
func OCSF(e Entry, p Product) ([]byte, error) {
	d, err := decode(e)
	if err != nil {
		return nil, err
	}
	b, _, err := ocsfEncode(d, p)
	return b, err
}

// SyslogOCSF is the Format of a syslog sink sending OCSF: SyslogFormat(c, OCSF) with the record
// decoded once.
func SyslogOCSF(c SyslogConfig, p Product) func(Entry) ([]byte, error) {
	return func(e Entry) ([]byte, error) {
		d, err := decode(e)
		if err != nil {
			return nil, err
		}
		body, sev, err := ocsfEncode(d, p)
		if err != nil {
			return nil, err
		}
		return Syslog(c, e, sev, body)
	}
}

// ocsfEncode is the decoded entry as OCSF JSON, and its severity_id.
func ocsfEncode(d decoded, p Product) ([]byte, int, error) {
	e := d.Entry
	m, ok := ocsfMappings[d.Record.Type]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s", ErrUnmapped, d.Record.Type)
	}
	o := ocsfEvent{
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
	if org := d.orgID(); org != "" {
		md["tenant_uid"] = org
	}
	o["metadata"] = md
	if actor := ocsfActor(d.md.Actor); actor != nil {
		o["actor"] = actor
	}
	if d.md.ClientIP != "" && !m.class.withoutSource {
		o.srcEndpoint(d)
	}
	m.fill(d, o)
	o["severity"] = severityNames[o["severity_id"].(int)]
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

var severityNames = map[int]string{sevInformational: "Informational", sevLow: "Low", sevMedium: "Medium", sevHigh: "High"}

// ocsfActor is who acted, from the record's metadata actor: a user id, "node:<id>" or
// "system:<component>".
func ocsfActor(actor string) map[string]any {
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

// Mapping is where an event type lands in OCSF.
type Mapping struct {
	ClassUID     int
	ClassName    string
	ActivityID   int
	ActivityName string
	SeverityID   int // before the event itself raises it (a failed command, for one)
}

// OCSFMapping is the OCSF class and activity of eventType.
func OCSFMapping(eventType string) (Mapping, bool) {
	m, ok := ocsfMappings[eventType]
	if !ok {
		return Mapping{}, false
	}
	return Mapping{ClassUID: m.class.uid, ClassName: m.class.className, ActivityID: m.activity, ActivityName: m.activityName, SeverityID: m.severity}, true
}
