package reach

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Errors of Replay and Live.
var (
	// ErrInvalid: the time asked is in the future.
	ErrInvalid = errors.New("invalid point-in-time request")
	// ErrTooMany: more subjects could reach the tunnel than an answer holds (MaxSubjects).
	ErrTooMany = errors.New("too many subjects")
)

// MaxSubjects bounds an answer (and what a fold holds of an organization's role assignments).
const MaxSubjects = 10000

// Sources of an answer.
const (
	SourceReplay = "replay"
	SourceLive   = "live"
)

// Tunnel states at the time asked.
const (
	TunnelActive  = "active"
	TunnelDeleted = "deleted"
	TunnelAbsent  = "absent" // not created yet
)

// Subject kinds.
const (
	SubjectUser      = "user"
	SubjectGroup     = "group"
	SubjectAccessKey = "access_key"
)

// Reason kinds.
const (
	ReasonSuperadmin  = "superadmin"   // a platform superadmin may use every tunnel
	ReasonOrgRole     = "org_role"     // an owner or admin of the tunnel's organization
	ReasonTunnelOwner = "tunnel_owner" // the tunnel's owner, while holding a role in its organization
	ReasonGrant       = "grant"        // a grant to the user or the group, not ended nor expired
	ReasonAccessKey   = "access_key"   // an access key of the tunnel, not revoked nor expired
)

// Ref names the event that a step of a chain rests on.
type Ref struct {
	Type       string    `json:"type"`
	Position   uint64    `json:"position"`
	RecordedAt time.Time `json:"recorded_at"`
	// EventID and CausationID are given for sharing events (grants, requests, approvals): the
	// causal links grant → approval → request.
	EventID     string `json:"event_id,omitempty"`
	CausationID string `json:"causation_id,omitempty"`
}

// RoleRef is a role held, and the assignment that gave it.
type RoleRef struct {
	Org        string `json:"org_id"` // domain.PlatformOrg for superadmin
	Role       string `json:"role"`
	Assignment Ref    `json:"assignment"`
}

// Approval is one approval of the request a grant answers.
type Approval struct {
	ApprovalID string `json:"approval_id"`
	Approver   string `json:"approver"`
	Event      Ref    `json:"event"`
}

// Request is the access request a grant answers.
type Request struct {
	RequestID       string `json:"request_id"`
	Requester       string `json:"requester"`
	Reason          string `json:"reason"`
	DurationSeconds int64  `json:"duration_seconds"`
	Event           Ref    `json:"event"`
}

// Grant is a grant and the chain behind it.
type Grant struct {
	GrantID   string     `json:"grant_id"`
	ExpiresAt time.Time  `json:"expires_at"`
	GrantedBy string     `json:"granted_by"`
	Event     Ref        `json:"event"`
	Request   *Request   `json:"request,omitempty"`
	Approvals []Approval `json:"approvals,omitempty"`
}

// Key is an access key of the tunnel.
type Key struct {
	IssuedBy  string    `json:"issued_by"`
	ExpiresAt time.Time `json:"expires_at"`
	CIDRs     []string  `json:"cidrs,omitempty"`
	Event     Ref       `json:"event"`
	// Selector, for a key scoped by labels: the labels it calls tunnels by, which the tunnel
	// carried then since Labelled (the event that gave it its labels).
	Selector map[string]string `json:"selector,omitempty"`
	Labelled *Ref              `json:"labelled,omitempty"`
}

// Reason is one thing that lets a subject reach the tunnel.
type Reason struct {
	Kind string `json:"kind"`
	// Roles: the assignment (superadmin, org_role) or the roles the tunnel's owner holds in the
	// organization (tunnel_owner: any one is enough).
	Roles []RoleRef `json:"roles,omitempty"`
	// Tunnel is tunnel.created (tunnel_owner: it names the owner).
	Tunnel *Ref   `json:"tunnel,omitempty"`
	Grant  *Grant `json:"grant,omitempty"`
	Key    *Key   `json:"key,omitempty"`
}

// Subject is who could reach the tunnel, and every reason why.
type Subject struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	// Note says how a group's members are known: not enumerated (see Answer).
	Note    string   `json:"note,omitempty"`
	Reasons []Reason `json:"reasons"`
}

// TunnelInfo is the tunnel as it stood at the time asked.
type TunnelInfo struct {
	ID      string `json:"id"`
	OrgID   string `json:"org_id"`
	Name    string `json:"name,omitempty"`
	Owner   string `json:"owner,omitempty"`
	State   string `json:"state"`
	Created *Ref   `json:"created,omitempty"`
}

// Deletion is a user's deletion from the tunnel's organization (OrgID) or from every organization
// (domain.PlatformOrg) up to the time asked: the roles and grants it ended are gone from the
// answer, and nodes refuse that user's tokens issued before it.
type Deletion struct {
	UserID string `json:"user_id"`
	OrgID  string `json:"org_id"`
	Reason string `json:"reason"`
	Event  Ref    `json:"event"`
}

// Answer is who could reach a tunnel at a time.
type Answer struct {
	At     time.Time  `json:"at"`
	Source string     `json:"source"`
	Tunnel TunnelInfo `json:"tunnel"`
	// Position is the last log position the answer reflects (replay: the one recorded at At;
	// live: the read models', at least).
	Position uint64    `json:"position"`
	Subjects []Subject `json:"subjects"`
	// Deletions are the users deleted from the tunnel's organization or everywhere, oldest first.
	Deletions []Deletion `json:"deletions"`
}

// Brief lists the subjects as "kind:id=reason+reason", in the answer's order (for logs, tests
// and a quick look).
func (a Answer) Brief() []string {
	out := make([]string, 0, len(a.Subjects))
	for _, s := range a.Subjects {
		kinds := make([]string, len(s.Reasons))
		for i, r := range s.Reasons {
			kinds[i] = r.Kind
		}
		out = append(out, s.Kind+":"+s.ID+"="+strings.Join(kinds, "+"))
	}
	return out
}

// GroupNote is what an answer says of a group: membership comes from the identity provider's
// groups claim in the caller's token, which the log does not hold, so members are not listed.
const GroupNote = "members of this group: every caller whose token's groups claim names it (the identity provider decides membership; not enumerated)"

// grantFact is a grant as a source knows it.
type grantFact struct {
	state domain.GrantState
	chain Grant
}

// keyFact is an access key as a source knows it.
type keyFact struct {
	id       string
	revoked  bool
	key      Key
	selector map[string]string // a key scoped by labels
}

// facts is what either source found; answer folds it by one rule.
type facts struct {
	tunnel TunnelInfo
	roles  map[string]map[domain.Role]Ref // user → role in the tunnel's organization → assignment
	supers map[string]Ref                 // superadmin → assignment
	grants []grantFact
	keys   []keyFact
	// labels are the tunnel's labels, given by the event labelled (nil: never labelled).
	labels    map[string]string
	labelled  *Ref
	deletions []Deletion
}

// label records the tunnel's labels as an event r set them.
func (f *facts) label(labels map[string]string, r eventstore.Record) {
	ref := refOf(r, false)
	f.labels, f.labelled = labels, &ref
}

func newFacts() *facts {
	return &facts{roles: map[string]map[domain.Role]Ref{}, supers: map[string]Ref{}}
}

// answer decides who could reach the tunnel at at: domain.MayUseTunnel over roles and ownership,
// grants active at at (an expiry passed counts whether or not grant.expired was recorded), keys
// neither revoked nor expired at at. A tunnel not active at at is nobody's.
func (f *facts) answer(at time.Time, source string, position uint64) (Answer, error) {
	a := Answer{At: at.UTC(), Source: source, Tunnel: f.tunnel, Position: position, Subjects: []Subject{}, Deletions: []Deletion{}}
	a.Deletions = append(a.Deletions, f.deletions...)
	sort.Slice(a.Deletions, func(i, j int) bool { return a.Deletions[i].Event.Position < a.Deletions[j].Event.Position })
	if f.tunnel.State != TunnelActive {
		return a, nil
	}
	users := map[string]*Subject{}
	user := func(id string) *Subject {
		s := users[id]
		if s == nil {
			s = &Subject{Kind: SubjectUser, ID: id}
			users[id] = s
		}
		return s
	}
	candidates := map[string]bool{}
	for u := range f.roles {
		candidates[u] = true
	}
	for u := range f.supers {
		candidates[u] = true
	}
	for u := range candidates {
		held := map[domain.Role]bool{}
		for r := range f.roles[u] {
			held[r] = true
		}
		super, isSuper := f.supers[u]
		if !domain.MayUseTunnel(u, f.tunnel.Owner, held, isSuper) {
			continue
		}
		s := user(u)
		if isSuper {
			s.Reasons = append(s.Reasons, Reason{Kind: ReasonSuperadmin, Roles: []RoleRef{{Org: domain.PlatformOrg, Role: string(domain.RoleSuperadmin), Assignment: super}}})
		}
		for _, r := range []domain.Role{domain.RoleOwner, domain.RoleAdmin} {
			if ref, ok := f.roles[u][r]; ok {
				s.Reasons = append(s.Reasons, Reason{Kind: ReasonOrgRole, Roles: []RoleRef{{Org: f.tunnel.OrgID, Role: string(r), Assignment: ref}}})
			}
		}
		if u == f.tunnel.Owner && len(f.roles[u]) > 0 {
			s.Reasons = append(s.Reasons, Reason{Kind: ReasonTunnelOwner, Tunnel: f.tunnel.Created, Roles: roleRefs(f.tunnel.OrgID, f.roles[u])})
		}
	}
	groups := map[string]*Subject{}
	for _, g := range f.grants {
		if !g.state.ActiveAt(at) {
			continue
		}
		chain := g.chain
		r := Reason{Kind: ReasonGrant, Grant: &chain}
		switch g.state.SubjectKind {
		case domain.GrantToUser:
			s := user(g.state.Subject)
			s.Reasons = append(s.Reasons, r)
		case domain.GrantToGroup:
			s := groups[g.state.Subject]
			if s == nil {
				s = &Subject{Kind: SubjectGroup, ID: g.state.Subject, Note: GroupNote}
				groups[g.state.Subject] = s
			}
			s.Reasons = append(s.Reasons, r)
		}
	}
	for _, s := range users {
		a.Subjects = append(a.Subjects, *s)
	}
	for _, s := range groups {
		a.Subjects = append(a.Subjects, *s)
	}
	for _, k := range f.keys {
		if k.revoked || !at.Before(k.key.ExpiresAt) {
			continue
		}
		key := k.key
		if k.selector != nil {
			if !domain.LabelsMatch(k.selector, f.labels) {
				continue
			}
			key.Selector, key.Labelled = k.selector, f.labelled
		}
		a.Subjects = append(a.Subjects, Subject{Kind: SubjectAccessKey, ID: k.id, Reasons: []Reason{{Kind: ReasonAccessKey, Key: &key}}})
	}
	if len(a.Subjects) > MaxSubjects {
		return Answer{}, ErrTooMany
	}
	sort.Slice(a.Subjects, func(i, j int) bool {
		if a.Subjects[i].Kind != a.Subjects[j].Kind {
			return a.Subjects[i].Kind < a.Subjects[j].Kind
		}
		return a.Subjects[i].ID < a.Subjects[j].ID
	})
	for i := range a.Subjects {
		sortReasons(a.Subjects[i].Reasons)
	}
	return a, nil
}

func roleRefs(org string, held map[domain.Role]Ref) []RoleRef {
	out := make([]RoleRef, 0, len(held))
	for r, ref := range held {
		out = append(out, RoleRef{Org: org, Role: string(r), Assignment: ref})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	return out
}

// sortReasons orders reasons by kind, then by what they rest on.
func sortReasons(rs []Reason) {
	key := func(r Reason) string {
		switch {
		case r.Grant != nil:
			return r.Grant.GrantID
		case len(r.Roles) > 0:
			return r.Roles[0].Role
		}
		return ""
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Kind != rs[j].Kind {
			return rs[i].Kind < rs[j].Kind
		}
		return key(rs[i]) < key(rs[j])
	})
}

// deleted records a user.deleted of the tunnel's organization or of every organization.
func (f *facts) deleted(e *domain.UserDeleted, r eventstore.Record) error {
	if e.OrgID != f.tunnel.OrgID && e.OrgID != domain.PlatformOrg {
		return nil
	}
	if len(f.deletions) >= MaxSubjects {
		return fmt.Errorf("%w: more than %d user deletions", ErrTooMany, MaxSubjects)
	}
	f.deletions = append(f.deletions, Deletion{UserID: e.UserID, OrgID: e.OrgID, Reason: e.Reason, Event: refOf(r, false)})
	return nil
}

// chainOf builds a grant's chain from its events, looked up by event id (an approval's and a
// request's event ids are their ids).
func chainOf(g *domain.GrantCreated, grant Ref, events map[string]sharingEvent) Grant {
	c := Grant{GrantID: g.GrantID, ExpiresAt: g.ExpiresAt.UTC(), GrantedBy: g.GrantedBy, Event: grant}
	if g.RequestID != "" {
		if e, ok := events[g.RequestID]; ok {
			if q, ok := e.event.(*domain.AccessRequested); ok {
				c.Request = &Request{RequestID: q.RequestID, Requester: q.Requester, Reason: q.Reason, DurationSeconds: q.DurationSeconds, Event: e.ref}
			}
		}
	}
	for _, id := range g.Approvals {
		if e, ok := events[id]; ok {
			if ap, ok := e.event.(*domain.AccessApproved); ok {
				c.Approvals = append(c.Approvals, Approval{ApprovalID: ap.ApprovalID, Approver: ap.Approver, Event: e.ref})
			}
		}
	}
	return c
}

// sharingEvent is a decoded request or approval and where the log holds it.
type sharingEvent struct {
	event domain.Event
	ref   Ref
}
