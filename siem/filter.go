package siem

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// SinkFilter chooses what a sink forwards.
type SinkFilter struct {
	// Types are event types, or prefixes ending in "." ("audit."); empty: every type.
	Types []string
	// OrgID makes an org-scoped sink: only events of that org (never platform events such as
	// node.* or the log's key history).
	OrgID string
	// MinSeverity is the lowest OCSF severity_id forwarded (0: all).
	MinSeverity int
}

// Validate reports every problem at once.
func (f SinkFilter) Validate() error {
	var errs []error
	for _, t := range f.Types {
		if strings.HasSuffix(t, ".") {
			continue
		}
		if _, ok := ocsfMappings[t]; !ok {
			errs = append(errs, fmt.Errorf("siem filter: %q is no event type (a prefix ends in '.')", t))
		}
	}
	if f.MinSeverity < 0 || f.MinSeverity > sevHigh {
		errs = append(errs, fmt.Errorf("siem filter: minimum severity %d: want 0-%d", f.MinSeverity, sevHigh))
	}
	return errors.Join(errs...)
}

// Match says whether the sink forwards rec. A record it cannot read matches, so that the
// format's error stops the sink there instead of the record being dropped unseen.
func (f SinkFilter) Match(rec *eventstore.Record) bool {
	if len(f.Types) > 0 {
		ok := false
		for _, t := range f.Types {
			if rec.Type == t || (strings.HasSuffix(t, ".") && strings.HasPrefix(rec.Type, t)) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if f.OrgID == "" && f.MinSeverity == 0 {
		return true
	}
	d, err := decode(Entry{Record: rec})
	if err != nil {
		return true
	}
	if f.OrgID != "" && d.orgID() != f.OrgID {
		return false
	}
	if f.MinSeverity > 0 {
		sev, err := SeverityID(Entry{Record: rec})
		if err == nil && sev < f.MinSeverity {
			return false
		}
	}
	return true
}

// Redactor replaces client addresses by a keyed hash, the same for the same address under one
// key: a SIEM can still count and correlate a caller without learning where it is.
type Redactor struct{ key []byte }

// NewRedactor makes a redactor with a sink's own key (at least 16 bytes).
func NewRedactor(key []byte) (*Redactor, error) {
	if len(key) < 16 {
		return nil, errors.New("siem redaction: the key must be at least 16 bytes")
	}
	return &Redactor{key: append([]byte(nil), key...)}, nil
}

// redactedPrefix marks a hashed address ("ip-" and 32 hex digits: no ':' or '.', so it is
// never taken for an address).
const redactedPrefix = "ip-"

// addr hashes the host of a "host:port" or bare address; the port is dropped.
func (r *Redactor) addr(a string) string {
	if r == nil || a == "" {
		return a
	}
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		host = a
	}
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(strings.ToLower(host)))
	return redactedPrefix + hex.EncodeToString(mac.Sum(nil)[:16])
}

// redact applies r to a decoded entry: the metadata's client address and the payloads that
// carry one.
func (r *Redactor) redact(d *decoded) {
	if r == nil {
		return
	}
	d.md.ClientIP = r.addr(d.md.ClientIP)
	switch ev := d.event.(type) {
	case *domain.AuthFailed:
		ev.RemoteAddr = r.addr(ev.RemoteAddr)
	case *domain.AgentConnected:
		ev.RemoteAddr = r.addr(ev.RemoteAddr)
	}
}
