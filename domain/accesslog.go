package domain

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Per-call access records: a tunnel whose access log is AccessLogCalls has its nodes report
// every call (who called which route, with what result), batched in access.calls_recorded facts.
// AccessLogWindows (the default) keeps only the usage windows' totals per caller.
const (
	TypeTunnelAccessLogSet  = "tunnel.access_log_set"
	TypeAccessCallsRecorded = "access.calls_recorded"

	AccessLogWindows = "windows"
	AccessLogCalls   = "calls"
)

// Bounds of a call record and of a batch, as nodes cut them and the ingester checks them.
const (
	MaxCallsPerBatch = 1000
	MaxCallRoute     = 256 // bytes of the path (no query string); longer paths are cut
	MaxCallMethod    = 24
	maxCallerID      = 128
)

// TunnelAccessLogSet records a change of what a tunnel's nodes report about its calls.
type TunnelAccessLogSet struct {
	TunnelID  string `json:"tunnel_id"`
	OrgID     string `json:"org_id"`
	AccessLog string `json:"access_log"` // AccessLogWindows or AccessLogCalls
	Previous  string `json:"previous"`
}

// AccessCall is one call through a tunnel as its node saw it. At is when the request arrived
// (the node's clock); Route the request's path without its query string, at most MaxCallRoute
// bytes; Status 0 when no response was sent (the caller left).
type AccessCall struct {
	At         time.Time `json:"at"`
	OrgID      string    `json:"org_id"`
	TunnelID   string    `json:"tunnel_id"`
	CallerKind string    `json:"caller_kind"` // CallerUser, CallerAccessKey, CallerAnonymous, CallerOverflow
	CallerID   string    `json:"caller_id,omitempty"`
	Method     string    `json:"method"`
	Route      string    `json:"route"`
	Status     int       `json:"status"`
	BytesIn    int64     `json:"bytes_in"`
	BytesOut   int64     `json:"bytes_out"`
	DurationUS int64     `json:"duration_us"`
	// TraceID is the call's W3C trace id (32 lowercase hex digits) when its node traces calls.
	TraceID string `json:"trace_id,omitempty"`
}

// AccessCallsRecorded is a node's batch of call records (at most MaxCallsPerBatch). Dropped counts
// the calls of tunnels logging calls that the node could not queue since its previous batch
// (its queue was full): the log then says how many records it lacks.
type AccessCallsRecorded struct {
	NodeID  string       `json:"node_id"`
	Calls   []AccessCall `json:"calls"`
	Dropped int64        `json:"dropped,omitempty"`
}

// ValidAccessLog tells whether s names an access-log setting.
func ValidAccessLog(s string) bool { return s == AccessLogWindows || s == AccessLogCalls }

// SetAccessLog decides a change of the tunnel's access log. It returns (nil, nil) when the
// setting is already mode.
func (t *Tunnel) SetAccessLog(mode string) (*TunnelAccessLogSet, error) {
	if t.state != TunnelActive {
		return nil, fmt.Errorf("set access log of tunnel %s: %w: it is %s", t.id, ErrInvalidState, t.state)
	}
	if !ValidAccessLog(mode) {
		var p problems
		p.add("access_log", "must be %q or %q", AccessLogWindows, AccessLogCalls)
		return nil, p.err()
	}
	if mode == t.AccessLog() {
		return nil, nil
	}
	return &TunnelAccessLogSet{TunnelID: t.id, OrgID: t.orgID, AccessLog: mode, Previous: t.AccessLog()}, nil
}

// AccessLog is the tunnel's access-log setting (AccessLogWindows unless set).
func (t *Tunnel) AccessLog() string {
	if t.accessLog == "" {
		return AccessLogWindows
	}
	return t.accessLog
}

// Validate checks a batch as a hostile node could send it.
func (b *AccessCallsRecorded) Validate() error {
	if len(b.Calls) > MaxCallsPerBatch {
		return fmt.Errorf("%w: access calls: %d calls in one batch, at most %d", ErrInvalidFact, len(b.Calls), MaxCallsPerBatch)
	}
	if b.Dropped < 0 {
		return fmt.Errorf("%w: access calls: negative drop count", ErrInvalidFact)
	}
	if len(b.Calls) == 0 && b.Dropped == 0 {
		return fmt.Errorf("%w: access calls: an empty batch", ErrInvalidFact)
	}
	for i := range b.Calls {
		if err := b.Calls[i].validate(); err != nil {
			return fmt.Errorf("%w: access calls: call %d: %s", ErrInvalidFact, i, err)
		}
	}
	return nil
}

func (c *AccessCall) validate() error {
	switch {
	case !ValidID(c.OrgID) || !ValidID(c.TunnelID):
		return fmt.Errorf("org and tunnel must be UUIDs")
	case c.At.IsZero() || c.At.Year() < 2000 || c.At.Year() > 9998:
		return fmt.Errorf("time out of range")
	case !ValidCallMethod(c.Method):
		return fmt.Errorf("method must be 1..%d token characters", MaxCallMethod)
	case len(c.Route) > MaxCallRoute || !utf8.ValidString(c.Route) || strings.IndexFunc(c.Route, unicode.IsControl) >= 0:
		return fmt.Errorf("route must be at most %d bytes of UTF-8 without control characters", MaxCallRoute)
	case c.Status < 0 || c.Status > 999:
		return fmt.Errorf("status out of range")
	case c.BytesIn < 0 || c.BytesOut < 0 || c.DurationUS < 0:
		return fmt.Errorf("negative count")
	case c.TraceID != "" && !ValidTraceID(c.TraceID):
		return fmt.Errorf("trace id must be 32 lowercase hex digits, not all zero")
	}
	switch c.CallerKind {
	case CallerAnonymous, CallerOverflow:
		if c.CallerID != "" {
			return fmt.Errorf("caller kind %q takes no caller id", c.CallerKind)
		}
	case CallerUser, CallerAccessKey:
		if c.CallerID == "" || len(c.CallerID) > maxCallerID || strings.IndexFunc(c.CallerID, unicode.IsControl) >= 0 {
			return fmt.Errorf("caller id of kind %q must be 1..%d bytes", c.CallerKind, maxCallerID)
		}
	default:
		return fmt.Errorf("unknown caller kind")
	}
	return nil
}

// ValidCallMethod tells whether m is an RFC 9110 method token of at most MaxCallMethod bytes.
func ValidCallMethod(m string) bool {
	if m == "" || len(m) > MaxCallMethod {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !isTChar(m[i]) {
			return false
		}
	}
	return true
}

func isTChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// CallRoute is the route a call record keeps of a request path: cut to MaxCallRoute bytes (on a
// character boundary), invalid UTF-8 and control characters replaced, so that any path a caller
// sends makes a valid record.
func CallRoute(path []byte) string {
	clean := true
	for _, c := range path {
		if c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean && len(path) <= MaxCallRoute {
		return string(path)
	}
	var b strings.Builder
	b.Grow(min(len(path), MaxCallRoute))
	s := string(path)
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if r == utf8.RuneError && size <= 1 || unicode.IsControl(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxCallRoute {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Bytes sums the batch's bytes each way.
func (b *AccessCallsRecorded) Bytes() (in, out int64) {
	for i := range b.Calls {
		in, out = in+b.Calls[i].BytesIn, out+b.Calls[i].BytesOut
	}
	return in, out
}

func (TunnelAccessLogSet) EventType() string  { return TypeTunnelAccessLogSet }
func (AccessCallsRecorded) EventType() string { return TypeAccessCallsRecorded }

// ValidTraceID tells whether s is a W3C trace id: 32 lowercase hex digits, not all zero.
func ValidTraceID(s string) bool {
	if len(s) != 32 || strings.Trim(s, "0") == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
