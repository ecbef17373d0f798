package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/projections"
)

// streamTypes lists the event types of a stream, in order.
func streamTypes(t *testing.T, st *eventstore.Store, stream string) []string {
	t.Helper()
	recs, err := st.ReadStream(context.Background(), stream, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, r.Type)
	}
	return out
}

func TestOrgAndTunnelLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")

	// Read your write: the org is visible at once with wait_for, by name and by id.
	var o api.Org
	e.must(200, "GET", "/api/v1/orgs/acme", alice, nil).decode(t, &o)
	if o.ID != org || o.Name != "acme" || o.CreatedBy != "root" {
		t.Fatalf("org: %+v", o)
	}
	var orgs api.List[api.Org]
	e.must(200, "GET", "/api/v1/orgs", alice, nil).decode(t, &orgs)
	if len(orgs.Items) != 1 || orgs.Items[0].ID != org {
		t.Fatalf("alice's orgs: %+v", orgs)
	}
	if got := streamTypes(t, e.store, domain.OrgStream(org)); fmt.Sprint(got) != "[organization.created]" {
		t.Fatalf("org stream: %v", got)
	}

	// Create: the org defaults to alice's only organization.
	created := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:11434"},
		"X-Correlation-ID", "corr-lifecycle")
	if created.Version != 1 {
		t.Fatalf("created: %+v", created)
	}
	var tun api.Tunnel
	r := e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels/%s?wait_for=%d", created.ID, created.Position), alice, nil)
	r.decode(t, &tun)
	if tun.Name != "llm" || tun.OrgID != org || tun.Owner != "alice" || tun.State != "active" || tun.Protocol != "http" || r.header.Get("ETag") != `"1"` {
		t.Fatalf("tunnel: %+v etag %s", tun, r.header.Get("ETag"))
	}

	// Update with If-Match, then the stale version is refused with 412 and nothing is written.
	up := e.write(200, "PATCH", "/api/v1/tunnels/"+created.ID, alice, map[string]string{"upstream": "http://127.0.0.1:8080", "name": "llm2"}, "If-Match", `"1"`)
	if up.Version != 2 {
		t.Fatalf("update: %+v", up)
	}
	before := head(t, e.store)
	p := e.must(412, "PATCH", "/api/v1/tunnels/"+created.ID, alice, map[string]string{"upstream": "http://127.0.0.1:9"}, "If-Match", `"1"`).problem(t)
	if !strings.Contains(p.Detail, "version 2") {
		t.Fatalf("412 detail: %s", p.Detail)
	}
	if head(t, e.store) != before {
		t.Fatal("a refused update appended")
	}
	e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels/%s?wait_for=%d", created.ID, up.Position), alice, nil).decode(t, &tun)
	if tun.Name != "llm2" || tun.Upstream != "http://127.0.0.1:8080" || tun.Version != 2 {
		t.Fatalf("after update: %+v", tun)
	}
	// A name in use is a conflict.
	other := e.write(201, "POST", "/api/v1/tunnels?org=acme", alice, map[string]string{"name": "other", "upstream": "tcp://127.0.0.1:5432", "protocol": "tcp"})
	e.must(409, "PATCH", "/api/v1/tunnels/"+other.ID, alice, map[string]string{"name": "llm2"}).problem(t)

	// List with filters and pagination.
	for i := range 3 {
		e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": fmt.Sprintf("page-%d", i), "upstream": "http://127.0.0.1:1"})
	}
	last := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "page-3", "upstream": "http://127.0.0.1:1"})
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		var l api.List[api.Tunnel]
		e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels?limit=2&wait_for=%d&cursor=%s", last.Position, cursor), alice, nil).decode(t, &l)
		for _, it := range l.Items {
			names = append(names, it.Name)
		}
		if l.NextCursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cursor = l.NextCursor
	}
	if fmt.Sprint(names) != "[llm2 other page-0 page-1 page-2 page-3]" {
		t.Fatalf("paged names: %v", names)
	}

	// Delete: the tunnel is deleted, its name free again; a second delete is a conflict.
	del := e.write(200, "DELETE", "/api/v1/tunnels/"+created.ID+"?reason=done", alice, nil)
	e.must(409, "DELETE", "/api/v1/tunnels/"+created.ID, alice, nil).problem(t)
	var l api.List[api.Tunnel]
	e.must(200, "GET", fmt.Sprintf("/api/v1/tunnels?state=deleted&wait_for=%d", del.Position), alice, nil).decode(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != created.ID || l.Items[0].State != "deleted" {
		t.Fatalf("deleted tunnels: %+v", l)
	}
	e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "llm2", "upstream": "http://127.0.0.1:1"})

	want := "[tunnel.created tunnel.updated tunnel.deleted]"
	if got := streamTypes(t, e.store, domain.TunnelStream(created.ID)); fmt.Sprint(got) != want {
		t.Fatalf("tunnel stream %v, want %s", got, want)
	}
	if got := streamTypes(t, e.store, domain.TunnelNameStream(org, "llm")); fmt.Sprint(got) != "[tunnel.name_reserved tunnel.name_released]" {
		t.Fatalf("name stream %v", got)
	}

	// The audit index finds the request by its correlation id, with the actor.
	var audit api.List[api.AuditEntry]
	e.must(200, "GET", fmt.Sprintf("/api/v1/audit?correlation_id=corr-lifecycle&wait_for=%d", del.Position), alice, nil).decode(t, &audit)
	if len(audit.Items) != 2 { // tunnel.created and tunnel.name_reserved
		t.Fatalf("audit by correlation id: %+v", audit.Items)
	}
	for _, a := range audit.Items {
		if a.Actor == nil || *a.Actor != "alice" || a.ClientIP == nil || *a.ClientIP != "127.0.0.1" {
			t.Fatalf("audit entry: %+v", a)
		}
	}
	e.must(200, "GET", "/api/v1/audit?type=tunnel.deleted&actor=alice&stream="+url.QueryEscape(domain.TunnelStream(created.ID)), alice, nil).decode(t, &audit)
	if len(audit.Items) != 1 || audit.Items[0].Type != "tunnel.deleted" {
		t.Fatalf("audit by type, actor and stream: %+v", audit.Items)
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	e.must(200, "GET", "/api/v1/audit?since="+future, alice, nil).decode(t, &audit)
	if len(audit.Items) != 0 {
		t.Fatalf("audit since the future: %+v", audit.Items)
	}
	e.must(200, "GET", "/api/v1/audit?until="+future+"&limit=3", alice, nil).decode(t, &audit)
	if len(audit.Items) != 3 || audit.NextCursor == "" || audit.Items[0].Position < audit.Items[2].Position {
		t.Fatalf("audit page: %+v", audit)
	}
}

func TestAgentTokenLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")
	tun := e.write(201, "POST", "/api/v1/tunnels", alice, map[string]string{"name": "llm", "upstream": "http://127.0.0.1:11434"})

	issued := e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, map[string]string{"ttl": "2h"})
	if issued.Token == "" || issued.ExpiresAt == nil || time.Until(*issued.ExpiresAt) > 2*time.Hour || time.Until(*issued.ExpiresAt) < 119*time.Minute {
		t.Fatalf("issued: %+v", issued)
	}
	// The token is an agent token for this tunnel, verifiable with the token key in the log.
	keys := token.NewKeySet()
	keys.Put(e.svc.TokenKey().ID(), e.svc.TokenKey().Public())
	claims, err := (&token.Verifier{Keys: keys, Issuer: token.DefaultIssuer}).VerifyAgent(issued.Token)
	if err != nil || claims.Tunnel != tun.ID || claims.Org != org || claims.ID != issued.ID {
		t.Fatalf("agent token: %+v %v", claims, err)
	}
	// No body at all means the default lifetime.
	def := e.write(201, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, nil)
	if time.Until(*def.ExpiresAt) < 29*24*time.Hour {
		t.Fatalf("default ttl: %v", def.ExpiresAt)
	}

	var l api.List[api.AgentToken]
	e.must(200, "GET", fmt.Sprintf("/api/v1/tokens?tunnel_id=%s&wait_for=%d", tun.ID, def.Position), alice, nil).decode(t, &l)
	if len(l.Items) != 2 || l.Items[0].ID != issued.ID || l.Items[0].State != "active" || strings.Contains(string(e.call("GET", "/api/v1/tokens", alice, nil).body), issued.Token) {
		t.Fatalf("tokens: %+v", l)
	}
	rev := e.write(200, "DELETE", "/api/v1/tokens/"+issued.ID+"?reason=leaked", alice, nil)
	e.must(409, "DELETE", "/api/v1/tokens/"+issued.ID, alice, nil).problem(t)
	var one api.AgentToken
	e.must(200, "GET", fmt.Sprintf("/api/v1/tokens/%s?wait_for=%d", issued.ID, rev.Position), alice, nil).decode(t, &one)
	if one.State != "revoked" || one.RevokeReason == nil || *one.RevokeReason != "leaked" {
		t.Fatalf("revoked token: %+v", one)
	}
	e.must(200, "GET", "/api/v1/tokens?state=active", alice, nil).decode(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != def.ID {
		t.Fatalf("active tokens: %+v", l)
	}
	if got := streamTypes(t, e.store, domain.AgentTokenStream(issued.ID)); fmt.Sprint(got) != "[agent_token.issued agent_token.revoked]" {
		t.Fatalf("token stream: %v", got)
	}
	// A tunnel that does not exist (in this org) has no tokens to issue.
	e.must(404, "POST", "/api/v1/tunnels/"+uuid.NewString()+"/tokens", alice, nil).problem(t)
	e.must(422, "POST", "/api/v1/tunnels/"+tun.ID+"/tokens", alice, map[string]string{"ttl": "forever"}).problem(t)
}

// newNodeEnrollment builds what a node sends: a real ed25519 SSH host key and an event key with
// its proof of possession over the log's origin.
func newNodeEnrollment(t *testing.T, st *eventstore.Store, name string) (commands.EnrollNode, *eventstore.SigningKey) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	eventKey, err := eventstore.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	origin, err := st.Origin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodeID := uuid.NewString()
	return commands.EnrollNode{NodeID: nodeID, Name: name, HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))),
		HostKeyFingerprint: ssh.FingerprintSHA256(sshPub), EventKey: eventstore.NewKeyAdded(origin, eventstore.PurposeNode, nodeID, eventKey),
		AgentURL: "wss://node-1.example:8443/agent", IngressURL: "https://node-1.example"}, eventKey
}

func keyState(t *testing.T, e *env, tok, id string) api.Key {
	t.Helper()
	var l api.List[api.Key]
	e.must(200, "GET", "/api/v1/keys?limit=500", tok, nil).decode(t, &l)
	for _, k := range l.Items {
		if k.KeyID == id {
			return k
		}
	}
	t.Fatalf("key %s not listed in %+v", id, l.Items)
	return api.Key{}
}

func TestNodeLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	enroll, eventKey := newNodeEnrollment(t, e.store, "node-1")

	// A wrong fingerprint or proof is refused before anything is written.
	before := head(t, e.store)
	bad := enroll
	bad.HostKeyFingerprint = "SHA256:AAAA"
	if p := e.must(422, "POST", "/api/v1/nodes", root, bad).problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "host_key_fingerprint" {
		t.Fatalf("bad fingerprint: %+v", p)
	}
	bad = enroll
	bad.EventKey.Proof = append([]byte(nil), enroll.EventKey.Proof...)
	bad.EventKey.Proof[0] ^= 1
	if p := e.must(422, "POST", "/api/v1/nodes", root, bad).problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "event_key" {
		t.Fatalf("bad proof: %+v", p)
	}
	if head(t, e.store) != before {
		t.Fatal("a refused enrollment appended")
	}

	res := e.write(201, "POST", "/api/v1/nodes", root, enroll)
	if res.ID != enroll.NodeID {
		t.Fatalf("enroll: %+v", res)
	}
	var n api.Node
	e.must(200, "GET", fmt.Sprintf("/api/v1/nodes/%s?wait_for=%d", enroll.NodeID, res.Position), root, nil).decode(t, &n)
	if n.State != "joined" || n.HostKey != enroll.HostKey || n.HostKeyFingerprint != enroll.HostKeyFingerprint || n.EventKeyID != eventKey.ID() {
		t.Fatalf("node: %+v", n)
	}
	if k := keyState(t, e, root, eventKey.ID()); k.State != "active" || k.Purpose != eventstore.PurposeNode || k.Owner != enroll.NodeID {
		t.Fatalf("node key: %+v", k)
	}
	// The same node id again with a fresh event key is a conflict; the same enrollment again (a
	// node restarting) is accepted and changes nothing.
	again, _ := newNodeEnrollment(t, e.store, "node-1")
	againKey, _ := eventstore.GenerateSigningKey()
	origin, _ := e.store.Origin(context.Background())
	again.NodeID, again.EventKey = enroll.NodeID, eventstore.NewKeyAdded(origin, eventstore.PurposeNode, enroll.NodeID, againKey)
	e.must(409, "POST", "/api/v1/nodes", root, again).problem(t)
	headBefore := head(t, e.store)
	var same commands.Result
	e.must(200, "POST", "/api/v1/nodes", root, enroll).decode(t, &same)
	if !same.Noop || same.ID != enroll.NodeID || head(t, e.store) != headBefore {
		t.Fatalf("re-enrollment: %+v (head %d → %d)", same, headBefore, head(t, e.store))
	}

	drained := e.write(200, "POST", "/api/v1/nodes/"+enroll.NodeID+"/drain", root, nil)
	e.must(409, "POST", "/api/v1/nodes/"+enroll.NodeID+"/drain", root, nil).problem(t)
	var l api.List[api.Node]
	e.must(200, "GET", fmt.Sprintf("/api/v1/nodes?state=draining&wait_for=%d", drained.Position), root, nil).decode(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != enroll.NodeID {
		t.Fatalf("draining nodes: %+v", l)
	}
	removed := e.write(200, "DELETE", "/api/v1/nodes/"+enroll.NodeID+"?reason=decommissioned", root, nil)
	e.must(200, "GET", fmt.Sprintf("/api/v1/nodes/%s?wait_for=%d", enroll.NodeID, removed.Position), root, nil).decode(t, &n)
	if n.State != "left" {
		t.Fatalf("removed node: %+v", n)
	}
	if k := keyState(t, e, root, eventKey.ID()); k.State != "revoked" || k.ValidUntil == nil {
		t.Fatalf("removed node's key: %+v", k)
	}
	if got := streamTypes(t, e.store, domain.NodeStream(enroll.NodeID)); fmt.Sprint(got) != "[node.enrolled node.drain_requested node.removed]" {
		t.Fatalf("node stream: %v", got)
	}
	e.must(404, "POST", "/api/v1/nodes/"+uuid.NewString()+"/drain", root, nil).problem(t)
}

func TestRoleAssignmentLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	org := e.createOrg(root, "acme", "alice")
	alice := e.token("alice")

	res := e.write(201, "POST", "/api/v1/role-assignments", alice, map[string]string{"user_id": "auth0|bob@example.com", "role": "viewer"})
	var l api.List[api.RoleAssignment]
	e.must(200, "GET", fmt.Sprintf("/api/v1/role-assignments?org=acme&wait_for=%d", res.Position), alice, nil).decode(t, &l)
	if len(l.Items) != 2 || l.Items[0].UserID != "alice" || l.Items[1].UserID != "auth0|bob@example.com" || l.Items[1].Role != "viewer" || l.Items[1].OrgID != org {
		t.Fatalf("roles: %+v", l)
	}
	// The grant takes effect at once: bob may read tunnels, not create them.
	bob := e.token("auth0|bob@example.com")
	e.must(200, "GET", "/api/v1/tunnels", bob, nil)
	e.must(403, "POST", "/api/v1/tunnels", bob, map[string]string{"name": "x", "upstream": "http://127.0.0.1:1"}).problem(t)
	// Granting the same role again changes nothing.
	var again commands.Result
	e.must(201, "POST", "/api/v1/role-assignments", alice, map[string]string{"user_id": "auth0|bob@example.com", "role": "viewer"}).decode(t, &again)
	if !again.Noop {
		t.Fatalf("repeat grant: %+v", again)
	}

	un := e.write(200, "DELETE", "/api/v1/role-assignments/"+url.PathEscape("auth0|bob@example.com")+"/viewer", alice, nil)
	e.must(404, "DELETE", "/api/v1/role-assignments/"+url.PathEscape("auth0|bob@example.com")+"/viewer", alice, nil).problem(t)
	e.must(200, "GET", fmt.Sprintf("/api/v1/role-assignments?user_id=%s&wait_for=%d", url.QueryEscape("auth0|bob@example.com"), un.Position), alice, nil).decode(t, &l)
	if len(l.Items) != 0 {
		t.Fatalf("after unassign: %+v", l)
	}
	e.must(403, "GET", "/api/v1/tunnels?org=acme", bob, nil).problem(t)
	// Superadmin is platform-wide.
	carol := e.write(201, "POST", "/api/v1/role-assignments", root, map[string]string{"user_id": "carol", "role": "superadmin"})
	e.must(200, "GET", fmt.Sprintf("/api/v1/role-assignments?org=*&wait_for=%d", carol.Position), root, nil).decode(t, &l)
	if len(l.Items) != 2 || l.Items[0].UserID != "carol" || l.Items[0].OrgID != "*" {
		t.Fatalf("platform roles: %+v", l)
	}
	e.must(422, "POST", "/api/v1/role-assignments", root, map[string]string{"org": "acme", "user_id": "dave", "role": "superadmin"}).problem(t)
	e.must(422, "POST", "/api/v1/role-assignments", alice, map[string]string{"user_id": "dave", "role": "janitor"}).problem(t)
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	root := e.superadmin()
	oldToken := e.svc.TokenKey().ID()
	oldLog, err := eventstore.LogKeyID(context.Background(), e.store.Pool())
	if err != nil {
		t.Fatal(err)
	}

	rot := e.write(201, "POST", "/api/v1/keys/rotations", root, map[string]string{"purpose": "token"})
	if rot.ID == oldToken || e.svc.TokenKey().ID() != rot.ID {
		t.Fatalf("token rotation: %+v", rot)
	}
	// Tokens signed by the new key work at once; the old one still verifies (grace period).
	fresh := e.token("root")
	e.must(200, "GET", "/api/v1/keys", fresh, nil)
	e.must(200, "GET", "/api/v1/keys", root, nil)
	if k := keyState(t, e, fresh, oldToken); k.State != "rotated" {
		t.Fatalf("old token key: %+v", k)
	}
	if k := keyState(t, e, fresh, rot.ID); k.State != "active" || k.Purpose != eventstore.PurposeToken {
		t.Fatalf("new token key: %+v", k)
	}

	logRot := e.write(201, "POST", "/api/v1/keys/rotations", root, map[string]string{"purpose": "log"})
	if logRot.ID == oldLog {
		t.Fatalf("log rotation: %+v", logRot)
	}
	// Appends after the rotation are signed by the new key, and the whole log verifies.
	org := e.createOrg(fresh, "acme", "alice")
	if org == "" {
		t.Fatal("no org")
	}
	rep, err := eventstore.Verify(context.Background(), e.store.Pool(), eventstore.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify after rotations: %+v %v", rep.Failure, err)
	}
	var l api.List[api.Key]
	e.must(200, "GET", "/api/v1/keys?purpose=log", fresh, nil).decode(t, &l)
	if len(l.Items) != 2 || l.Items[0].KeyID != oldLog || l.Items[0].State != "rotated" || l.Items[1].KeyID != logRot.ID || l.Items[1].State != "active" {
		t.Fatalf("log keys: %+v", l.Items)
	}
	e.must(422, "POST", "/api/v1/keys/rotations", root, map[string]string{"purpose": "node"}).problem(t)
	if got := e.runnerWait(t, logRot.Position); got != nil {
		t.Fatal(got)
	}
}

func (e *env) runnerWait(t *testing.T, pos uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.runner.WaitFor(ctx, pos, projections.Audit)
}
