package domain

// MayUseTunnel reports whether user may use a tunnel: call it through a node's ingress, or hold
// (be issued, or revoke) its agent credential. The two are one right on purpose: whoever may
// hold the agent credential decides where the tunnel's callers' requests go, so issuing one must
// never need less than calling the tunnel does.
//
// The tunnel's owner may use it while holding any role in the tunnel's organization (a withdrawn
// member loses their own tunnels with the rest); an owner or admin of the organization may use
// every tunnel of it; a platform superadmin may use every tunnel.
//
// rolesInOrg are user's roles in the tunnel's organization (a role mapped to false is not held);
// superadmin tells whether user holds the superadmin role platform-wide. An empty user or
// tunnelOwner never matches: an unknown caller or a tunnel whose owner is unknown is nobody's.
func MayUseTunnel(user, tunnelOwner string, rolesInOrg map[Role]bool, superadmin bool) bool {
	if user == "" {
		return false
	}
	if superadmin || rolesInOrg[RoleOwner] || rolesInOrg[RoleAdmin] {
		return true
	}
	if user != tunnelOwner {
		return false
	}
	for _, held := range rolesInOrg {
		if held {
			return true
		}
	}
	return false
}
