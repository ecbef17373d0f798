package domain

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

const (
	orgID    = "0193f2a4-7c1e-7d3a-9b2e-000000000001"
	tunnelID = "0193f2a4-7c1e-7d3a-9b2e-000000000002"
	nodeID   = "0193f2a4-7c1e-7d3a-9b2e-000000000003"
	tokenID  = "0193f2a4-7c1e-7d3a-9b2e-000000000004"
)

func rec(e Event, v uint64) Recorded {
	b, _ := json.Marshal(e)
	return Recorded{Type: e.EventType(), Payload: b, StreamVersion: v}
}

func fields(err error) map[string]bool {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		return nil
	}
	out := map[string]bool{}
	for _, f := range ve.Fields {
		out[f.Field] = true
	}
	return out
}

func TestCreateTunnelValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   NewTunnel
		bad  []string
	}{
		{"ok http", NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:11434", "", nil}, nil},
		{"ok https host", NewTunnel{tunnelID, orgID, "alice", "llm-2", "https://svc.internal:8443", "http", nil}, nil},
		{"ok tcp", NewTunnel{tunnelID, orgID, "alice", "db", "tcp://127.0.0.1:5432", "tcp", nil}, nil},
		{"upper-case name", NewTunnel{tunnelID, orgID, "alice", "LLM", "http://127.0.0.1:1", "", nil}, []string{"name"}},
		{"name with a dot", NewTunnel{tunnelID, orgID, "alice", "a.b", "http://127.0.0.1:1", "", nil}, []string{"name"}},
		{"trailing hyphen", NewTunnel{tunnelID, orgID, "alice", "llm-", "http://127.0.0.1:1", "", nil}, []string{"name"}},
		{"no upstream", NewTunnel{tunnelID, orgID, "alice", "llm", "", "", nil}, []string{"upstream"}},
		{"tcp scheme on http tunnel", NewTunnel{tunnelID, orgID, "alice", "llm", "tcp://127.0.0.1:1", "", nil}, []string{"upstream"}},
		{"tcp without port", NewTunnel{tunnelID, orgID, "alice", "db", "tcp://127.0.0.1", "tcp", nil}, []string{"upstream"}},
		{"credentials in url", NewTunnel{tunnelID, orgID, "alice", "llm", "http://u:p@127.0.0.1:1", "", nil}, []string{"upstream"}},
		{"bad port", NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:99999", "", nil}, []string{"upstream"}},
		{"unknown protocol", NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "udp", nil}, []string{"protocol"}},
		{"everything wrong at once", NewTunnel{"x", "y", "", "", "", "udp", nil}, []string{"tunnel_id", "org_id", "owner", "name", "protocol"}},
	}
	for _, c := range cases {
		_, err := CreateTunnel(c.in)
		got := fields(err)
		if len(c.bad) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrValidation) {
			t.Errorf("%s: err = %v, want a validation error", c.name, err)
			continue
		}
		for _, f := range c.bad {
			if !got[f] {
				t.Errorf("%s: no error for field %s (got %v)", c.name, f, got)
			}
		}
	}
}

func TestTunnelLifecycle(t *testing.T) {
	t.Parallel()
	created, err := CreateTunnel(NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "", nil})
	if err != nil {
		t.Fatal(err)
	}
	tun, err := RehydrateTunnel([]Recorded{rec(created, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if tun.Protocol() != ProtocolHTTP || tun.State() != TunnelActive || tun.Version() != 1 {
		t.Fatalf("tunnel = %+v", tun)
	}
	same := "llm"
	if ev, err := tun.Update(TunnelChanges{Name: &same}); ev != nil || err != nil {
		t.Fatalf("no-op update = %v, %v", ev, err)
	}
	tcp := ProtocolTCP
	if _, err := tun.Update(TunnelChanges{Protocol: &tcp}); !errors.Is(err, ErrValidation) {
		t.Fatalf("switching to tcp with an http upstream: %v", err)
	}
	up := "tcp://127.0.0.1:22"
	ev, err := tun.Update(TunnelChanges{Protocol: &tcp, Upstream: &up})
	if err != nil || ev.Protocol == nil || ev.Upstream == nil || ev.Name != nil {
		t.Fatalf("update = %+v, %v", ev, err)
	}
	del, _ := tun.Delete("done")
	tun, err = RehydrateTunnel([]Recorded{rec(created, 1), rec(ev, 2), rec(del, 3)})
	if err != nil {
		t.Fatal(err)
	}
	if tun.State() != TunnelGone || tun.Upstream() != up || tun.Version() != 3 {
		t.Fatalf("after delete = %+v", tun)
	}
	if _, err := tun.Update(TunnelChanges{Upstream: &up}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("update a deleted tunnel: %v", err)
	}
	if _, err := tun.Delete(""); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := RehydrateTunnel(nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty stream: %v", err)
	}
}

func TestTunnelNameReservation(t *testing.T) {
	t.Parallel()
	n, _ := RehydrateTunnelName(nil)
	res, err := n.Reserve(orgID, "llm", tunnelID)
	if err != nil {
		t.Fatal(err)
	}
	n, _ = RehydrateTunnelName([]Recorded{rec(res, 1)})
	if _, err := n.Reserve(orgID, "llm", "other"); !errors.Is(err, ErrConflict) {
		t.Fatalf("taken name: %v", err)
	}
	if _, err := n.Reserve(orgID, "llm", tunnelID); err != nil {
		t.Fatalf("the holder re-reserving: %v", err)
	}
	n, _ = RehydrateTunnelName([]Recorded{rec(res, 1), rec(TunnelNameReleased{OrgID: orgID, Name: "llm", TunnelID: tunnelID}, 2)})
	if _, err := n.Reserve(orgID, "llm", "other"); err != nil || n.Version() != 2 {
		t.Fatalf("released name: %v (version %d)", err, n.Version())
	}
}

func TestNodeLifecycle(t *testing.T) {
	t.Parallel()
	in := NewNode{NodeID: nodeID, Name: "edge-1", HostKey: "ssh-ed25519 AAAA…", HostKeyFingerprint: "SHA256:abc", EventKeyID: "ed25519:00", AgentURL: "ws://127.0.0.1:8081"}
	enrolled, err := EnrollNode(in)
	if err != nil {
		t.Fatal(err)
	}
	bad := in
	bad.HostKey, bad.AgentURL = "ssh-rsa AAAA", "ftp://x"
	if f := fields(mustErr(EnrollNode(bad))); !f["host_key"] || !f["agent_url"] {
		t.Fatalf("bad node fields = %v", f)
	}
	n, _ := RehydrateNode([]Recorded{rec(enrolled, 1)})
	if n.MarkRecovered() != nil {
		t.Fatal("a node that was never lost recovered")
	}
	lost := n.MarkLost(time.Now())
	if lost == nil {
		t.Fatal("not marked lost")
	}
	n, _ = RehydrateNode([]Recorded{rec(enrolled, 1), rec(lost, 2)})
	if n.MarkLost(time.Now()) != nil || !n.Lost() {
		t.Fatal("lost twice")
	}
	drain, err := n.Drain()
	if err != nil {
		t.Fatal(err)
	}
	n, _ = RehydrateNode([]Recorded{rec(enrolled, 1), rec(lost, 2), rec(drain, 3)})
	if _, err := n.Drain(); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("drain a draining node: %v", err)
	}
	rm, _ := n.Remove("decommissioned")
	n, _ = RehydrateNode([]Recorded{rec(enrolled, 1), rec(lost, 2), rec(drain, 3), rec(rm, 4)})
	if n.State() != NodeLeft {
		t.Fatalf("state %s", n.State())
	}
	if _, err := n.Remove(""); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("remove twice: %v", err)
	}
	if n.MarkLost(time.Now()) != nil {
		t.Fatal("a node that left was marked lost")
	}
}

func mustErr[T any](_ T, err error) error { return err }

func TestAgentTokens(t *testing.T) {
	t.Parallel()
	created, _ := CreateTunnel(NewTunnel{tunnelID, orgID, "alice", "llm", "http://127.0.0.1:1", "", nil})
	tun, _ := RehydrateTunnel([]Recorded{rec(created, 1)})
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	issued, err := IssueAgentToken(tun, NewAgentToken{TokenID: tokenID, KeyID: "ed25519:1", IssuedBy: "alice", Now: now, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !issued.ExpiresAt.Equal(now.Add(24*time.Hour)) || issued.OrgID != orgID || issued.TunnelID != tunnelID {
		t.Fatalf("issued = %+v", issued)
	}
	for _, ttl := range []time.Duration{0, -time.Second, MaxAgentTokenTTL + time.Hour} {
		if _, err := IssueAgentToken(tun, NewAgentToken{TokenID: tokenID, KeyID: "k", IssuedBy: "a", Now: now, TTL: ttl}); !errors.Is(err, ErrValidation) {
			t.Errorf("ttl %s accepted", ttl)
		}
	}
	// The issuer's sealing key comes whole (key and generation) or not at all.
	sealed, err := IssueAgentToken(tun, NewAgentToken{TokenID: tokenID, KeyID: "k", IssuedBy: "a", Now: now, TTL: time.Hour, SealKey: "AAAA", SealGen: 1})
	if err != nil || sealed.SealKey != "AAAA" || sealed.SealGen != 1 {
		t.Fatalf("with a sealing key: %+v, %v", sealed, err)
	}
	for _, in := range []NewAgentToken{{SealKey: "AAAA"}, {SealGen: 1}, {SealKey: "AAAA", SealGen: -1}} {
		in.TokenID, in.KeyID, in.IssuedBy, in.Now, in.TTL = tokenID, "k", "a", now, time.Hour
		if _, err := IssueAgentToken(tun, in); !errors.Is(err, ErrValidation) {
			t.Errorf("sealing key %q generation %d accepted", in.SealKey, in.SealGen)
		}
	}
	del, _ := tun.Delete("")
	gone, _ := RehydrateTunnel([]Recorded{rec(created, 1), rec(del, 2)})
	if _, err := IssueAgentToken(gone, NewAgentToken{TokenID: tokenID, KeyID: "k", IssuedBy: "a", Now: now, TTL: time.Hour}); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("token for a deleted tunnel: %v", err)
	}
	a, _ := RehydrateAgentToken([]Recorded{rec(issued, 1)})
	rv, err := a.Revoke("leaked")
	if err != nil {
		t.Fatal(err)
	}
	a, _ = RehydrateAgentToken([]Recorded{rec(issued, 1), rec(rv, 2)})
	if _, err := a.Revoke("again"); !errors.Is(err, ErrInvalidState) || !a.Revoked() {
		t.Fatalf("revoke twice: %v", err)
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		org  string
		role Role
		ok   bool
	}{
		{orgID, RoleOwner, true}, {orgID, RoleAdmin, true}, {orgID, RoleOperator, true}, {orgID, RoleViewer, true}, {orgID, RoleAuditor, true},
		{orgID, RoleSuperadmin, false}, {orgID, "root", false}, {PlatformOrg, RoleSuperadmin, true}, {PlatformOrg, RoleOwner, false},
	}
	for _, c := range cases {
		ra, _ := RehydrateRoleAssignment(c.org, "bob", nil)
		ev, err := ra.Assign(c.role)
		if c.ok != (err == nil) || (c.ok && ev == nil) {
			t.Errorf("assign %s in %s: ev %v err %v", c.role, c.org, ev, err)
		}
	}
	ra, _ := RehydrateRoleAssignment(orgID, "bob", nil)
	ev, _ := ra.Assign(RoleViewer)
	ra, _ = RehydrateRoleAssignment(orgID, "bob", []Recorded{rec(ev, 1)})
	if again, err := ra.Assign(RoleViewer); again != nil || err != nil {
		t.Fatalf("assigning a held role: %v %v", again, err)
	}
	if _, err := ra.Unassign(RoleAdmin); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unassign a role not held: %v", err)
	}
	un, _ := ra.Unassign(RoleViewer)
	ra, _ = RehydrateRoleAssignment(orgID, "bob", []Recorded{rec(ev, 1), rec(un, 2)})
	if len(ra.Roles()) != 0 {
		t.Fatalf("roles after unassign: %v", ra.Roles())
	}
	if s1, s2 := RoleStream(orgID, "auth0|123"), RoleStream(PlatformOrg, "auth0|123"); s1 == s2 || s2[:15] != "roles-platform-" {
		t.Fatalf("role streams %q %q", s1, s2)
	}
}

func TestDecodeEveryType(t *testing.T) {
	t.Parallel()
	for _, et := range EventTypes() {
		e, err := Decode(et.Name, []byte(`{}`))
		if err != nil || e.EventType() != et.Name {
			t.Errorf("%s: %v %v", et.Name, e, err)
		}
	}
	if _, err := Decode("nope.nope", []byte(`{}`)); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown type: %v", err)
	}
}

func TestOrganizationAndKeys(t *testing.T) {
	t.Parallel()
	if _, _, err := CreateOrganization(orgID, "Acme Corp", "root"); !errors.Is(err, ErrValidation) {
		t.Fatalf("org name with spaces: %v", err)
	}
	c, r, err := CreateOrganization(orgID, "acme", "root")
	if err != nil || r.Name != "acme" || c.OrgID != orgID {
		t.Fatalf("create org: %v", err)
	}
	o, _ := RehydrateOrganization([]Recorded{rec(c, 1)})
	if o.Name() != "acme" {
		t.Fatal(o.Name())
	}
	if _, err := ParseKeyPurpose("node"); !errors.Is(err, ErrValidation) {
		t.Fatalf("purpose node: %v", err)
	}
	if err := CheckRotation(KeyPurposeLog, "a", "a"); !errors.Is(err, ErrConflict) {
		t.Fatalf("rotate to itself: %v", err)
	}
}
