package domain

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"unicode"
)

// SIEM sink transports, message formats and HTTPS profiles.
const (
	SIEMTransportSyslog = "syslog" // RFC 5424 over TLS, RFC 5425 framing
	SIEMTransportHTTPS  = "https"  // JSON batches

	SIEMFormatOCSF = "ocsf"
	SIEMFormatCEF  = "cef"
	SIEMFormatRaw  = "raw"

	SIEMProfileHEC  = "hec"  // Splunk HTTP Event Collector
	SIEMProfileJSON = "json" // a plain JSON array per batch
)

// Secret values as the log holds them: never the secret itself, but either a value sealed by the
// control plane's SIEM key (SealedPrefix) or a reference to where the control plane reads it
// (RefEnvPrefix, RefFilePrefix). References name the control plane's own environment and files,
// so only platform sinks (superadmins) may use them: an org admin naming /etc/... would have the
// control plane send that file to a receiver of their choosing.
const (
	SealedPrefix  = "sealed:v1:"
	RefEnvPrefix  = "env:"
	RefFilePrefix = "file:"
)

// SIEMSinkSpec is what a sink is: where it delivers, what, and how.
type SIEMSinkSpec struct {
	Name      string `json:"name"`
	Transport string `json:"transport"`
	// Address is the syslog receiver (host:port); URL the HTTPS endpoint.
	Address string `json:"address,omitempty"`
	URL     string `json:"url,omitempty"`
	Profile string `json:"profile,omitempty"`
	Format  string `json:"format"`
	// ServerName overrides the TLS name checked on the receiver's certificate.
	ServerName string `json:"server_name,omitempty"`
	// CACertPEM verifies the receiver (empty: the system roots); ClientCertPEM is presented with
	// the key ClientKey names. Certificates are public; keys are secrets.
	CACertPEM     string `json:"ca_cert_pem,omitempty"`
	ClientCertPEM string `json:"client_cert_pem,omitempty"`
	// Secrets, sealed or referenced (see SealedPrefix): the HEC token, the client key, the key
	// client addresses are hashed with.
	Token     string `json:"token,omitempty"`
	ClientKey string `json:"client_key,omitempty"`
	RedactKey string `json:"redact_key,omitempty"`
	// Types are event types or prefixes ending in "." (empty: all); MinSeverity the lowest OCSF
	// severity_id forwarded (0: all).
	Types       []string `json:"types,omitempty"`
	MinSeverity int      `json:"min_severity,omitempty"`
}

// SIEMSinkConfigured starts a sink. OrgID empty: a platform sink (every event); else the sink
// receives only that organization's events.
type SIEMSinkConfigured struct {
	SinkID string `json:"sink_id"`
	OrgID  string `json:"org_id,omitempty"`
	SIEMSinkSpec
}

// SIEMSinkUpdated replaces a sink's spec (whole: it is what the sink is from then on).
type SIEMSinkUpdated struct {
	SinkID string `json:"sink_id"`
	OrgID  string `json:"org_id,omitempty"`
	SIEMSinkSpec
}

// SIEMSinkRemoved ends a sink.
type SIEMSinkRemoved struct {
	SinkID string `json:"sink_id"`
	OrgID  string `json:"org_id,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SIEMDeliverySkipped is an operator's decision that a sink stops trying to deliver the record
// at Position (one its receiver refuses for good). The record keeps its sequence number, so the
// receiver sees the gap; this event, forwarded like any other, says why.
type SIEMDeliverySkipped struct {
	SinkID   string `json:"sink_id"`
	OrgID    string `json:"org_id,omitempty"`
	Position uint64 `json:"position"`
	Reason   string `json:"reason"`
}

func (SIEMSinkConfigured) EventType() string  { return TypeSIEMSinkConfigured }
func (SIEMSinkUpdated) EventType() string     { return TypeSIEMSinkUpdated }
func (SIEMSinkRemoved) EventType() string     { return TypeSIEMSinkRemoved }
func (SIEMDeliverySkipped) EventType() string { return TypeSIEMDeliverySkipped }

// SIEMSinkStream is a sink's stream.
func SIEMSinkStream(sinkID string) string { return "siemsink-" + sinkID }

// SIEMSink is a configured SIEM sink.
type SIEMSink struct {
	id, orgID string
	spec      SIEMSinkSpec
	removed   bool
	version   uint64
}

// NewSIEMSink is the input of ConfigureSIEMSink.
type NewSIEMSink struct {
	SinkID, OrgID string
	Spec          SIEMSinkSpec
}

// ConfigureSIEMSink decides a new sink.
func ConfigureSIEMSink(in NewSIEMSink) (SIEMSinkConfigured, error) {
	var p problems
	checkID(&p, "sink_id", in.SinkID)
	if in.OrgID != "" {
		checkID(&p, "org_id", in.OrgID)
	}
	checkSIEMSpec(&p, in.OrgID, in.Spec)
	if err := p.err(); err != nil {
		return SIEMSinkConfigured{}, err
	}
	return SIEMSinkConfigured{SinkID: in.SinkID, OrgID: in.OrgID, SIEMSinkSpec: in.Spec}, nil
}

// RehydrateSIEMSink rebuilds a sink from its stream.
func RehydrateSIEMSink(events []Recorded) (*SIEMSink, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	s := &SIEMSink{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *SIEMSinkConfigured:
			s.id, s.orgID, s.spec = ev.SinkID, ev.OrgID, ev.SIEMSinkSpec
		case *SIEMSinkUpdated:
			s.spec = ev.SIEMSinkSpec
		case *SIEMSinkRemoved:
			s.removed = true
		case *SIEMDeliverySkipped:
		default:
			return nil, fmt.Errorf("siem sink: %w: %s", ErrUnknownEvent, r.Type)
		}
		s.version = r.StreamVersion
	}
	return s, nil
}

// Update decides a new spec; a token or client key left empty keeps its current value (the
// redaction key does not: empty ends redaction). Nil: nothing changed.
func (s *SIEMSink) Update(spec SIEMSinkSpec) (*SIEMSinkUpdated, error) {
	if s.removed {
		return nil, fmt.Errorf("update siem sink %s: %w", s.id, ErrNotFound)
	}
	if spec.Token == "" {
		spec.Token = s.spec.Token
	}
	if spec.ClientKey == "" {
		spec.ClientKey = s.spec.ClientKey
	}
	var p problems
	checkSIEMSpec(&p, s.orgID, spec)
	if err := p.err(); err != nil {
		return nil, err
	}
	if reflect.DeepEqual(spec, s.spec) {
		return nil, nil
	}
	return &SIEMSinkUpdated{SinkID: s.id, OrgID: s.orgID, SIEMSinkSpec: spec}, nil
}

// Remove decides ending the sink.
func (s *SIEMSink) Remove(reason string) (SIEMSinkRemoved, error) {
	if s.removed {
		return SIEMSinkRemoved{}, fmt.Errorf("remove siem sink %s: %w", s.id, ErrNotFound)
	}
	var p problems
	checkText(&p, "reason", reason, 1024)
	if err := p.err(); err != nil {
		return SIEMSinkRemoved{}, err
	}
	return SIEMSinkRemoved{SinkID: s.id, OrgID: s.orgID, Reason: reason}, nil
}

// Skip decides that the sink gives up the record at position, below head (the log's size).
func (s *SIEMSink) Skip(position, head uint64, reason string) (SIEMDeliverySkipped, error) {
	if s.removed {
		return SIEMDeliverySkipped{}, fmt.Errorf("skip for siem sink %s: %w", s.id, ErrNotFound)
	}
	var p problems
	if position == 0 || position > head {
		p.add("position", "must be the position of a record in the log (1 to %d)", head)
	}
	if strings.TrimSpace(reason) == "" {
		p.add("reason", "is required: a skip is an operator's decision, and the log says why")
	}
	checkText(&p, "reason", reason, 1024)
	if err := p.err(); err != nil {
		return SIEMDeliverySkipped{}, err
	}
	return SIEMDeliverySkipped{SinkID: s.id, OrgID: s.orgID, Position: position, Reason: reason}, nil
}

func (s *SIEMSink) ID() string         { return s.id }
func (s *SIEMSink) OrgID() string      { return s.orgID }
func (s *SIEMSink) Spec() SIEMSinkSpec { return s.spec }
func (s *SIEMSink) Removed() bool      { return s.removed }
func (s *SIEMSink) Version() uint64    { return s.version }

// checkText refuses control characters and more than max bytes.
func checkText(p *problems, field, s string, max int) {
	if len(s) > max {
		p.add(field, "is longer than %d bytes", max)
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\n' }) >= 0 {
		p.add(field, "contains control characters")
	}
}

// checkSIEMSpec validates a sink's spec; orgID empty for a platform sink.
func checkSIEMSpec(p *problems, orgID string, s SIEMSinkSpec) {
	checkName(p, "name", s.Name)
	switch s.Transport {
	case SIEMTransportSyslog:
		if s.URL != "" || s.Profile != "" {
			p.add("url", "is for https sinks; a syslog sink has an address")
		}
		host, port, err := net.SplitHostPort(s.Address)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || (net.ParseIP(host) == nil && !validHost(host)) {
			p.add("address", "must be host:port, like siem.example.com:6514")
		}
		if s.Token != "" {
			p.add("token", "is for https sinks")
		}
	case SIEMTransportHTTPS:
		if s.Address != "" {
			p.add("address", "is for syslog sinks; an https sink has a url")
		}
		u, err := url.Parse(s.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			p.add("url", "must be an https URL without credentials, like https://splunk.example.com:8088/services/collector/event")
		}
		if s.Profile != SIEMProfileHEC && s.Profile != SIEMProfileJSON {
			p.add("profile", "must be %q or %q", SIEMProfileHEC, SIEMProfileJSON)
		}
		if s.Profile == SIEMProfileHEC && s.Token == "" {
			p.add("token", "is required for the hec profile")
		}
		if s.Format == SIEMFormatCEF {
			p.add("format", "cef is a syslog format; https carries ocsf or raw")
		}
	default:
		p.add("transport", "must be %q or %q", SIEMTransportSyslog, SIEMTransportHTTPS)
	}
	switch s.Format {
	case SIEMFormatOCSF, SIEMFormatCEF:
	case SIEMFormatRaw:
		if s.RedactKey != "" {
			p.add("redact_key", "cannot apply to the raw format: its bytes are the signed record")
		}
	default:
		p.add("format", "must be %q, %q or %q", SIEMFormatOCSF, SIEMFormatCEF, SIEMFormatRaw)
	}
	if len(s.ServerName) > 253 || (s.ServerName != "" && net.ParseIP(s.ServerName) == nil && !validHost(s.ServerName)) {
		p.add("server_name", "must be a host name")
	}
	checkPEM(p, "ca_cert_pem", s.CACertPEM)
	checkPEM(p, "client_cert_pem", s.ClientCertPEM)
	if (s.ClientCertPEM == "") != (s.ClientKey == "") {
		p.add("client_key", "and client_cert_pem go together")
	}
	for field, v := range map[string]string{"token": s.Token, "client_key": s.ClientKey, "redact_key": s.RedactKey} {
		checkSecret(p, field, v, orgID == "")
	}
	if len(s.Types) > 100 {
		p.add("types", "has more than 100 entries")
	}
	for _, t := range s.Types {
		if t == "" || len(t) > 128 || strings.IndexFunc(t, func(r rune) bool {
			return !(r == '.' || r == '_' || r == '$' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'))
		}) >= 0 {
			p.add("types", "%q is not an event type or a prefix ending in \".\"", t)
		}
	}
	if s.MinSeverity < 0 || s.MinSeverity > 6 {
		p.add("min_severity", "must be an OCSF severity_id, 0 to 6")
	}
}

func checkPEM(p *problems, field, v string) {
	if v == "" {
		return
	}
	if len(v) > 64<<10 || !strings.Contains(v, "-----BEGIN CERTIFICATE-----") {
		p.add(field, "must be PEM certificates, at most 64 KiB")
	}
}

// checkSecret accepts a sealed value, or, on a platform sink, a reference.
func checkSecret(p *problems, field, v string, platform bool) {
	switch {
	case v == "":
	case len(v) > 16<<10:
		p.add(field, "is longer than 16 KiB")
	case strings.HasPrefix(v, SealedPrefix):
	case strings.HasPrefix(v, RefEnvPrefix) || strings.HasPrefix(v, RefFilePrefix):
		if !platform {
			p.add(field, "references (env:, file:) name the control plane's environment and files: only platform sinks may use them")
		}
		if len(v) <= len(RefEnvPrefix) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			p.add(field, "must name a variable or a file")
		}
	default:
		p.add(field, "must be sealed by the control plane or a reference (env:NAME, file:PATH); the log never holds a secret in clear")
	}
}
