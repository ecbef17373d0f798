package domain

import (
	"fmt"
	"maps"
	"slices"
)

// TunnelState is where a tunnel is in its life.
type TunnelState string

const (
	TunnelActive TunnelState = "active"
	TunnelGone   TunnelState = "deleted"
)

// Tunnel is an exposed local service of one organization.
type Tunnel struct {
	id, orgID, owner         string
	name, upstream, protocol string
	state                    TunnelState
	accessLog                string // "" until set: AccessLogWindows
	labels                   map[string]string
	cors                     TunnelCORS // Mode "" until set: CORSOff
	version                  uint64
}

// NewTunnel is the input of CreateTunnel.
type NewTunnel struct {
	TunnelID, OrgID, Owner, Name, Upstream, Protocol string
	// Labels (CheckLabels) let access keys scoped by a label selector call the tunnel.
	Labels map[string]string
}

// CreateTunnel decides the creation of a tunnel. An empty protocol means http.
func CreateTunnel(in NewTunnel) (TunnelCreated, error) {
	if in.Protocol == "" {
		in.Protocol = ProtocolHTTP
	}
	var p problems
	checkID(&p, "tunnel_id", in.TunnelID)
	checkID(&p, "org_id", in.OrgID)
	checkUser(&p, "owner", in.Owner)
	checkName(&p, "name", in.Name)
	checkProtocol(&p, "protocol", in.Protocol)
	checkUpstream(&p, "upstream", in.Upstream, in.Protocol)
	if err := CheckLabels(in.Labels, false); err != nil {
		p.add("labels", "%s", err.Error())
	}
	if err := p.err(); err != nil {
		return TunnelCreated{}, err
	}
	var labels map[string]string
	if len(in.Labels) > 0 {
		labels = maps.Clone(in.Labels)
	}
	return TunnelCreated{TunnelID: in.TunnelID, OrgID: in.OrgID, Owner: in.Owner, Name: in.Name, Upstream: in.Upstream, Protocol: in.Protocol, Labels: labels}, nil
}

// RehydrateTunnel rebuilds a tunnel from its stream.
func RehydrateTunnel(events []Recorded) (*Tunnel, error) {
	if len(events) == 0 {
		return nil, ErrNotFound
	}
	t := &Tunnel{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		if err := t.apply(e); err != nil {
			return nil, err
		}
		t.version = r.StreamVersion
	}
	return t, nil
}

func (t *Tunnel) apply(e Event) error {
	switch ev := e.(type) {
	case *TunnelCreated:
		t.id, t.orgID, t.owner, t.name, t.upstream, t.protocol, t.state = ev.TunnelID, ev.OrgID, ev.Owner, ev.Name, ev.Upstream, ev.Protocol, TunnelActive
		t.labels = ev.Labels
	case *TunnelUpdated:
		if ev.Name != nil {
			t.name = *ev.Name
		}
		if ev.Upstream != nil {
			t.upstream = *ev.Upstream
		}
		if ev.Protocol != nil {
			t.protocol = *ev.Protocol
		}
		if ev.Labels != nil {
			t.labels = *ev.Labels
		}
		if ev.CORS != nil {
			t.cors = *ev.CORS
		}
	case *TunnelDeleted:
		t.state = TunnelGone
	case *TunnelAccessLogSet:
		t.accessLog = ev.AccessLog
	default:
		return fmt.Errorf("tunnel: %w: %s", ErrUnknownEvent, e.EventType())
	}
	return nil
}

// TunnelChanges is the input of UpdateTunnel: nil fields stay as they are.
type TunnelChanges struct {
	Name, Upstream, Protocol *string
	// Labels replace the tunnel's labels (an empty map removes them all).
	Labels *map[string]string
	// CORS replaces the tunnel's cross-origin setting (CanonicalCORS).
	CORS *TunnelCORS
}

// Update decides a change. It returns (nil, nil) when nothing would change.
func (t *Tunnel) Update(c TunnelChanges) (*TunnelUpdated, error) {
	if t.state != TunnelActive {
		return nil, fmt.Errorf("update tunnel %s: %w: it is %s", t.id, ErrInvalidState, t.state)
	}
	ev := &TunnelUpdated{TunnelID: t.id, OrgID: t.orgID}
	name, upstream, protocol := t.name, t.upstream, t.protocol
	if c.Name != nil && *c.Name != t.name {
		ev.Name, name = c.Name, *c.Name
	}
	if c.Protocol != nil && *c.Protocol != t.protocol {
		ev.Protocol, protocol = c.Protocol, *c.Protocol
	}
	if c.Upstream != nil && *c.Upstream != t.upstream {
		ev.Upstream, upstream = c.Upstream, *c.Upstream
	}
	var p problems
	if ev.Name != nil {
		checkName(&p, "name", name)
	}
	checkProtocol(&p, "protocol", protocol)
	if ev.Upstream != nil || ev.Protocol != nil {
		checkUpstream(&p, "upstream", upstream, protocol)
	}
	if c.Labels != nil {
		if err := CheckLabels(*c.Labels, false); err != nil {
			p.add("labels", "%s", err.Error())
		} else if !maps.Equal(*c.Labels, t.labels) {
			labels := maps.Clone(*c.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			ev.Labels = &labels
		}
	}
	if c.CORS != nil {
		cors, err := CanonicalCORS(*c.CORS)
		if err != nil {
			p.add("cors", "%s", err.Error())
		} else if !slices.Equal(cors.Origins, t.cors.Origins) || cors.Mode != t.CORS().Mode {
			ev.CORS = &cors
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	if ev.Name == nil && ev.Upstream == nil && ev.Protocol == nil && ev.Labels == nil && ev.CORS == nil {
		return nil, nil
	}
	return ev, nil
}

// Labels are the tunnel's labels (nil: none). The map is the tunnel's: do not change it.
func (t *Tunnel) Labels() map[string]string { return t.labels }

// CORS is the tunnel's cross-origin setting (Mode CORSOff when never set).
func (t *Tunnel) CORS() TunnelCORS {
	if t.cors.Mode == "" {
		return TunnelCORS{Mode: CORSOff}
	}
	return t.cors
}

// Delete decides the deletion.
func (t *Tunnel) Delete(reason string) (TunnelDeleted, error) {
	if t.state != TunnelActive {
		return TunnelDeleted{}, fmt.Errorf("delete tunnel %s: %w: it is already %s", t.id, ErrInvalidState, t.state)
	}
	return TunnelDeleted{TunnelID: t.id, OrgID: t.orgID, Name: t.name, Reason: reason}, nil
}

func (t *Tunnel) ID() string         { return t.id }
func (t *Tunnel) OrgID() string      { return t.orgID }
func (t *Tunnel) Owner() string      { return t.owner }
func (t *Tunnel) Name() string       { return t.name }
func (t *Tunnel) Upstream() string   { return t.upstream }
func (t *Tunnel) Protocol() string   { return t.protocol }
func (t *Tunnel) State() TunnelState { return t.state }
func (t *Tunnel) Version() uint64    { return t.version }

// TunnelName is the reservation of one tunnel name in one organization.
type TunnelName struct {
	holder  string // tunnel id holding the name, "" when free
	version uint64
}

// RehydrateTunnelName rebuilds a name reservation; an empty stream is a free name.
func RehydrateTunnelName(events []Recorded) (*TunnelName, error) {
	n := &TunnelName{}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *TunnelNameReserved:
			n.holder = ev.TunnelID
		case *TunnelNameReleased:
			n.holder = ""
		default:
			return nil, fmt.Errorf("tunnel name: %w: %s", ErrUnknownEvent, r.Type)
		}
		n.version = r.StreamVersion
	}
	return n, nil
}

// Reserve decides claiming the name for a tunnel.
func (n *TunnelName) Reserve(orgID, name, tunnelID string) (TunnelNameReserved, error) {
	if n.holder != "" && n.holder != tunnelID {
		return TunnelNameReserved{}, fmt.Errorf("%w: the name %q is used by another tunnel", ErrConflict, name)
	}
	return TunnelNameReserved{OrgID: orgID, Name: name, TunnelID: tunnelID}, nil
}

func (n *TunnelName) Holder() string  { return n.holder }
func (n *TunnelName) Version() uint64 { return n.version }
