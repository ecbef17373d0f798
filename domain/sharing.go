package domain

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"
)

// Sharing a tunnel: grants of its use to a user or a group (from the identity provider's groups
// claim) until an expiry, given directly by whoever may share the tunnel or by approving an access
// request, N of them from the role the tunnel's access policy names. One aggregate per tunnel
// (SharingStream) holds its policy, grants and requests, so an approval and the grant it completes
// are decided together.

// ErrSelfApproval: nobody approves or denies their own access request.
var ErrSelfApproval = errors.New("nobody approves or denies their own access request")

// Grant subjects.
const (
	GrantToUser  = "user"
	GrantToGroup = "group"
)

// Bounds of sharing input and state.
const (
	MaxGrantTTL = 365 * 24 * time.Hour
	// MaxAccessRequestDuration bounds what a request may ask for.
	MaxAccessRequestDuration = 90 * 24 * time.Hour
	MaxReasonBytes           = 1024
	MaxGroupBytes            = 256
	// MaxActiveGrants and MaxPendingRequests bound a tunnel's sharing state (nodes hold its
	// grants in memory).
	MaxActiveGrants    = 1000
	MaxPendingRequests = 1000
	MaxApprovals       = 10
)

// AccessPolicy is how many approvals (RequiredApprovals, N) from holders of ApproverRole (M
// people) an access request to a tunnel needs. An organization owner and a superadmin count as
// holders of every role.
type AccessPolicy struct {
	ApproverRole      Role `json:"approver_role"`
	RequiredApprovals int  `json:"required_approvals"`
}

// DefaultAccessPolicy holds for a tunnel whose policy was never set: one approval by an admin
// (or owner).
var DefaultAccessPolicy = AccessPolicy{ApproverRole: RoleAdmin, RequiredApprovals: 1}

// SharingStream is the stream of a tunnel's sharing state.
func SharingStream(tunnelID string) string { return "sharing-" + tunnelID }

// ---- events ----

// AccessPolicySet sets how many approvals from which role a tunnel's access requests need.
type AccessPolicySet struct {
	OrgID             string `json:"org_id"`
	TunnelID          string `json:"tunnel_id"`
	ApproverRole      Role   `json:"approver_role"`
	RequiredApprovals int    `json:"required_approvals"`
	SetBy             string `json:"set_by"`
}

// GrantCreated lets a user, or every user whose token carries a group, call a tunnel until
// ExpiresAt. A grant from an access request names it and the approvals that completed it
// (their event ids; the event's causation_id is the last of them).
type GrantCreated struct {
	GrantID     string    `json:"grant_id"`
	OrgID       string    `json:"org_id"`
	TunnelID    string    `json:"tunnel_id"`
	SubjectKind string    `json:"subject_kind"` // GrantToUser or GrantToGroup
	Subject     string    `json:"subject"`
	ExpiresAt   time.Time `json:"expires_at"`
	GrantedBy   string    `json:"granted_by"`
	RequestID   string    `json:"request_id,omitempty"`
	Approvals   []string  `json:"approvals,omitempty"`
}

// GrantRevoked withdraws a grant before its expiry.
type GrantRevoked struct {
	GrantID   string `json:"grant_id"`
	OrgID     string `json:"org_id"`
	TunnelID  string `json:"tunnel_id"`
	RevokedBy string `json:"revoked_by"`
	Reason    string `json:"reason,omitempty"`
}

// GrantExpired records that a grant reached its expiry (appended by the expiry process manager;
// nodes refuse the grant from ExpiresAt on without waiting for it).
type GrantExpired struct {
	GrantID   string    `json:"grant_id"`
	OrgID     string    `json:"org_id"`
	TunnelID  string    `json:"tunnel_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AccessRequested asks for the use of a tunnel for a duration, with a reason. Its event id is
// RequestID.
type AccessRequested struct {
	RequestID       string `json:"request_id"`
	OrgID           string `json:"org_id"`
	TunnelID        string `json:"tunnel_id"`
	Requester       string `json:"requester"`
	DurationSeconds int64  `json:"duration_seconds"`
	Reason          string `json:"reason"`
}

// AccessApproved is one approval of a request. Its event id is ApprovalID; its causation_id is
// the request's.
type AccessApproved struct {
	ApprovalID string `json:"approval_id"`
	RequestID  string `json:"request_id"`
	OrgID      string `json:"org_id"`
	TunnelID   string `json:"tunnel_id"`
	Approver   string `json:"approver"`
	Comment    string `json:"comment,omitempty"`
}

// AccessRequestDenied ends a request without a grant ("access.denied"; audit.access_denied is
// the authorization log's). A denial always says why.
type AccessRequestDenied struct {
	RequestID string `json:"request_id"`
	OrgID     string `json:"org_id"`
	TunnelID  string `json:"tunnel_id"`
	DeniedBy  string `json:"denied_by"`
	Reason    string `json:"reason"`
}

func (AccessPolicySet) EventType() string     { return TypeAccessPolicySet }
func (GrantCreated) EventType() string        { return TypeGrantCreated }
func (GrantRevoked) EventType() string        { return TypeGrantRevoked }
func (GrantExpired) EventType() string        { return TypeGrantExpired }
func (AccessRequested) EventType() string     { return TypeAccessRequested }
func (AccessApproved) EventType() string      { return TypeAccessApproved }
func (AccessRequestDenied) EventType() string { return TypeAccessRequestDenied }

// ---- state ----

// GrantState is a grant as the log holds it.
type GrantState struct {
	GrantCreated
	// Ended: revoked or expired (by the log); EndedBy is the event type that ended it.
	Ended   bool   `json:"ended"`
	EndedBy string `json:"ended_by,omitempty"`
}

// ActiveAt tells whether the grant lets its subject call at t: not ended, and t before its expiry
// (the expiry counts whether or not grant.expired was appended yet).
func (g GrantState) ActiveAt(t time.Time) bool { return !g.Ended && t.Before(g.ExpiresAt) }

// Covers tells whether the grant names user, or one of groups.
func (g GrantState) Covers(user string, groups []string) bool {
	switch g.SubjectKind {
	case GrantToUser:
		return user != "" && g.Subject == user
	case GrantToGroup:
		for _, gr := range groups {
			if gr == g.Subject {
				return true
			}
		}
	}
	return false
}

// Request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDenied   = "denied"
)

// RequestState is an access request as the log holds it.
type RequestState struct {
	AccessRequested
	State     string    `json:"state"`
	Approvers []string  `json:"approvers,omitempty"`
	Approvals []string  `json:"approvals,omitempty"` // approval event ids, in order
	GrantID   string    `json:"grant_id,omitempty"`
	DeniedBy  string    `json:"denied_by,omitempty"`
	Denial    string    `json:"denial,omitempty"`
	At        time.Time `json:"requested_at"`
}

// Sharing is a tunnel's sharing state.
type Sharing struct {
	orgID, tunnelID string
	policy          AccessPolicy
	grants          map[string]*GrantState
	requests        map[string]*RequestState
	version         uint64
}

// RehydrateSharing rebuilds a tunnel's sharing state; an empty stream is the default policy and
// nothing shared.
func RehydrateSharing(orgID, tunnelID string, events []Recorded) (*Sharing, error) {
	s := &Sharing{orgID: orgID, tunnelID: tunnelID, policy: DefaultAccessPolicy, grants: map[string]*GrantState{}, requests: map[string]*RequestState{}}
	for _, r := range events {
		e, err := Decode(r.Type, r.Payload)
		if err != nil {
			return nil, err
		}
		switch ev := e.(type) {
		case *AccessPolicySet:
			s.policy = AccessPolicy{ApproverRole: ev.ApproverRole, RequiredApprovals: ev.RequiredApprovals}
		case *GrantCreated:
			s.grants[ev.GrantID] = &GrantState{GrantCreated: *ev}
			if q := s.requests[ev.RequestID]; q != nil {
				q.State, q.GrantID = RequestApproved, ev.GrantID
			}
		case *GrantRevoked:
			if g := s.grants[ev.GrantID]; g != nil {
				g.Ended, g.EndedBy = true, TypeGrantRevoked
			}
		case *GrantExpired:
			if g := s.grants[ev.GrantID]; g != nil && !g.Ended {
				g.Ended, g.EndedBy = true, TypeGrantExpired
			}
		case *AccessRequested:
			s.requests[ev.RequestID] = &RequestState{AccessRequested: *ev, State: RequestPending, At: r.RecordedAt}
		case *AccessApproved:
			if q := s.requests[ev.RequestID]; q != nil {
				q.Approvers = append(q.Approvers, ev.Approver)
				q.Approvals = append(q.Approvals, ev.ApprovalID)
			}
		case *AccessRequestDenied:
			if q := s.requests[ev.RequestID]; q != nil {
				q.State, q.DeniedBy, q.Denial = RequestDenied, ev.DeniedBy, ev.Reason
			}
		default:
			return nil, fmt.Errorf("sharing: %w: %s", ErrUnknownEvent, r.Type)
		}
		s.version = r.StreamVersion
	}
	return s, nil
}

func (s *Sharing) Version() uint64      { return s.version }
func (s *Sharing) Policy() AccessPolicy { return s.policy }

// Grants lists the tunnel's grants (ended ones included), newest expiry last.
func (s *Sharing) Grants() []GrantState {
	out := make([]GrantState, 0, len(s.grants))
	for _, g := range s.grants {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].ExpiresAt.Equal(out[j].ExpiresAt) {
			return out[i].ExpiresAt.Before(out[j].ExpiresAt)
		}
		return out[i].GrantID < out[j].GrantID
	})
	return out
}

// Grant returns one grant.
func (s *Sharing) Grant(id string) (GrantState, bool) {
	g, ok := s.grants[id]
	if !ok {
		return GrantState{}, false
	}
	return *g, true
}

// Requests lists the tunnel's access requests, oldest first.
func (s *Sharing) Requests() []RequestState {
	out := make([]RequestState, 0, len(s.requests))
	for _, q := range s.requests {
		cp := *q
		cp.Approvers, cp.Approvals = append([]string(nil), q.Approvers...), append([]string(nil), q.Approvals...)
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].At.Equal(out[j].At) {
			return out[i].At.Before(out[j].At)
		}
		return out[i].RequestID < out[j].RequestID
	})
	return out
}

// Request returns one access request.
func (s *Sharing) Request(id string) (RequestState, bool) {
	q, ok := s.requests[id]
	if !ok {
		return RequestState{}, false
	}
	return *q, true
}

// Allows tells whether an active grant at now lets user (with groups) call the tunnel.
func (s *Sharing) Allows(user string, groups []string, now time.Time) bool {
	for _, g := range s.grants {
		if g.ActiveAt(now) && g.Covers(user, groups) {
			return true
		}
	}
	return false
}

func (s *Sharing) activeGrants(now time.Time) int {
	n := 0
	for _, g := range s.grants {
		if g.ActiveAt(now) {
			n++
		}
	}
	return n
}

func checkSharingText(p *problems, field, s string, required bool) {
	switch {
	case required && strings.TrimSpace(s) == "":
		p.add(field, "is required")
	case len(s) > MaxReasonBytes:
		p.add(field, "is longer than %d bytes", MaxReasonBytes)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.add(field, "contains control characters")
	}
}

// CheckGroup validates a group name as a grant's subject (as an identity provider's groups claim
// names it).
func CheckGroup(s string) error {
	if s == "" || len(s) > MaxGroupBytes || strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("a group is 1-%d bytes without control characters", MaxGroupBytes)
	}
	return nil
}

func activeTunnel(t *Tunnel, s *Sharing, what string) error {
	if t.ID() != s.tunnelID || t.OrgID() != s.orgID {
		return fmt.Errorf("%s: %w: tunnel %s", what, ErrNotFound, t.ID())
	}
	if t.State() != TunnelActive {
		return fmt.Errorf("%s: %w: tunnel %s is %s", what, ErrInvalidState, t.ID(), t.State())
	}
	return nil
}

// SetPolicy decides a new access policy; nil when it already is the policy.
func (s *Sharing) SetPolicy(t *Tunnel, p AccessPolicy, by string) (*AccessPolicySet, error) {
	var pr problems
	if p.ApproverRole == RoleSuperadmin || !ValidRole(s.orgID, p.ApproverRole) {
		pr.add("approver_role", "must be one of owner, admin, operator, editor, viewer, auditor")
	}
	if p.RequiredApprovals < 1 || p.RequiredApprovals > MaxApprovals {
		pr.add("required_approvals", "must be between 1 and %d", MaxApprovals)
	}
	checkUser(&pr, "set_by", by)
	if err := pr.err(); err != nil {
		return nil, err
	}
	if err := activeTunnel(t, s, "set access policy"); err != nil {
		return nil, err
	}
	if p == s.policy {
		return nil, nil
	}
	return &AccessPolicySet{OrgID: s.orgID, TunnelID: s.tunnelID, ApproverRole: p.ApproverRole, RequiredApprovals: p.RequiredApprovals, SetBy: by}, nil
}

// NewGrant is the input of CreateGrant.
type NewGrant struct {
	GrantID, SubjectKind, Subject, GrantedBy string
	Now                                      time.Time
	TTL                                      time.Duration
}

// CreateGrant decides a direct grant on an active tunnel.
func (s *Sharing) CreateGrant(t *Tunnel, in NewGrant) (GrantCreated, error) {
	var p problems
	checkID(&p, "grant_id", in.GrantID)
	checkUser(&p, "granted_by", in.GrantedBy)
	switch in.SubjectKind {
	case GrantToUser:
		checkUser(&p, "user", in.Subject)
	case GrantToGroup:
		if err := CheckGroup(in.Subject); err != nil {
			p.add("group", "%s", err.Error())
		}
	default:
		p.add("subject_kind", "must be user or group")
	}
	if in.TTL < time.Second || in.TTL > MaxGrantTTL {
		p.add("ttl", "must be between 1s and %s", MaxGrantTTL)
	}
	if err := p.err(); err != nil {
		return GrantCreated{}, err
	}
	if err := activeTunnel(t, s, "grant"); err != nil {
		return GrantCreated{}, err
	}
	if _, taken := s.grants[in.GrantID]; taken {
		return GrantCreated{}, fmt.Errorf("grant %s: %w: exists", in.GrantID, ErrConflict)
	}
	if s.activeGrants(in.Now) >= MaxActiveGrants {
		return GrantCreated{}, fmt.Errorf("grant: %w: tunnel %s has %d active grants", ErrInvalidState, s.tunnelID, MaxActiveGrants)
	}
	return GrantCreated{GrantID: in.GrantID, OrgID: s.orgID, TunnelID: s.tunnelID, SubjectKind: in.SubjectKind, Subject: in.Subject,
		ExpiresAt: in.Now.Add(in.TTL).UTC().Truncate(time.Second), GrantedBy: in.GrantedBy}, nil
}

// RevokeGrant decides withdrawing a grant that has not ended.
func (s *Sharing) RevokeGrant(id, by, reason string) (GrantRevoked, error) {
	var p problems
	checkUser(&p, "revoked_by", by)
	checkSharingText(&p, "reason", reason, false)
	if err := p.err(); err != nil {
		return GrantRevoked{}, err
	}
	g := s.grants[id]
	if g == nil {
		return GrantRevoked{}, fmt.Errorf("grant %s: %w", id, ErrNotFound)
	}
	if g.Ended {
		return GrantRevoked{}, fmt.Errorf("revoke grant %s: %w: it already ended (%s)", id, ErrInvalidState, g.EndedBy)
	}
	return GrantRevoked{GrantID: id, OrgID: s.orgID, TunnelID: s.tunnelID, RevokedBy: by, Reason: reason}, nil
}

// ExpireGrant decides recording a grant's expiry: nil when it already ended (revoked, or its
// expiry recorded), an ErrInvalidState before its deadline.
func (s *Sharing) ExpireGrant(id string, now time.Time) (*GrantExpired, error) {
	g := s.grants[id]
	if g == nil {
		return nil, fmt.Errorf("grant %s: %w", id, ErrNotFound)
	}
	if g.Ended {
		return nil, nil
	}
	if now.Before(g.ExpiresAt) {
		return nil, fmt.Errorf("expire grant %s: %w: it expires at %s", id, ErrInvalidState, g.ExpiresAt.Format(time.RFC3339))
	}
	return &GrantExpired{GrantID: id, OrgID: s.orgID, TunnelID: s.tunnelID, ExpiresAt: g.ExpiresAt}, nil
}

// NewAccessRequest is the input of RequestAccess.
type NewAccessRequest struct {
	RequestID, Requester, Reason string
	Duration                     time.Duration
	Now                          time.Time
}

// RequestAccess decides a request for the use of an active tunnel.
func (s *Sharing) RequestAccess(t *Tunnel, in NewAccessRequest) (AccessRequested, error) {
	var p problems
	checkID(&p, "request_id", in.RequestID)
	checkUser(&p, "requester", in.Requester)
	checkSharingText(&p, "reason", in.Reason, true)
	if in.Duration < time.Minute || in.Duration > MaxAccessRequestDuration || in.Duration%time.Second != 0 {
		p.add("duration", "must be whole seconds between 1m and %s", MaxAccessRequestDuration)
	}
	if err := p.err(); err != nil {
		return AccessRequested{}, err
	}
	if err := activeTunnel(t, s, "request access"); err != nil {
		return AccessRequested{}, err
	}
	if _, taken := s.requests[in.RequestID]; taken {
		return AccessRequested{}, fmt.Errorf("access request %s: %w: exists", in.RequestID, ErrConflict)
	}
	pending := 0
	for _, q := range s.requests {
		if q.State == RequestPending {
			pending++
			if q.Requester == in.Requester {
				return AccessRequested{}, fmt.Errorf("request access: %w: %s already has request %s pending", ErrConflict, in.Requester, q.RequestID)
			}
		}
	}
	if pending >= MaxPendingRequests {
		return AccessRequested{}, fmt.Errorf("request access: %w: tunnel %s has %d pending requests", ErrInvalidState, s.tunnelID, pending)
	}
	return AccessRequested{RequestID: in.RequestID, OrgID: s.orgID, TunnelID: s.tunnelID, Requester: in.Requester,
		DurationSeconds: int64(in.Duration / time.Second), Reason: in.Reason}, nil
}

// Approval is the input of Approve.
type Approval struct {
	RequestID, ApprovalID, Approver, Comment string
	// GrantID names the grant a completing approval creates.
	GrantID string
	Now     time.Time
}

// Approve decides one approval of a pending request by an approver the policy admits (the
// caller checks the approver's role). The approval that reaches the policy's count also creates
// the grant (second event): the requester may call the tunnel for the requested duration from
// now.
func (s *Sharing) Approve(t *Tunnel, in Approval) (AccessApproved, *GrantCreated, error) {
	var p problems
	checkID(&p, "approval_id", in.ApprovalID)
	checkID(&p, "grant_id", in.GrantID)
	checkUser(&p, "approver", in.Approver)
	checkSharingText(&p, "comment", in.Comment, false)
	if err := p.err(); err != nil {
		return AccessApproved{}, nil, err
	}
	q, err := s.pending(in.RequestID, in.Approver)
	if err != nil {
		return AccessApproved{}, nil, err
	}
	if err := activeTunnel(t, s, "approve"); err != nil {
		return AccessApproved{}, nil, err
	}
	for _, a := range q.Approvers {
		if a == in.Approver {
			return AccessApproved{}, nil, fmt.Errorf("approve %s: %w: %s approved it already", q.RequestID, ErrConflict, in.Approver)
		}
	}
	ap := AccessApproved{ApprovalID: in.ApprovalID, RequestID: q.RequestID, OrgID: s.orgID, TunnelID: s.tunnelID, Approver: in.Approver, Comment: in.Comment}
	if len(q.Approvers)+1 < s.policy.RequiredApprovals {
		return ap, nil, nil
	}
	if _, taken := s.grants[in.GrantID]; taken {
		return AccessApproved{}, nil, fmt.Errorf("grant %s: %w: exists", in.GrantID, ErrConflict)
	}
	if s.activeGrants(in.Now) >= MaxActiveGrants {
		return AccessApproved{}, nil, fmt.Errorf("approve: %w: tunnel %s has %d active grants", ErrInvalidState, s.tunnelID, MaxActiveGrants)
	}
	g := &GrantCreated{GrantID: in.GrantID, OrgID: s.orgID, TunnelID: s.tunnelID, SubjectKind: GrantToUser, Subject: q.Requester,
		ExpiresAt: in.Now.Add(time.Duration(q.DurationSeconds) * time.Second).UTC().Truncate(time.Second), GrantedBy: in.Approver,
		RequestID: q.RequestID, Approvals: append(append([]string(nil), q.Approvals...), in.ApprovalID)}
	return ap, g, nil
}

// Deny decides ending a pending request without a grant; the reason is required.
func (s *Sharing) Deny(requestID, by, reason string) (AccessRequestDenied, error) {
	var p problems
	checkUser(&p, "denied_by", by)
	checkSharingText(&p, "reason", reason, true)
	if err := p.err(); err != nil {
		return AccessRequestDenied{}, err
	}
	q, err := s.pending(requestID, by)
	if err != nil {
		return AccessRequestDenied{}, err
	}
	return AccessRequestDenied{RequestID: q.RequestID, OrgID: s.orgID, TunnelID: s.tunnelID, DeniedBy: by, Reason: reason}, nil
}

// pending finds a pending request that decider did not make.
func (s *Sharing) pending(id, decider string) (*RequestState, error) {
	q := s.requests[id]
	if q == nil {
		return nil, fmt.Errorf("access request %s: %w", id, ErrNotFound)
	}
	if q.Requester == decider {
		return nil, fmt.Errorf("access request %s: %w", id, ErrSelfApproval)
	}
	if q.State != RequestPending {
		return nil, fmt.Errorf("access request %s: %w: it is %s", id, ErrInvalidState, q.State)
	}
	return q, nil
}

// PolicyAdmits tells whether a user holding roles in the tunnel's organization (superadmin:
// platform-wide) may approve or deny under policy: a holder of its role, an organization owner,
// or a superadmin.
func PolicyAdmits(p AccessPolicy, roles map[Role]bool, superadmin bool) bool {
	return superadmin || roles[RoleOwner] || roles[p.ApproverRole]
}
