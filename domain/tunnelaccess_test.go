package domain

import "testing"

func TestMayUseTunnel(t *testing.T) {
	t.Parallel()
	roles := func(rs ...Role) map[Role]bool {
		m := map[Role]bool{}
		for _, r := range rs {
			m[r] = true
		}
		return m
	}
	cases := []struct {
		name        string
		user, owner string
		roles       map[Role]bool
		superadmin  bool
		want        bool
	}{
		// The tunnel's owner, while a member of its organization in any role.
		{"owner as operator", "alice", "alice", roles(RoleOperator), false, true},
		{"owner as viewer", "alice", "alice", roles(RoleViewer), false, true},
		{"owner as auditor", "alice", "alice", roles(RoleAuditor), false, true},
		{"owner with several roles", "alice", "alice", roles(RoleViewer, RoleOperator), false, true},
		{"owner whose role was withdrawn", "alice", "alice", roles(), false, false},
		{"owner with no role map", "alice", "alice", nil, false, false},
		{"owner whose role maps to false", "alice", "alice", map[Role]bool{RoleOperator: false}, false, false},
		// Organization owners and admins use every tunnel of it.
		{"org owner", "olga", "alice", roles(RoleOwner), false, true},
		{"org admin", "adam", "alice", roles(RoleAdmin), false, true},
		{"org admin and viewer", "adam", "alice", roles(RoleViewer, RoleAdmin), false, true},
		// Every other role uses only its own tunnels (the hijack of the security finding).
		{"operator not the owner", "mallory", "alice", roles(RoleOperator), false, false},
		{"viewer not the owner", "victor", "alice", roles(RoleViewer), false, false},
		{"auditor not the owner", "audrey", "alice", roles(RoleAuditor), false, false},
		{"operator viewer auditor not the owner", "mallory", "alice", roles(RoleOperator, RoleViewer, RoleAuditor), false, false},
		{"admin role mapped to false", "adam", "alice", map[Role]bool{RoleAdmin: false, RoleOperator: true}, false, false},
		{"no role at all", "nobody", "alice", nil, false, false},
		// Superadmins use every tunnel, member of the organization or not.
		{"superadmin without org role", "root", "alice", nil, true, true},
		{"superadmin who is a viewer", "root", "alice", roles(RoleViewer), true, true},
		// Names that are no one.
		{"empty user against empty owner", "", "", roles(RoleOperator), false, false},
		{"empty user claiming superadmin", "", "alice", nil, true, false},
		{"empty user claiming org owner", "", "alice", roles(RoleOwner), false, false},
		{"owner unknown, operator", "mallory", "", roles(RoleOperator), false, false},
		{"owner unknown, org admin", "adam", "", roles(RoleAdmin), false, true},
		// Ids are compared exactly, as the token subjects they are.
		{"owner differs in case", "Alice", "alice", roles(RoleOperator), false, false},
		{"owner with a trailing space", "alice ", "alice", roles(RoleOperator), false, false},
	}
	for _, c := range cases {
		if got := MayUseTunnel(c.user, c.owner, c.roles, c.superadmin); got != c.want {
			t.Errorf("%s: MayUseTunnel(%q, %q, %v, %v) = %v, want %v", c.name, c.user, c.owner, c.roles, c.superadmin, got, c.want)
		}
	}
}
