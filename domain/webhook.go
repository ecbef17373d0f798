package domain

import (
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Webhook endpoints: an organization's owners and admins name an HTTPS URL and the notification
// types it receives; the control plane delivers each matching event of that organization at
// least once, signed per the Standard Webhooks convention with the endpoint's secret. The log
// holds the secret only sealed (SealedPrefix), as SIEM sinks' secrets.

// Notification types an endpoint may subscribe to. The events of the log of these names are
// delivered as they are; TypeGrantExpiring is appended by the expiry process manager ahead of a
// grant's end. NotificationForecastExceeded is written by scheduled forecasts (accepted as a name
// before its event exists here).
const (
	TypeGrantExpiring            = "grant.expiring"
	NotificationForecastExceeded = "capacity.forecast_exceeded"
)

// WebhookEventTypes are the types an endpoint may subscribe to; an endpoint that names none
// receives all of them.
var WebhookEventTypes = []string{
	TypeAccessRequested, TypeAccessApproved, TypeAccessRequestDenied,
	TypeGrantCreated, TypeGrantExpiring, TypeGrantExpired, TypeGrantRevoked,
	TypeReportGenerated, NotificationForecastExceeded,
	TypeTunnelCreated, TypeTunnelUpdated, TypeTunnelDeleted,
	TypeAccessKeyIssued, TypeAccessKeyRevoked,
}

// Bounds of webhook input.
const (
	MaxWebhookURLBytes = 2048
	// MaxWebhookEndpoints bounds an organization's endpoints (each has a deliverer of its own).
	MaxWebhookEndpoints = 50
)

// Webhook event types.
const (
	TypeWebhookEndpointCreated = "webhook.endpoint_created"
	TypeWebhookEndpointUpdated = "webhook.endpoint_updated"
	TypeWebhookEndpointDeleted = "webhook.endpoint_deleted"
	TypeWebhookSecretRotated   = "webhook.secret_rotated"
)

// WebhookEndpointCreated starts an endpoint. Secret is sealed: the log never holds it in clear.
type WebhookEndpointCreated struct {
	EndpointID string   `json:"endpoint_id"`
	OrgID      string   `json:"org_id"`
	Name       string   `json:"name"`
	URL        string   `json:"url"`
	Types      []string `json:"types,omitempty"`
	Secret     string   `json:"secret"`
}

// WebhookEndpointUpdated replaces an endpoint's name, URL and types (whole).
type WebhookEndpointUpdated struct {
	EndpointID string   `json:"endpoint_id"`
	OrgID      string   `json:"org_id"`
	Name       string   `json:"name"`
	URL        string   `json:"url"`
	Types      []string `json:"types,omitempty"`
}

// WebhookSecretRotated replaces an endpoint's secret (sealed). Deliveries are signed with the
// previous one too for WebhookRotationOverlap, so a receiver can switch without losing any.
type WebhookSecretRotated struct {
	EndpointID string `json:"endpoint_id"`
	OrgID      string `json:"org_id"`
	Secret     string `json:"secret"`
}

// WebhookEndpointDeleted ends an endpoint: nothing more is delivered to it.
type WebhookEndpointDeleted struct {
	EndpointID string `json:"endpoint_id"`
	OrgID      string `json:"org_id"`
	Reason     string `json:"reason,omitempty"`
}

// GrantExpiring says that a grant to a user or a group ends at ExpiresAt (appended once, a lead
// time before; stream GrantNoticeStream, so a second one fails on the stream's version).
type GrantExpiring struct {
	GrantID     string    `json:"grant_id"`
	OrgID       string    `json:"org_id"`
	TunnelID    string    `json:"tunnel_id"`
	SubjectKind string    `json:"subject_kind"`
	Subject     string    `json:"subject"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// WebhookRotationOverlap is how long deliveries also carry the signature of a rotated-out secret.
const WebhookRotationOverlap = 24 * time.Hour

func (WebhookEndpointCreated) EventType() string { return TypeWebhookEndpointCreated }
func (WebhookEndpointUpdated) EventType() string { return TypeWebhookEndpointUpdated }
func (WebhookSecretRotated) EventType() string   { return TypeWebhookSecretRotated }
func (WebhookEndpointDeleted) EventType() string { return TypeWebhookEndpointDeleted }
func (GrantExpiring) EventType() string          { return TypeGrantExpiring }

// WebhookStream is an endpoint's stream.
func WebhookStream(endpointID string) string { return "webhook-" + endpointID }

// GrantNoticeStream holds a grant's grant.expiring (one event at most).
func GrantNoticeStream(grantID string) string { return "grantnotice-" + grantID }

// WebhookSpec is what an endpoint is.
type WebhookSpec struct {
	Name  string   `json:"name"`
	URL   string   `json:"url"`
	Types []string `json:"types,omitempty"`
}

// Webhook is an endpoint as its stream holds it.
type Webhook struct {
	id, orgID string
	spec      WebhookSpec
	secret    string
	deleted   bool
	version   uint64
}

// NewWebhook is the input of CreateWebhook. AllowPrivate is the operator's decision (not the
// caller's) to let endpoints name private and loopback addresses.
type NewWebhook struct {
	EndpointID, OrgID string
	Spec              WebhookSpec
	Secret            string
	AllowPrivate      bool
}

// CreateWebhook decides a new endpoint.
func CreateWebhook(in NewWebhook) (WebhookEndpointCreated, error) {
	var p problems
	checkID(&p, "endpoint_id", in.EndpointID)
	checkID(&p, "org_id", in.OrgID)
	checkWebhookSpec(&p, in.Spec, in.AllowPrivate)
	checkSealed(&p, "secret", in.Secret)
	if err := p.err(); err != nil {
		return WebhookEndpointCreated{}, err
	}
	return WebhookEndpointCreated{EndpointID: in.EndpointID, OrgID: in.OrgID, Name: in.Spec.Name, URL: in.Spec.URL, Types: in.Spec.Types, Secret: in.Secret}, nil
}

// RehydrateWebhook rebuilds an endpoint from its stream.
func RehydrateWebhook(events []Recorded) (*Webhook, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	w := &Webhook{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *WebhookEndpointCreated:
			w.id, w.orgID, w.secret = ev.EndpointID, ev.OrgID, ev.Secret
			w.spec = WebhookSpec{Name: ev.Name, URL: ev.URL, Types: ev.Types}
		case *WebhookEndpointUpdated:
			w.spec = WebhookSpec{Name: ev.Name, URL: ev.URL, Types: ev.Types}
		case *WebhookSecretRotated:
			w.secret = ev.Secret
		case *WebhookEndpointDeleted:
			w.deleted = true
		default:
			return nil, fmt.Errorf("webhook: %w: %s", ErrUnknownEvent, r.Type)
		}
		w.version = r.StreamVersion
	}
	return w, nil
}

// Update decides a new spec; nil: nothing changed.
func (w *Webhook) Update(spec WebhookSpec, allowPrivate bool) (*WebhookEndpointUpdated, error) {
	if w.deleted {
		return nil, fmt.Errorf("update webhook %s: %w", w.id, ErrNotFound)
	}
	var p problems
	checkWebhookSpec(&p, spec, allowPrivate)
	if err := p.err(); err != nil {
		return nil, err
	}
	if spec.Name == w.spec.Name && spec.URL == w.spec.URL && slices.Equal(spec.Types, w.spec.Types) {
		return nil, nil
	}
	return &WebhookEndpointUpdated{EndpointID: w.id, OrgID: w.orgID, Name: spec.Name, URL: spec.URL, Types: spec.Types}, nil
}

// RotateSecret decides a new (sealed) secret.
func (w *Webhook) RotateSecret(secret string) (WebhookSecretRotated, error) {
	if w.deleted {
		return WebhookSecretRotated{}, fmt.Errorf("rotate the secret of webhook %s: %w", w.id, ErrNotFound)
	}
	var p problems
	checkSealed(&p, "secret", secret)
	if err := p.err(); err != nil {
		return WebhookSecretRotated{}, err
	}
	return WebhookSecretRotated{EndpointID: w.id, OrgID: w.orgID, Secret: secret}, nil
}

// Delete decides ending the endpoint.
func (w *Webhook) Delete(reason string) (WebhookEndpointDeleted, error) {
	if w.deleted {
		return WebhookEndpointDeleted{}, fmt.Errorf("delete webhook %s: %w", w.id, ErrNotFound)
	}
	var p problems
	checkText(&p, "reason", reason, MaxReasonBytes)
	if err := p.err(); err != nil {
		return WebhookEndpointDeleted{}, err
	}
	return WebhookEndpointDeleted{EndpointID: w.id, OrgID: w.orgID, Reason: reason}, nil
}

func (w *Webhook) ID() string        { return w.id }
func (w *Webhook) OrgID() string     { return w.orgID }
func (w *Webhook) Spec() WebhookSpec { return w.spec }
func (w *Webhook) Secret() string    { return w.secret }
func (w *Webhook) Deleted() bool     { return w.deleted }
func (w *Webhook) Version() uint64   { return w.version }

func checkSealed(p *problems, field, v string) {
	if !strings.HasPrefix(v, SealedPrefix) || len(v) > 4096 {
		p.add(field, "must be sealed by the control plane; the log never holds a secret in clear")
	}
}

func checkWebhookSpec(p *problems, s WebhookSpec, allowPrivate bool) {
	checkName(p, "name", s.Name)
	if err := CheckWebhookURL(s.URL, allowPrivate); err != "" {
		p.add("url", "%s", err)
	}
	if len(s.Types) > len(WebhookEventTypes) {
		p.add("types", "has more than %d entries", len(WebhookEventTypes))
	}
	for i, t := range s.Types {
		if !slices.Contains(WebhookEventTypes, t) {
			p.add("types", "%q is not a notification type (one of %s)", t, strings.Join(WebhookEventTypes, ", "))
		} else if slices.Contains(s.Types[:i], t) {
			p.add("types", "%q is named twice", t)
		}
	}
}

// CheckWebhookURL says what is wrong with an endpoint URL ("" when nothing): https (http only to a
// loopback host), no credentials or fragment, and, unless the operator allowed private addresses,
// a host that is no loopback, private, link-local or otherwise internal address. A webhook makes
// the control plane send requests where its caller says (SSRF): without this, an org admin could
// point it at the cloud metadata service (169.254.169.254) or the database. A name is checked
// again by the deliverer against every address it resolves to, at each connection.
func CheckWebhookURL(raw string, allowPrivate bool) string {
	if len(raw) > MaxWebhookURLBytes {
		return fmt.Sprintf("is longer than %d bytes", MaxWebhookURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "must be an absolute URL, like https://hooks.example.com/tunnelplane"
	}
	if u.User != nil || u.Fragment != "" {
		return "must not carry credentials or a fragment (the signature authenticates deliveries)"
	}
	host := u.Hostname()
	addr, perr := netip.ParseAddr(host)
	isIP := perr == nil
	loopback := strings.EqualFold(host, "localhost") || (isIP && addr.Unmap().IsLoopback())
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && loopback:
	default:
		return "must use https (http only to a loopback host)"
	}
	if !isIP && !loopback && !validHost(strings.ToLower(host)) {
		return "must name a valid host"
	}
	if allowPrivate {
		return ""
	}
	if loopback || (isIP && InternalAddr(addr)) {
		return "names a loopback, private or link-local address: refused, since a webhook would let its creator make the control plane call inside its network (SSRF); an operator may allow it with --webhook-allow-private"
	}
	return ""
}

// WebhookHost is the host (and port) of an endpoint URL: what logs, errors and SIEM messages
// name, since a URL's path or query may be a credential of the receiver's (chat webhooks).
func WebhookHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(invalid url)"
	}
	return u.Host
}

// internalPrefixes are the ranges a webhook may not reach unless the operator allows it.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: may embed any IPv4 address
	netip.MustParsePrefix("2002::/16"),    // 6to4: idem
}

// InternalAddr tells whether a is loopback, private (RFC 1918, ULA), link-local, unspecified,
// multicast or another range not meant to be reached from the internet.
func InternalAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
		a.IsMulticast() || a.IsUnspecified() || !a.IsValid() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
