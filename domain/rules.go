package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

var (
	namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	idPattern   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// ValidName reports whether s is a valid organization or tunnel name: a DNS label (lower-case
// letters, digits and inner hyphens, 1–63 characters), so it can appear in a host name.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// ValidID reports whether s is a canonical lower-case UUID.
func ValidID(s string) bool { return idPattern.MatchString(s) }

func checkName(p *problems, field, s string) {
	if !ValidName(s) {
		p.add(field, "must be 1-63 lower-case letters, digits or inner hyphens, like \"llm-dev\"")
	}
}

func checkID(p *problems, field, s string) {
	if !ValidID(s) {
		p.add(field, "must be a UUID")
	}
}

// checkUser validates a user id (an identity provider's subject).
func checkUser(p *problems, field, s string) {
	switch {
	case s == "":
		p.add(field, "is required")
	case len(s) > 256:
		p.add(field, "is longer than 256 bytes")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.add(field, "contains control characters")
	}
}

// Protocols a tunnel may carry. "http" covers HTTP/1.1, HTTP/2, gRPC, WebSocket and SSE.
const (
	ProtocolHTTP = "http"
	ProtocolTCP  = "tcp"
)

// checkUpstream validates the address the agent forwards to, for the given protocol.
func checkUpstream(p *problems, field, upstream, protocol string) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		p.add(field, "must be a URL like http://127.0.0.1:11434 or tcp://127.0.0.1:5432")
		return
	}
	switch protocol {
	case ProtocolHTTP:
		if u.Scheme != "http" && u.Scheme != "https" {
			p.add(field, "must use http or https for an http tunnel")
			return
		}
	case ProtocolTCP:
		if u.Scheme != "tcp" {
			p.add(field, "must use tcp:// for a tcp tunnel")
			return
		}
		if u.Port() == "" {
			p.add(field, "must name a port for a tcp tunnel")
			return
		}
	default:
		return // the protocol itself is reported
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.add(field, "has an invalid port")
		}
	}
	if u.User != nil {
		p.add(field, "must not carry credentials")
	}
	if h := u.Hostname(); strings.ContainsAny(h, " /") || (net.ParseIP(h) == nil && !validHost(h)) {
		p.add(field, "has an invalid host")
	}
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

func checkProtocol(p *problems, field, protocol string) {
	if protocol != ProtocolHTTP && protocol != ProtocolTCP {
		p.add(field, "must be \"http\" or \"tcp\"")
	}
}

// Stream ids of the aggregates.
func OrgStream(orgID string) string       { return "org-" + orgID }
func OrgNameStream(name string) string    { return "orgname-" + name }
func TunnelStream(tunnelID string) string { return "tunnel-" + tunnelID }
func TunnelNameStream(orgID, name string) string {
	return "tunnelname-" + orgID + "-" + name
}
func NodeStream(nodeID string) string        { return "node-" + nodeID }
func AgentTokenStream(tokenID string) string { return "agenttoken-" + tokenID }

// RoleStream is the stream of one user's roles in one organization. User ids come from identity
// providers and may hold any character, so the stream uses a hash of it.
func RoleStream(orgID, userID string) string {
	sum := sha256.Sum256([]byte(userID))
	if orgID == PlatformOrg {
		orgID = "platform"
	}
	return "roles-" + orgID + "-" + hex.EncodeToString(sum[:12])
}

// NodeFactsStream holds what a node reports (connections, usage); only that node writes it.
func NodeFactsStream(nodeID string) string { return "nodefacts-" + nodeID }

// AuditStream holds audit events of the control plane.
const AuditStream = "audit"
