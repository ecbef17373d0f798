package siem

import (
	"strconv"
	"strings"
)

// cefSeverity is CEF's 0-10 severity for an OCSF severity_id.
var cefSeverity = map[int]int{sevInformational: 1, sevLow: 3, sevMedium: 5, sevHigh: 8}

// CEF is the entry as one ArcSight CEF:0 line (no trailing newline): the header names product,
// event type, its OCSF class and activity, and severity; the extension carries the event id
// (externalId, the dedupe key), receipt time, the log position (cn1), the sink's sequence
// (cn2), the record's hash (cs1), the org (cs2), actor, caller address, outcome, and a login's one
// host (dhost).
func CEF(e Entry, p Product) (string, error) {
	d, m, o, err := classify(e)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("CEF:0")
	for _, f := range []string{p.Vendor, p.Name, p.Version, d.Record.Type, m.class.className + ": " + m.activityName,
		strconv.Itoa(cefSeverity[o.severity])} {
		b.WriteByte('|')
		b.WriteString(cefHeaderEscape(f))
	}
	b.WriteByte('|')
	ext := [][2]string{
		{"rt", strconv.FormatInt(d.Record.RecordedAt.UnixMilli(), 10)},
		{"externalId", d.Record.EventID.String()},
		{"cn1Label", "logPosition"}, {"cn1", strconv.FormatUint(d.Record.Position, 10)},
		{"cn2Label", "sinkSequence"}, {"cn2", strconv.FormatUint(e.Seq, 10)},
		{"cs1Label", "recordHash"}, {"cs1", d.hash()},
		{"cat", m.class.className},
		{"outcome", strings.ToLower(o.statusName())},
		{"msg", m.message(d)},
	}
	if org := d.orgID(); org != "" {
		ext = append(ext, [2]string{"cs2Label", "orgId"}, [2]string{"cs2", org})
	}
	if actor := d.md.Actor; actor != "" {
		ext = append(ext, [2]string{"suser", actor})
	}
	switch {
	case strings.HasPrefix(d.md.ClientIP, redactedPrefix):
		ext = append(ext, [2]string{"cs4Label", "clientHash"}, [2]string{"cs4", d.md.ClientIP}) // not an address: src would be wrong
	case d.md.ClientIP != "":
		ext = append(ext, [2]string{"src", d.md.ClientIP})
	}
	if d.md.CorrelationID != "" {
		ext = append(ext, [2]string{"cs3Label", "correlationId"}, [2]string{"cs3", d.md.CorrelationID})
	}
	if o.dstHost.set { // a login's one host
		ext = append(ext, [2]string{"dhost", o.dstHost.v})
	}
	for i, kv := range ext {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(cefValueEscape(kv[1]))
	}
	return b.String(), nil
}

// cefHeaderEscape escapes a CEF header field: backslash and pipe are escaped; a header may not
// span lines, so line breaks become spaces.
func cefHeaderEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '|':
			b.WriteString(`\|`)
		case '\r', '\n':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cefValueEscape escapes an extension value: backslash, equals sign and line breaks.
func cefValueEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '=':
			b.WriteString(`\=`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
