package view

import (
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
)

// AccessUntil implements node.AccessDeadliner: when the access that lets p call r now ends by
// the clock alone. For an access key, its expiry; for a user whom a role (or the tunnel's
// ownership) lets in, never (a role ends only by an event); for a user let in by grants, the
// latest expiry among the grants that cover the user; for a user, the user token's own expiry
// (p.Expires) when that comes first. The node decides its live calls again at that time, so a
// grant's expiry cuts a stream before grant.expired reaches the view, and a token's expiry cuts
// the streams it opened. Zero when nothing allows the call now, or nothing ends it by the clock.
func (v *View) AccessUntil(p node.Principal, r node.Route) time.Time {
	until := v.accessUntil(p, r)
	if until.IsZero() && (p.AccessKeyID != "" || !v.allows(p, r)) {
		return time.Time{}
	}
	// A user token's own expiry ends the access too, whichever comes first.
	if !p.Expires.IsZero() && (until.IsZero() || p.Expires.Before(until)) {
		return p.Expires
	}
	return until
}

// allows reports whether a role or the tunnel's ownership lets p call r (access with no clock).
func (v *View) allows(p node.Principal, r node.Route) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	t := v.tunnels[r.TunnelID]
	if t == nil || t.deleted {
		return false
	}
	return domain.MayUseTunnel(p.UserID, t.owner, v.roles[r.OrgID+"|"+p.UserID], v.roles[domain.PlatformOrg+"|"+p.UserID][domain.RoleSuperadmin])
}

// accessUntil is AccessUntil without the token's own expiry.
func (v *View) accessUntil(p node.Principal, r node.Route) time.Time {
	groups := v.groupsOf(p.UserID)
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p.AccessKeyID != "" {
		if k := v.accessKeys[p.AccessKeyID]; k != nil {
			return k.expiresAt
		}
		return time.Time{}
	}
	t := v.tunnels[r.TunnelID]
	if t == nil || t.deleted {
		return time.Time{}
	}
	roles := v.roles[r.OrgID+"|"+p.UserID]
	superadmin := v.roles[domain.PlatformOrg+"|"+p.UserID][domain.RoleSuperadmin]
	if domain.MayUseTunnel(p.UserID, t.owner, roles, superadmin) {
		return time.Time{}
	}
	now := v.now()
	var until time.Time
	for _, g := range v.grants[t.id] {
		if g.orgID != t.orgID || !now.Before(g.expiresAt) || !g.expiresAt.After(until) {
			continue
		}
		st := domain.GrantState{GrantCreated: domain.GrantCreated{SubjectKind: g.kind, Subject: g.subject}}
		if st.Covers(p.UserID, groups) {
			until = g.expiresAt
		}
	}
	return until
}
