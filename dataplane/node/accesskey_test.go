package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// keyView is a view of the log as a node holds it, with the env's tunnels (organization "one")
// and tunnel access keys; it routes and authorizes the ingress as in production.
type keyView struct {
	t   *testing.T
	v   *view.View
	pos uint64
}

func (k *keyView) apply(e domain.Event) {
	k.t.Helper()
	b, _ := json.Marshal(e)
	if err := k.v.Apply(view.Event{Position: k.pos, EventID: fmt.Sprint("ev-", k.pos), StreamID: "s", Type: e.EventType(), Payload: b}); err != nil {
		k.t.Fatal(err)
	}
	k.pos++
}

// issue records an access key for tunnel whose secret is "tpk_<name>" and returns the secret.
func (k *keyView) issue(name, tunnel string, cidrs ...string) string {
	secret := domain.AccessKeyPrefix + name
	k.apply(domain.AccessKeyIssued{KeyID: "key-" + name, OrgID: "org-1", TunnelID: tunnel, SecretHash: domain.HashAccessKey(secret),
		ExpiresAt: time.Now().Add(time.Hour), CIDRs: cidrs, IssuedBy: "alice"})
	return secret
}

func newKeyView(t *testing.T) *keyView { return newKeyViewWith(t, view.Hooks{}) }

// newKeyViewWith is newKeyView with hooks on the view.
func newKeyViewWith(t *testing.T, hooks view.Hooks) *keyView {
	k := &keyView{t: t, v: view.New(issuer, hooks)}
	k.apply(domain.OrganizationCreated{OrgID: "org-1", Name: "one"})
	k.apply(domain.TunnelCreated{TunnelID: "tun-llm", OrgID: "org-1", Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	k.apply(domain.RoleAssigned{OrgID: "org-1", UserID: "alice", Role: domain.RoleOperator})
	k.apply(domain.TunnelCreated{TunnelID: "tun-2", OrgID: "org-1", Owner: "alice", Name: "second", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	return k
}

type ingressProblem struct {
	Type  string `json:"type"`
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// TestAccessKeysAtTheIngress: a tunnel access key calls its own tunnel, presented as a bearer
// Authorization, in X-Tunnel-Key or as a bearer Proxy-Authorization; in the last two ways the
// caller's own Authorization reaches the upstream untouched (an OpenAI-compatible server's API
// key), and the key itself never does. It calls no other tunnel, not from outside its prefixes,
// and not once its revocation reached the view, although the node cached its authentication.
// Refusals are problem documents with the OpenAI-style error member.
func TestAccessKeysAtTheIngress(t *testing.T) {
	t.Parallel()
	kv := newKeyView(t)
	e := newEnv(t, withNodeConfig(func(c *node.Config) { c.Router, c.Authorizer = kv.v, kv.v }))
	b, _ := json.Marshal(ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", e.key))
	if err := kv.v.Apply(view.Event{Position: kv.pos, EventID: "ev-key", StreamID: ledger.LogStream, Type: ledger.TypeKeyAdded, Payload: b}); err != nil {
		t.Fatal(err)
	}
	kv.pos++
	up := newRawUpstream(t, "")
	e.startAgent("tun-llm", func(c *agent.Config) { c.Upstream = "http://" + up.addr })
	e.waitHeld("tun-llm")
	key := kv.issue("llm-key", "tun-llm")
	walled := kv.issue("walled", "tun-llm", "10.0.0.0/8")
	other := kv.issue("other", "tun-2")
	const upstreamKey = "Bearer sk-upstream-own-key"

	get := func(target string, headers ...string) (*http.Response, []byte) {
		t.Helper()
		return rawExchange(t, e, "GET "+target+" HTTP/1.1\r\nHost: x\r\n"+strings.Join(append(headers, ""), "\r\n")+"\r\n")
	}
	for _, c := range []struct {
		name      string
		headers   []string
		upstream  string // the Authorization header the upstream must see ("" none)
		forbidden []string
	}{
		{"Authorization", []string{"Authorization: Bearer " + key}, "", []string{key, "Authorization"}},
		{"X-Tunnel-Key", []string{"X-Tunnel-Key: " + key, "Authorization: " + upstreamKey}, upstreamKey, []string{key, "X-Tunnel-Key"}},
		{"Proxy-Authorization", []string{"Proxy-Authorization: Bearer " + key, "Authorization: " + upstreamKey}, upstreamKey, []string{key, "Proxy-Authorization"}},
		{"X-Tunnel-Key, no Authorization", []string{"X-Tunnel-Key: " + key}, "", []string{key, "Authorization"}},
		{"a user token in X-Tunnel-Key", []string{"X-Tunnel-Key: " + e.alice, "Authorization: " + upstreamKey}, upstreamKey, []string{e.alice}},
		{"a user token in Authorization", []string{"Authorization: Bearer " + e.alice}, "", []string{e.alice, "Authorization"}},
		{"by bare name", []string{"X-Tunnel-Key: " + key}, "", []string{key}},
		// A Proxy-Authorization in another scheme is for some proxy, not the tunnel.
		{"Proxy-Authorization Basic beside the key in Authorization", []string{"Proxy-Authorization: Basic c2VjcmV0", "Authorization: Bearer " + key}, "",
			[]string{key, "Authorization", "Proxy-Authorization", "c2VjcmV0"}},
	} {
		target := "/t/llm.one/v1/chat/completions"
		if c.name == "by bare name" {
			target = "/t/llm/v1/models"
		}
		resp, body := get(target, c.headers...)
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", c.name, resp.StatusCode, body)
			continue
		}
		head := up.lastHead()
		if c.upstream != "" && !strings.Contains(head, "\r\nAuthorization: "+c.upstream+"\r\n") {
			t.Errorf("%s: the upstream did not get the caller's Authorization:\n%s", c.name, head)
		}
		for _, f := range c.forbidden {
			if strings.Contains(head, f) {
				t.Errorf("%s: the upstream saw %.20q:\n%s", c.name, f, head)
			}
		}
	}

	refused := func(name string, status int, errType, code, message string, headers ...string) {
		t.Helper()
		resp, body := get("/t/llm.one/v1/models", headers...)
		var p ingressProblem
		_ = json.Unmarshal(body, &p)
		if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" || p.Error.Type != errType ||
			p.Error.Code != code || !strings.Contains(p.Error.Message, message) {
			t.Errorf("%s: %d %s %s, want %d %s/%s with %q", name, resp.StatusCode, resp.Header.Get("Content-Type"), body, status, errType, code, message)
		}
	}
	refused("another tunnel's key", 404, "not_found_error", "unknown-tunnel", "no tunnel", "X-Tunnel-Key: "+other)
	refused("outside its prefixes", 403, "permission_error", "forbidden", "not accepted from 127.0.0.1", "X-Tunnel-Key: "+walled)
	refused("an unknown key", 401, "authentication_error", "unauthenticated", "unknown access key", "X-Tunnel-Key: tpk_nope", "Authorization: Bearer "+e.alice)
	refused("an empty X-Tunnel-Key", 401, "authentication_error", "unauthenticated", "Authorization: Bearer", "X-Tunnel-Key: ", "Authorization: Bearer "+key)

	// Revoked: refused at the next request, though its authentication is cached for seconds.
	kv.apply(domain.AccessKeyRevoked{KeyID: "key-llm-key", OrgID: "org-1", TunnelID: "tun-llm", Reason: "leaked"})
	refused("revoked, in Authorization", 401, "authentication_error", "unauthenticated", "revoked", "Authorization: Bearer "+key)
	refused("revoked, in X-Tunnel-Key", 401, "authentication_error", "unauthenticated", "revoked", "X-Tunnel-Key: "+key, "Authorization: "+upstreamKey)
	if resp, body := get("/t/llm.one/v1/models", "Authorization: Bearer "+e.alice); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice after the revocation: %d %s", resp.StatusCode, body)
	}
}
