package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// nodeFact appends an event as the ingester would (to the node's facts stream, stamped with the
// node's clock) and returns its position.
func (e *env) nodeFact(stream string, at time.Time, ev domain.Event) uint64 {
	e.t.Helper()
	payload, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	meta, _ := json.Marshal(domain.Metadata{NodeID: "test", OccurredAt: at})
	res, err := e.store.Append(context.Background(), stream, eventstore.AnyVersion,
		eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: ev.EventType(), Payload: payload, Metadata: meta})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.LastPosition
}

func (e *env) sessions(tok, query string) []api.AgentSession {
	e.t.Helper()
	var l api.List[api.AgentSession]
	e.must(200, "GET", "/api/v1/sessions?"+query, tok, nil).decode(e.t, &l)
	return l.Items
}

func sessionStates(ss []api.AgentSession) string {
	out := ""
	for _, s := range ss {
		out += fmt.Sprintf("%s:%s ", s.ID[len(s.ID)-4:], s.State)
	}
	return out
}

// Agent sessions as nodes report them: connected, ended with the node's reason and traffic, a
// session the node never reported ended closed by its next session of the tunnel or by its next
// start, sessions on a lost node shown as unknown, and no node speaking for another; the
// tunnel's agents_connected follows.
func TestAgentSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	tun := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, api.TunnelInput{Name: "llm", Upstream: "http://127.0.0.1:11434"}).ID
	other := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, api.TunnelInput{Name: "db", Upstream: "http://127.0.0.1:5000"}).ID
	enroll, _ := newNodeEnrollment(t, e.store, "node-1")
	e.write(201, "POST", "/api/v1/nodes", root, enroll)
	node := enroll.NodeID
	facts := domain.NodeFactsStream(node)

	t0 := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	connect := func(tunnel string, at time.Time) (string, uint64) {
		id := uuid.Must(uuid.NewV7()).String()
		pos := e.nodeFact(facts, at, &domain.AgentConnected{NodeID: node, SessionID: id, OrgID: org, TunnelID: tunnel, TokenID: uuid.NewString(),
			AgentVersion: "1.2.3", ProtocolVersion: "tunnelplane.v2", RemoteAddr: "192.0.2.7:50000", KeyExchange: "mlkem768x25519-sha256", Cipher: "aes128-gcm@openssh.com"})
		return id, pos
	}
	a, _ := connect(tun, t0)
	e.nodeFact(facts, t0.Add(time.Minute), &domain.AgentDisconnected{NodeID: node, SessionID: a, OrgID: org, TunnelID: tun,
		BytesIn: 100, BytesOut: 2000, DurationMS: 60000, Reason: "agent closed the connection"})
	b, _ := connect(tun, t0.Add(2*time.Minute))
	// The node restarted without reporting b's end: c, on the same node and tunnel, closes it.
	c, _ := connect(tun, t0.Add(3*time.Minute))
	d, pos := connect(other, t0.Add(4*time.Minute))

	all := e.sessions(alice, fmt.Sprintf("wait_for=%d", pos))
	if got, want := sessionStates(all), fmt.Sprintf("%s:connected %s:connected %s:ended %s:ended ", d[32:], c[32:], b[32:], a[32:]); got != want {
		t.Fatalf("sessions, newest first: %s, want %s", got, want)
	}
	ended := all[3]
	if ended.ID != a || ended.EndReason == nil || *ended.EndReason != "agent closed the connection" || *ended.BytesIn != 100 || *ended.BytesOut != 2000 ||
		*ended.DurationMS != 60000 || !ended.ConnectedAt.Equal(t0) || !ended.EndedAt.Equal(t0.Add(time.Minute)) ||
		ended.KEX != "mlkem768x25519-sha256" || ended.Cipher != "aes128-gcm@openssh.com" || ended.AgentVersion != "1.2.3" || ended.RemoteAddr != "192.0.2.7:50000" {
		t.Fatalf("ended session: %+v", ended)
	}
	if s := all[2]; s.EndReason == nil || *s.EndReason != projections.ReasonSuperseded || !s.EndedAt.Equal(t0.Add(3*time.Minute)) || s.BytesIn != nil {
		t.Fatalf("superseded session: %+v", s)
	}
	if got := e.sessions(alice, "state=connected&tunnel_id="+tun); len(got) != 1 || got[0].ID != c {
		t.Fatalf("connected sessions of the tunnel: %s", sessionStates(got))
	}
	var tl api.Tunnel
	e.must(200, "GET", "/api/v1/tunnels/"+tun, alice, nil).decode(t, &tl)
	if tl.AgentsConnected != 1 {
		t.Fatalf("tunnel: %+v", tl)
	}

	// Pages of one, newest first, through the cursor.
	var seen []string
	q := url.Values{"limit": {"1"}}
	for range 10 {
		var l api.List[api.AgentSession]
		e.must(200, "GET", "/api/v1/sessions?"+q.Encode(), alice, nil).decode(t, &l)
		for _, s := range l.Items {
			seen = append(seen, s.ID)
		}
		if l.NextCursor == "" {
			break
		}
		q.Set("cursor", l.NextCursor)
	}
	if fmt.Sprint(seen) != fmt.Sprint([]string{d, c, b, a}) {
		t.Fatalf("paged: %v", seen)
	}

	// The node is lost: what it held is unknown, not connected.
	lost := e.nodeFact(domain.NodeStream(node), time.Now(), &domain.NodeLost{NodeID: node, LastSeen: time.Now()})
	if got := e.sessions(alice, fmt.Sprintf("state=unknown&wait_for=%d", lost)); sessionStates(got) != fmt.Sprintf("%s:unknown %s:unknown ", d[32:], c[32:]) {
		t.Fatalf("after the node was lost: %s", sessionStates(got))
	}
	e.must(200, "GET", "/api/v1/tunnels/"+tun, alice, nil).decode(t, &tl)
	if tl.AgentsConnected != 0 {
		t.Fatalf("tunnel on a lost node: %+v", tl)
	}

	// Another node's report about this node's session changes nothing.
	e.nodeFact(domain.NodeFactsStream(uuid.NewString()), time.Now(), &domain.AgentDisconnected{NodeID: node, SessionID: c, OrgID: org, TunnelID: tun, Reason: "forged"})
	// The node's next process reports its start: what the previous one held has ended.
	started := e.nodeFact(facts, t0.Add(5*time.Minute), &domain.NodeStarted{NodeID: node, Version: "1.0.1"})
	all = e.sessions(alice, fmt.Sprintf("wait_for=%d", started))
	if got, want := sessionStates(all), fmt.Sprintf("%s:ended %s:ended %s:ended %s:ended ", d[32:], c[32:], b[32:], a[32:]); got != want {
		t.Fatalf("after the node restarted: %s, want %s", got, want)
	}
	for _, s := range all[:2] {
		if s.EndReason == nil || *s.EndReason != projections.ReasonNodeRestarted || !s.EndedAt.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("session ended by the restart: %+v", s)
		}
	}

	// Bad input and other organizations.
	e.must(400, "GET", "/api/v1/sessions?tunnel_id=nope", alice, nil).problem(t)
	e.must(400, "GET", "/api/v1/sessions?state=open", alice, nil).problem(t)
	e.must(400, "GET", "/api/v1/sessions?cursor=garbage", alice, nil).problem(t)
	e.createOrg(root, "globex", "mallory")
	if got := e.sessions(e.token("mallory"), ""); len(got) != 0 {
		t.Fatalf("another organization's owner sees %s", sessionStates(got))
	}
	e.must(403, "GET", "/api/v1/sessions?org=acme", e.token("mallory"), nil).problem(t)
}

// A role grant in a node's facts stream (written around the ingester, which refuses it) reaches
// no read model: the RBAC view ignores it, the audit index lists it.
func TestNodeFactsCannotGrantRoles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	mallory := e.token("mallory")
	forged := e.nodeFact(domain.NodeFactsStream(uuid.NewString()), time.Now(),
		&domain.RoleAssigned{OrgID: domain.PlatformOrg, UserID: "mallory", Role: domain.RoleSuperadmin})
	var audit api.List[api.AuditEntry]
	e.must(200, "GET", fmt.Sprintf("/api/v1/audit?org=*&type=%s&wait_for=%d", domain.TypeRoleAssigned, forged), root, nil).decode(t, &audit)
	if len(audit.Items) != 2 {
		t.Fatalf("audit index: %+v", audit.Items)
	}
	e.must(403, "GET", fmt.Sprintf("/api/v1/nodes?wait_for=%d", forged), mallory, nil).problem(t)
	var roles api.List[api.RoleAssignment]
	e.must(200, "GET", "/api/v1/role-assignments?org=*", root, nil).decode(t, &roles)
	if len(roles.Items) != 1 || roles.Items[0].UserID != "root" {
		t.Fatalf("platform roles: %+v", roles.Items)
	}
}
