package siem

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// OCSFVersion is the OCSF schema version of the OCSF format.
const OCSFVersion = "1.8.0"

// ocsfEvent is what a mapping decides of one OCSF event beyond the attributes every event has:
// the class's own objects, and the status and severity when the event changes them. Each
// optional attribute says whether it is present: a present attribute is written even when
// empty, as encoding/json wrote the maps this replaced (TestOCSFIsTheMapBuiltReference).
type ocsfEvent struct {
	// hashHex, when set, is the record's hash in hex, written already (the syslog header's).
	hashHex      []byte
	severity     int
	statusID     int
	statusDetail optString

	actor  ocsfActor
	srcEnd ocsfEndpoint
	api    optString // api.operation
	app    struct {
		set          bool
		uid, version string
	}
	count    optInt
	dstUID   optString // dst_endpoint.uid
	dstHost  optString // dst_endpoint.hostname
	duration optInt
	window   struct {
		set        bool
		start, end int64
	} // start_time and end_time
	entity struct {
		set             bool
		uid, kind, name string
	}
	privilege  optString // privileges, one
	protocol   string    // protocol_name, when not empty
	resource   optString // resources, one, by name
	service    optString // service.name
	sessionUID optString
	traffic    struct {
		set     bool
		in, out int64
	}
	user struct {
		kind userKind
		v    string
	}
}

type optString struct {
	set bool
	v   string
}

type optInt struct {
	set bool
	v   int64
}

func some(s string) optString { return optString{true, s} }

func someInt[T int | int64](v T) optInt { return optInt{true, int64(v)} }

type userKind uint8

const (
	userNone userKind = iota
	userUID
	userName
)

// ocsfActor is who acted: a user id, or an application by name (and id); caller, when set, is
// the actor's user instead (the caller a node's usage window counts, the node being the app).
type ocsfActor struct {
	kind    actorKind
	appName string
	uid     string // the user's, or the application's
	caller  ocsfCaller
}

// ocsfCaller is a caller of a tunnel as actor.user: a user by uid, a tunnel access key by uid
// and credential_uid (type "Tunnel access key", as its entity is named, type_id Other), or
// anonymous callers by name.
type ocsfCaller struct {
	kind callerKind
	v    string
}

type callerKind uint8

const (
	callerNone callerKind = iota
	callerUser
	callerAccessKey
	callerName
)

type actorKind uint8

const (
	actorNone actorKind = iota
	actorUser
	actorApp       // app_name only
	actorAppWithID // app_name and app_uid
)

// ocsfEndpoint is a network endpoint: an address (ip or hostname, port when known), an
// identity (uid), or a name.
type ocsfEndpoint struct {
	kind endpointKind
	v    string
	ip   netip.Addr // endpointIP's, unmapped
	port int        // 0: none
}

type endpointKind uint8

const (
	endpointNone endpointKind = iota
	endpointIP
	endpointHostname
	endpointUID
	endpointName
)

func (o *ocsfEvent) status(id int, detail string) {
	o.statusID = id
	if detail != "" {
		o.statusDetail = some(detail)
	}
}

func (o *ocsfEvent) statusName() string {
	switch o.statusID {
	case statusSuccess:
		return "Success"
	case statusFailure:
		return "Failure"
	}
	return ""
}

// srcEndpoint is the caller's address from the record's metadata, when it has one.
func (o *ocsfEvent) srcEndpoint(d decoded) {
	if ep := endpoint(d.md.ClientIP); ep.kind != endpointNone {
		o.srcEnd = ep
		return
	}
	o.srcEnd = ocsfEndpoint{kind: endpointName, v: "unknown"}
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
	o := new(ocsfEvent)
	m, err := classifyDecoded(d, o)
	if err != nil {
		return nil, err
	}
	return o.appendJSON(make([]byte, 0, 1024), d, m, renderProduct(p))
}

// SyslogOCSF is the Format of a syslog sink sending OCSF: SyslogFormat(c, OCSF) with the record
// decoded once and the message written into one buffer.
func SyslogOCSF(c SyslogConfig, p Product) func(Entry) ([]byte, error) {
	app := AppendSyslogOCSF(c, p)
	var size atomic.Int64 // the largest message yet: most are alike, so one allocation fits
	size.Store(1024)
	return func(e Entry) ([]byte, error) {
		b, err := app(make([]byte, 0, size.Load()), e)
		if err != nil {
			return nil, err
		}
		if n := int64(len(b)); n > size.Load() {
			size.Store(n)
		}
		return b, nil
	}
}

// AppendSyslogOCSF is SyslogOCSF appending the message to dst (a forwarder formats a batch into
// a few large buffers, not one allocation per message).
func AppendSyslogOCSF(c SyslogConfig, p Product) func(dst []byte, e Entry) ([]byte, error) {
	c, cerr := c.withDefaults()
	prod := renderProduct(p)
	return func(b []byte, e Entry) ([]byte, error) {
		if cerr != nil {
			return nil, cerr
		}
		d, err := decode(e)
		if err != nil {
			return nil, err
		}
		defer d.release()
		o := ocsfEvents.Get().(*ocsfEvent)
		defer ocsfEvents.Put(o)
		m, err := classifyDecoded(d, o)
		if err != nil {
			return nil, err
		}
		b = appendSyslogHeader(b, c, e, o.severity)
		// The header ends with the record's hash in hex: the JSON copies it from there.
		end := len(b) - len(syslogHeaderEnd)
		o.hashHex = b[end-hex.EncodedLen(len(d.Record.Hash)) : end]
		b, err = o.appendJSON(b, d, m, prod)
		o.hashHex = nil // o goes back to the pool: it keeps no message buffer
		return b, err
	}
}

// ocsfEvents are AppendSyslogOCSF's events, reused: classifyDecoded sets every field.
var ocsfEvents = sync.Pool{New: func() any { return new(ocsfEvent) }}

// classifyDecoded applies d's mapping: the class's attributes, status and severity.
func classifyDecoded(d decoded, o *ocsfEvent) (ocsfMapping, error) {
	m, ok := ocsfMappings[d.Record.Type]
	if !ok {
		return ocsfMapping{}, fmt.Errorf("%w: %s", ErrUnmapped, d.Record.Type)
	}
	*o = ocsfEvent{severity: m.severity, statusID: statusSuccess}
	o.actor = actorOf(d.md.Actor)
	if d.md.ClientIP != "" && !m.class.withoutSource {
		o.srcEndpoint(d)
	}
	m.fill(d, o)
	return m, nil
}

// ocsfFixed are the parts of a mapping's event that no record changes, written once (ints and
// escaped strings were a third of formatting).
type ocsfFixed struct {
	head  string // {"activity_id":…,"activity_name":…
	class string // ,"category_name":…,"category_uid":…,"class_name":…,"class_uid":…
	typ   string // ,"type_name":…,"type_uid":…
	// quoted is the record type the mapping is for, as a JSON string.
	quoted string
}

func renderFixed(eventType string, m ocsfMapping) *ocsfFixed {
	b := append([]byte(nil), `{"activity_id":`...)
	b = strconv.AppendInt(b, int64(m.activity), 10)
	b = append(b, `,"activity_name":`...)
	b = appendJSONString(b, m.activityName)
	head := len(b)
	b = append(b, `,"category_name":`...)
	b = appendJSONString(b, m.class.categoryKey)
	b = append(b, `,"category_uid":`...)
	b = strconv.AppendInt(b, int64(m.class.category), 10)
	b = append(b, `,"class_name":`...)
	b = appendJSONString(b, m.class.className)
	b = append(b, `,"class_uid":`...)
	b = strconv.AppendInt(b, int64(m.class.uid), 10)
	class := len(b)
	b = append(b, `,"type_name":"`...)
	b = appendJSONStringBody(b, m.class.className)
	b = append(b, ": "...)
	b = appendJSONStringBody(b, m.activityName)
	b = append(b, `","type_uid":`...)
	b = strconv.AppendInt(b, int64(m.class.uid*100+m.activity), 10)
	typ := len(b)
	b = appendJSONString(b, eventType)
	all := string(b)
	return &ocsfFixed{head: all[:head], class: all[head:class], typ: all[class:typ], quoted: all[typ:]}
}

// The table's mappings carry their fixed parts: every mapping a record is formatted with is
// the table's entry for its type.
func init() {
	for typ, m := range ocsfMappings {
		m.fixed = renderFixed(typ, m)
		ocsfMappings[typ] = m
	}
}

// renderProduct is the metadata's product as it is written, from "product" to "sequence".
func renderProduct(p Product) string {
	b := append([]byte(nil), `,"product":{"name":`...)
	b = appendJSONString(b, p.Name)
	b = append(b, `,"vendor_name":`...)
	b = appendJSONString(b, p.Vendor)
	b = append(b, `,"version":`...)
	b = appendJSONString(b, p.Version)
	return string(append(b, `},"sequence":`...))
}

// severityParts are "severity" and "severity_id" as written, for the ids that have a name.
var severityParts = func() (parts [sevHigh + 1]string) {
	for id := range parts {
		parts[id] = string(appendSeverity(nil, id))
	}
	return parts
}()

func appendSeverity(b []byte, id int) []byte {
	b = append(b, `,"severity":`...)
	b = appendJSONString(b, severityName(id))
	b = append(b, `,"severity_id":`...)
	return strconv.AppendInt(b, int64(id), 10)
}

// appendJSON appends the event as JSON: the keys in sorted order and strings escaped as
// encoding/json does, so that the bytes are what json.Marshal wrote of the map-based event.
// product is renderProduct's.
func (o *ocsfEvent) appendJSON(b []byte, d decoded, m ocsfMapping, product string) ([]byte, error) {
	e, r, fixed := d.Entry, d.Record, m.fixed
	b = append(b, fixed.head...)
	b = o.actor.appendJSON(b)
	if o.api.set {
		b = append(b, `,"api":{"operation":`...)
		b = appendJSONString(b, o.api.v)
		b = append(b, '}')
	}
	if o.app.set {
		b = append(b, `,"app":{"name":"tunnelplane node","uid":`...)
		b = appendJSONString(b, o.app.uid)
		b = append(b, `,"vendor_name":"tunnelplane","version":`...)
		b = appendJSONString(b, o.app.version)
		b = append(b, '}')
	}
	b = append(b, fixed.class...)
	b = appendOptInt(b, `,"count":`, o.count)
	if o.dstUID.set || o.dstHost.set {
		b = append(b, `,"dst_endpoint":{`...)
		if o.dstHost.set {
			b = append(b, `"hostname":`...)
			b = appendJSONString(b, o.dstHost.v)
			if o.dstUID.set {
				b = append(b, ',')
			}
		}
		if o.dstUID.set {
			b = append(b, `"uid":`...)
			b = appendJSONString(b, o.dstUID.v)
		}
		b = append(b, '}')
	}
	b = appendOptInt(b, `,"duration":`, o.duration)
	if o.window.set {
		b = append(b, `,"end_time":`...)
		b = strconv.AppendInt(b, o.window.end, 10)
	}
	if o.entity.set {
		b = append(b, `,"entity":{`...)
		if o.entity.name != "" {
			b = append(b, `"name":`...)
			b = appendJSONString(b, o.entity.name)
			b = append(b, ',')
		}
		b = append(b, `"type":`...)
		b = appendJSONString(b, o.entity.kind)
		b = append(b, `,"uid":`...)
		b = appendJSONString(b, o.entity.uid)
		b = append(b, '}')
	}
	b = append(b, `,"message":"`...)
	b = m.appendMessage(b, d)
	b = append(b, '"')

	b = append(b, `,"metadata":{`...)
	if d.md.CorrelationID != "" {
		b = append(b, `"correlation_uid":`...)
		b = appendJSONString(b, d.md.CorrelationID)
		b = append(b, ',')
	}
	b = append(b, `"event_code":`...)
	b = append(b, fixed.quoted...)
	b = append(b, `,"log_name":"tunnelplane event log","logged_time":`...)
	b = strconv.AppendInt(b, r.RecordedAt.UnixMilli(), 10)
	b = append(b, product...)
	b = strconv.AppendUint(b, e.Seq, 10)
	if org := d.orgID(); org != "" {
		b = append(b, `,"tenant_uid":`...)
		b = appendJSONString(b, org)
	}
	b = append(b, `,"uid":"`...)
	b = appendUUID(b, r.EventID)
	b = append(b, `","version":"`+OCSFVersion+`"}`...)

	if o.privilege.set {
		b = append(b, `,"privileges":[`...)
		b = appendJSONString(b, o.privilege.v)
		b = append(b, ']')
	}
	if o.protocol != "" {
		b = append(b, `,"protocol_name":`...)
		b = appendJSONString(b, o.protocol)
	}
	if o.resource.set {
		b = append(b, `,"resources":[{"name":`...)
		b = appendJSONString(b, o.resource.v)
		b = append(b, "}]"...)
	}
	if o.service.set {
		b = append(b, `,"service":{"name":`...)
		b = appendJSONString(b, o.service.v)
		b = append(b, '}')
	}
	if o.sessionUID.set {
		b = append(b, `,"session":{"uid":`...)
		b = appendJSONString(b, o.sessionUID.v)
		b = append(b, '}')
	}
	if o.severity >= 0 && o.severity < len(severityParts) {
		b = append(b, severityParts[o.severity]...)
	} else {
		b = appendSeverity(b, o.severity)
	}
	if o.srcEnd.kind != endpointNone {
		b = append(b, `,"src_endpoint":`...)
		b = o.srcEnd.appendJSON(b)
	}
	if o.window.set {
		b = append(b, `,"start_time":`...)
		b = strconv.AppendInt(b, o.window.start, 10)
	}
	b = append(b, `,"status":`...)
	b = appendJSONString(b, o.statusName())
	if o.statusDetail.set {
		b = append(b, `,"status_detail":`...)
		b = appendJSONString(b, o.statusDetail.v)
	}
	b = append(b, `,"status_id":`...)
	b = strconv.AppendInt(b, int64(o.statusID), 10)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, d.when().UnixMilli(), 10)
	if o.traffic.set {
		b = append(b, `,"traffic":{"bytes":`...)
		b = strconv.AppendInt(b, o.traffic.in+o.traffic.out, 10)
		b = append(b, `,"bytes_in":`...)
		b = strconv.AppendInt(b, o.traffic.in, 10)
		b = append(b, `,"bytes_out":`...)
		b = strconv.AppendInt(b, o.traffic.out, 10)
		b = append(b, '}')
	}
	b = append(b, fixed.typ...)

	b = append(b, `,"unmapped":{"tunnelplane":{"causation_id":`...)
	b = appendJSONString(b, d.md.CausationID)
	b = append(b, `,"event_type":`...)
	b = append(b, fixed.quoted...)
	b = append(b, `,"payload":`...)
	payload := r.Payload // decoded just now, so valid JSON (and so is what json.Marshal writes)
	if e.Redact != nil {
		// The payload as recorded holds the addresses: give the redacted event instead.
		p, err := json.Marshal(d.event)
		if err != nil {
			return nil, fmt.Errorf("siem: record %d: %w", r.Position, err)
		}
		payload = p
	}
	b, err := appendJSONRawChecked(b, payload, true)
	if err != nil {
		return nil, fmt.Errorf("siem: record %d: %w", r.Position, err)
	}
	b = append(b, `,"position":`...)
	b = strconv.AppendUint(b, r.Position, 10)
	b = append(b, `,"record_hash":"`...)
	if o.hashHex != nil {
		b = append(b, o.hashHex...)
	} else {
		b = hex.AppendEncode(b, r.Hash)
	}
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, d.md.RequestID)
	b = append(b, `,"sink_seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"stream_id":`...)
	b = appendJSONString(b, r.StreamID)
	b = append(b, "}}"...)

	switch o.user.kind {
	case userUID:
		b = append(b, `,"user":{"uid":`...)
		b = appendJSONString(b, o.user.v)
		b = append(b, '}')
	case userName:
		b = append(b, `,"user":{"name":`...)
		b = appendJSONString(b, o.user.v)
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendJSON appends ,"actor":{…} (app_name, app_uid, user: sorted), or nothing for no actor.
func (a ocsfActor) appendJSON(b []byte) []byte {
	if a.kind == actorNone && a.caller.kind == callerNone {
		return b
	}
	b = append(b, `,"actor":{`...)
	if a.kind == actorApp || a.kind == actorAppWithID {
		b = append(b, `"app_name":`...)
		b = appendJSONString(b, a.appName)
		if a.kind == actorAppWithID {
			b = append(b, `,"app_uid":`...)
			b = appendJSONString(b, a.uid)
		}
		if a.caller.kind == callerNone {
			return append(b, '}')
		}
		b = append(b, ',')
	}
	switch a.caller.kind {
	case callerUser:
		b = append(b, `"user":{"uid":`...)
		b = appendJSONString(b, a.caller.v)
	case callerAccessKey:
		b = append(b, `"user":{"credential_uid":`...)
		b = appendJSONString(b, a.caller.v)
		b = append(b, `,"type":"Tunnel access key","type_id":99,"uid":`...)
		b = appendJSONString(b, a.caller.v)
	case callerName:
		b = append(b, `"user":{"name":`...)
		b = appendJSONString(b, a.caller.v)
	default: // actorUser
		b = append(b, `"user":{"uid":`...)
		b = appendJSONString(b, a.uid)
	}
	return append(b, "}}"...)
}

func appendOptInt(b []byte, key string, v optInt) []byte {
	if !v.set {
		return b
	}
	b = append(b, key...)
	return strconv.AppendInt(b, v.v, 10)
}

// appendJSON writes the endpoint's attributes in sorted order (hostname, ip, name, port, uid).
func (ep ocsfEndpoint) appendJSON(b []byte) []byte {
	switch ep.kind {
	case endpointIP:
		b = append(b, `{"ip":"`...)
		b = ep.ip.AppendTo(b) // digits, hex, '.' and ':': nothing to escape
		b = append(b, '"')
	case endpointHostname:
		b = append(b, `{"hostname":`...)
		b = appendJSONString(b, ep.v)
	case endpointName:
		b = append(b, `{"name":`...)
		b = appendJSONString(b, ep.v)
	case endpointUID:
		b = append(b, `{"uid":`...)
		b = appendJSONString(b, ep.v)
	}
	if ep.port > 0 {
		b = append(b, `,"port":`...)
		b = strconv.AppendInt(b, int64(ep.port), 10)
	}
	return append(b, '}')
}

func severityName(id int) string {
	switch id {
	case sevInformational:
		return "Informational"
	case sevLow:
		return "Low"
	case sevMedium:
		return "Medium"
	case sevHigh:
		return "High"
	}
	return ""
}

// actorOf is who acted, from the record's metadata actor: a user id, "node:<id>" or
// "system:<component>".
func actorOf(actor string) ocsfActor {
	switch {
	case actor == "":
		return ocsfActor{}
	case strings.HasPrefix(actor, "node:"):
		return ocsfActor{kind: actorAppWithID, appName: "tunnelplane node", uid: strings.TrimPrefix(actor, "node:")}
	case strings.HasPrefix(actor, "system:"):
		return ocsfActor{kind: actorApp, appName: "tunnelplane " + strings.TrimPrefix(actor, "system:")}
	}
	return ocsfActor{kind: actorUser, uid: actor}
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
