package siem

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
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
func syslogSeverity(severityID int) int {
	switch severityID {
	case sevLow:
		return 5
	case sevMedium:
		return 4
	case sevHigh:
		return 3
	}
	return 6 // informational, and anything unknown
}

// withDefaults fills in the facility and enterprise id, and validates.
func (c SyslogConfig) withDefaults() (SyslogConfig, error) {
	if c.Facility == 0 {
		c.Facility = 13
	}
	if c.EnterpriseID == 0 {
		c.EnterpriseID = 32473
	}
	return c, c.Validate()
}

// Syslog is one RFC 5424 message carrying body (the entry in a format: OCSF, CEF or raw) as
// its MSG. APP-NAME is "tunnelplane", MSGID the event type, and the structured data element
// tunnelplane@<enterprise id> repeats what a receiver needs without parsing the body: eventId
// (the dedupe key), position, seq (the sink's sequence) and hash.
func Syslog(c SyslogConfig, e Entry, severityID int, body []byte) ([]byte, error) {
	if e.Record == nil {
		return nil, errors.New("siem: entry without a record")
	}
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	b := appendSyslogHeader(make([]byte, 0, 256+len(body)), c, e, severityID)
	return append(b, body...), nil
}

// appendSyslogHeader appends the message up to MSG (after the BOM); c has its defaults.
func appendSyslogHeader(b []byte, c SyslogConfig, e Entry, severityID int) []byte {
	host := c.Hostname
	if host == "" {
		host = "-"
	}
	r := e.Record
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(c.Facility*8+syslogSeverity(severityID)), 10)
	b = append(b, ">1 "...)
	b = appendTimestamp(b, r.RecordedAt)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, " tunnelplane - "...)
	b = appendHeaderToken(b, r.Type, 32)
	b = append(b, " [tunnelplane@"...)
	b = strconv.AppendInt(b, int64(c.EnterpriseID), 10)
	// The values need no escaping: a UUID, decimal numbers, hex.
	b = append(b, ` eventId="`...)
	b = appendUUID(b, r.EventID)
	b = append(b, `" position="`...)
	b = strconv.AppendUint(b, r.Position, 10)
	b = append(b, `" seq="`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `" hash="`...)
	b = hex.AppendEncode(b, r.Hash)
	return append(b, syslogHeaderEnd...)
}

// syslogHeaderEnd closes the structured data after the hash; MSG is UTF-8, said with a BOM.
const syslogHeaderEnd = "\"] \xEF\xBB\xBF"

// timestampLayout is RFC 5424's TIMESTAMP, to the microsecond.
const timestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendTimestamp appends t in UTC as timestampLayout: what AppendFormat writes (fractions
// truncated), digit by digit without parsing the layout.
func appendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(b, timestampLayout)
	}
	hour, minute, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, minute, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1000, 6)
	return append(b, 'Z')
}

// appendDigits appends v (not negative, below 10^n) in exactly n decimal digits.
func appendDigits(b []byte, v, n int) []byte {
	start := len(b)
	for range n {
		b = append(b, '0')
	}
	for i := len(b) - 1; i >= start && v > 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}

// Frame is msg in RFC 5425 (and RFC 6587) octet-counting framing: "MSG-LEN SP SYSLOG-MSG".
func Frame(msg []byte) []byte {
	b := make([]byte, 0, len(msg)+8)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, ' ')
	return append(b, msg...)
}

// appendHeaderToken appends s as an RFC 5424 header field: printable ASCII without spaces
// (anything else, each rune, becomes '_'), at most n bytes, "-" when nothing is left.
func appendHeaderToken(b []byte, s string, n int) []byte {
	if s == "" {
		return append(b, '-')
	}
	k := 0
	for _, r := range s {
		if k == n {
			break
		}
		if r < 33 || r > 126 {
			r = '_'
		}
		b = append(b, byte(r))
		k++
	}
	return b
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
	return o.severity, nil
}

// classify decodes e and applies its mapping's class attributes, which settle its status and
// severity: what CEF and the syslog severity need of OCSF.
func classify(e Entry) (decoded, ocsfMapping, *ocsfEvent, error) {
	d, err := decode(e)
	if err != nil {
		return decoded{}, ocsfMapping{}, nil, err
	}
	o := new(ocsfEvent)
	m, err := classifyDecoded(d, o)
	if err != nil {
		return decoded{}, ocsfMapping{}, nil, err
	}
	return d, m, o, nil
}
