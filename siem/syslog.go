package siem

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SyslogConfig names the sender in RFC 5424 headers.
type SyslogConfig struct {
	// Hostname is the HOSTNAME field (printable ASCII, at most 255; "-" when empty).
	Hostname string
	// Facility is the syslog facility (0-23); the default is 13, "log audit".
	Facility int
	// EnterpriseID is the private enterprise number in the structured data's SD-ID
	// ("tunnelplane@<n>"); the default is 32473, the number RFC 5612 reserves for examples.
	EnterpriseID int
}

// Validate reports every problem at once.
func (c SyslogConfig) Validate() error {
	var errs []error
	if len(c.Hostname) > 255 || strings.IndexFunc(c.Hostname, func(r rune) bool { return r < 33 || r > 126 }) >= 0 {
		errs = append(errs, fmt.Errorf("syslog hostname %q: at most 255 printable ASCII characters without spaces", c.Hostname))
	}
	if c.Facility < 0 || c.Facility > 23 {
		errs = append(errs, fmt.Errorf("syslog facility %d: want 0-23", c.Facility))
	}
	if c.EnterpriseID < 0 {
		errs = append(errs, fmt.Errorf("syslog enterprise id %d: want a positive number", c.EnterpriseID))
	}
	return errors.Join(errs...)
}

// syslogSeverity is the RFC 5424 severity for an OCSF severity_id.
var syslogSeverity = map[int]int{sevInformational: 6, sevLow: 5, sevMedium: 4, sevHigh: 3}

// Syslog is one RFC 5424 message carrying body (the entry in a format: OCSF, CEF or raw) as
// its MSG. APP-NAME is "tunnelplane", MSGID the event type, and the structured data element
// tunnelplane@<enterprise id> repeats what a receiver needs without parsing the body: eventId
// (the dedupe key), position, seq (the sink's sequence) and hash.
func Syslog(c SyslogConfig, e Entry, severityID int, body []byte) ([]byte, error) {
	if e.Record == nil {
		return nil, errors.New("siem: entry without a record")
	}
	if c.Facility == 0 {
		c.Facility = 13
	}
	if c.EnterpriseID == 0 {
		c.EnterpriseID = 32473
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	sev, ok := syslogSeverity[severityID]
	if !ok {
		sev = 6
	}
	host := c.Hostname
	if host == "" {
		host = "-"
	}
	r := e.Record
	msgID := headerToken(r.Type, 32)
	b := make([]byte, 0, 256+len(body))
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(c.Facility*8+sev), 10)
	b = append(b, ">1 "...)
	b = r.RecordedAt.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, " tunnelplane - "...)
	b = append(b, msgID...)
	b = append(b, " [tunnelplane@"...)
	b = strconv.AppendInt(b, int64(c.EnterpriseID), 10)
	for _, p := range [][2]string{
		{"eventId", r.EventID.String()},
		{"position", strconv.FormatUint(r.Position, 10)},
		{"seq", strconv.FormatUint(e.Seq, 10)},
		{"hash", fmt.Sprintf("%x", r.Hash)},
	} {
		b = append(b, ' ')
		b = append(b, p[0]...)
		b = append(b, `="`...)
		b = appendSDValue(b, p[1])
		b = append(b, '"')
	}
	b = append(b, "] \xEF\xBB\xBF"...) // MSG is UTF-8, said with a BOM
	b = append(b, body...)
	return b, nil
}

// Frame is msg in RFC 5425 (and RFC 6587) octet-counting framing: "MSG-LEN SP SYSLOG-MSG".
func Frame(msg []byte) []byte {
	b := make([]byte, 0, len(msg)+8)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ' ')
	return append(b, msg...)
}

// headerToken is s as an RFC 5424 header field: printable ASCII without spaces, at most n
// characters, "-" when nothing is left.
func headerToken(s string, n int) string {
	out := strings.Map(func(r rune) rune {
		if r < 33 || r > 126 {
			return '_'
		}
		return r
	}, s)
	if len(out) > n {
		out = out[:n]
	}
	if out == "" {
		return "-"
	}
	return out
}

// appendSDValue escapes a structured-data parameter value: '"', '\' and ']'.
func appendSDValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"', '\\', ']':
			b = append(b, '\\')
		}
		b = append(b, v[i])
	}
	return b
}

// SeverityID is the OCSF severity_id the formats give the entry's event (for Syslog).
func SeverityID(e Entry) (int, error) {
	_, _, o, err := classify(e)
	if err != nil {
		return 0, err
	}
	return o["severity_id"].(int), nil
}

// classify decodes e and applies its mapping's class attributes, which settle its status and
// severity: what CEF and the syslog severity need of OCSF.
func classify(e Entry) (decoded, ocsfMapping, ocsfEvent, error) {
	d, err := decode(e)
	if err != nil {
		return decoded{}, ocsfMapping{}, nil, err
	}
	m, ok := ocsfMappings[d.Record.Type]
	if !ok {
		return decoded{}, ocsfMapping{}, nil, fmt.Errorf("%w: %s", ErrUnmapped, d.Record.Type)
	}
	o := ocsfEvent{"severity_id": m.severity}
	o.status(statusSuccess, "")
	m.fill(d, o)
	return d, m, o, nil
}
