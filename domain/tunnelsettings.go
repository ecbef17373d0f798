package domain

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Bounds of a tunnel's labels and of a label selector (nodes match selectors against labels on
// every call of a label-scoped access key).
const (
	MaxTunnelLabels   = 16
	MaxLabelSelectors = 8
)

// labelPattern is a label key or value: 1-63 lower-case letters, digits, '.', '_' or '-',
// starting and ending with a letter or digit ("team", "ml", "cost-center", "eu.west").
var labelPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

const labelRule = "must be 1-63 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit"

// CheckLabels validates a tunnel's labels (none is valid) or, with selector, an access key's
// label selector (at least one pair).
func CheckLabels(labels map[string]string, selector bool) error {
	limit, what := MaxTunnelLabels, "labels"
	if selector {
		limit, what = MaxLabelSelectors, "a selector"
		if len(labels) == 0 {
			return fmt.Errorf("a selector needs at least one key=value pair")
		}
	}
	if len(labels) > limit {
		return fmt.Errorf("%s may hold at most %d pairs", what, limit)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if !labelPattern.MatchString(k) {
			return fmt.Errorf("label key %.70q %s", k, labelRule)
		}
		if !labelPattern.MatchString(labels[k]) {
			return fmt.Errorf("label %s: value %.70q %s", k, labels[k], labelRule)
		}
	}
	return nil
}

// ParseLabels reads "key=value" pairs (the CLI's --label flags). A key given twice is an error.
func ParseLabels(pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, s := range pairs {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("label %.70q: want key=value", s)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %.70q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// LabelsMatch tells whether labels carry every pair of selector. An empty selector matches
// nothing: a key scoped by labels must name at least one.
func LabelsMatch(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// FormatLabels is labels as "k=v,k2=v2", sorted by key (for people and logs).
func FormatLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// CORS modes of a tunnel.
const (
	// CORSOff: the node adds nothing and a preflight is a request like any other (needs a
	// credential, which a browser's preflight never carries). A tunnel without a setting is off.
	CORSOff = "off"
	// CORSOrigins: the node answers preflights from the listed origins itself and grants them
	// the responses (Access-Control-Allow-Origin, with credentials); other origins get no grant.
	CORSOrigins = "origins"
	// CORSPassthrough: preflights go to the upstream without a credential, which answers them;
	// every other request still needs one.
	CORSPassthrough = "passthrough"
)

// MaxCORSOrigins bounds a tunnel's allowed origins.
const MaxCORSOrigins = 32

// TunnelCORS is a tunnel's cross-origin setting.
type TunnelCORS struct {
	Mode    string   `json:"mode"`
	Origins []string `json:"origins,omitempty"` // canonical origins (CanonicalOrigin), CORSOrigins only
}

// CanonicalCORS validates a CORS setting and returns it with its origins in the form browsers
// send in Origin (lower case, no default port), sorted and without duplicates.
func CanonicalCORS(c TunnelCORS) (TunnelCORS, error) {
	switch c.Mode {
	case CORSOff, CORSPassthrough:
		if len(c.Origins) > 0 {
			return TunnelCORS{}, fmt.Errorf("origins are listed only in mode %q", CORSOrigins)
		}
		return TunnelCORS{Mode: c.Mode}, nil
	case CORSOrigins:
	default:
		return TunnelCORS{}, fmt.Errorf("mode must be %q, %q or %q", CORSOff, CORSOrigins, CORSPassthrough)
	}
	if len(c.Origins) == 0 || len(c.Origins) > MaxCORSOrigins {
		return TunnelCORS{}, fmt.Errorf("mode %q needs 1-%d origins", CORSOrigins, MaxCORSOrigins)
	}
	out := make([]string, 0, len(c.Origins))
	for _, o := range c.Origins {
		co, err := CanonicalOrigin(o)
		if err != nil {
			return TunnelCORS{}, err
		}
		out = append(out, co)
	}
	slices.Sort(out)
	return TunnelCORS{Mode: CORSOrigins, Origins: slices.Compact(out)}, nil
}

// CanonicalOrigin reads an origin as a browser serializes it: http or https, a host, an optional
// port; no user, path, query or fragment. It returns the lower-case form without a default port.
func CanonicalOrigin(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("origin %.100q: %s (want scheme://host[:port], like https://app.example.com)", s, why)
	}
	if len(s) > 253+20 {
		return bad("too long")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return bad("the scheme must be http or https")
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.HasSuffix(s, "/") {
		return bad("an origin has no user, path, query or fragment")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" || strings.ContainsAny(host, "*%") {
		return bad("it names no host")
	}
	if ip := net.ParseIP(host); ip == nil && !hostPattern.MatchString(host) {
		return bad("the host is not a DNS name or an IP address")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return bad("the port must be 1-65535")
		}
		if (scheme == "http" && n == 80) || (scheme == "https" && n == 443) {
			port = ""
		}
	}
	if port != "" {
		return scheme + "://" + host + ":" + port, nil
	}
	return scheme + "://" + host, nil
}

// hostPattern is a DNS name of letters, digits and inner hyphens per label.
var hostPattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
