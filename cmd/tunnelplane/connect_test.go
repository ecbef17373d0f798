package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

const (
	connectOrg    = "0193f2a4-7c1e-7d3a-9b2e-000000000001"
	connectTunnel = "0193f2a4-7c1e-7d3a-9b2e-000000000002"
)

// connectNode is a node in process deciding by a view that knows organization acme and its
// tunnel llm (upstream given), plus the events passed.
type connectNode struct {
	url, fp string
	key     *ledger.SigningKey
}

// untold wraps the view as an Authenticator that does not know upstreams: the node then answers
// agent-info as older nodes do, without one.
type untold struct{ *view.View }

func (u untold) AuthenticateAgent(ctx context.Context, raw string) (node.AgentIdentity, error) {
	id, err := u.View.AuthenticateAgent(ctx, raw)
	id.Upstream = ""
	return id, err
}

// startConnectNode starts the node; an empty upstream makes it one that does not tell it.
func startConnectNode(t *testing.T, upstream string, events ...domain.Event) connectNode {
	t.Helper()
	key, err := ledger.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	v := view.New(token.DefaultIssuer, view.Hooks{})
	var auth node.Authenticator = v
	if upstream == "" {
		upstream, auth = "http://127.0.0.1:11434", untold{v}
	}
	v.Keys().Put(key.ID(), key.Public())
	all := append([]domain.Event{
		domain.OrganizationCreated{OrgID: connectOrg, Name: "acme", CreatedBy: "alice"},
		domain.TunnelCreated{TunnelID: connectTunnel, OrgID: connectOrg, Owner: "alice", Name: "llm", Upstream: upstream, Protocol: domain.ProtocolHTTP},
	}, events...)
	for i, e := range all {
		b, _ := json.Marshal(e)
		if err := v.Apply(view.Event{Position: uint64(i), EventID: fmt.Sprint("ev-", i), StreamID: "s", Type: e.EventType(), Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := node.New(node.Config{NodeID: "node-test", HostKey: hk, Authenticator: auth, Router: v, Authorizer: v})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := n.NewServer(map[string]http.Handler{"/v1/agent": n.AgentHandler()})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
		n.Stop()
	})
	return connectNode{url: "ws://" + ln.Addr().String() + "/v1/agent", fp: ssh.FingerprintSHA256(hk.PublicKey()), key: key}
}

func (c connectNode) agentToken(t *testing.T, jti string) string {
	t.Helper()
	tok, err := token.MintAgent(c.key, token.DefaultIssuer, jti, connectOrg, connectTunnel, time.Now().Add(time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A permanent refusal ends connect with exit status 3 and its reason, said once.
func TestConnectExitsOnPermanentRefusal(t *testing.T) {
	t.Parallel()
	n := startConnectNode(t, "http://127.0.0.1:11434",
		domain.AgentTokenRevoked{TokenID: "jti-revoked", OrgID: connectOrg, TunnelID: connectTunnel})
	for _, tc := range []struct {
		name, fingerprint, reason string
	}{
		{"revoked token", n.fp, "agent token revoked (token jti-revoked)"},
		{"host key mismatch", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "node host key " + n.fp + " does not match the pinned SHA256:AAAA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan result, 1)
			go func() {
				done <- tp(t, "connect", "--node", n.url, "--token", n.agentToken(t, "jti-revoked"), "--to", "http://127.0.0.1:11434",
					"--fingerprint", tc.fingerprint, "--max-backoff", "1s")
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("connect kept retrying a permanent refusal")
			}
			if r.code != exitPermanent {
				t.Fatalf("exit %d, want %d\n%s", r.code, exitPermanent, r.stderr)
			}
			if n := strings.Count(r.stderr, tc.reason); n != 1 {
				t.Fatalf("the reason %q is printed %d times, want once:\n%s", tc.reason, n, r.stderr)
			}
			if !strings.Contains(r.stderr, "tunnelplane: "+tc.reason) || strings.Contains(r.stderr, "connection refused") {
				t.Fatalf("stderr:\n%s", r.stderr)
			}
		})
	}
}

// --to is optional: the tunnel's upstream is the default. A node that does not tell it (an
// older one) gets a clear message, once, and exit status 1.
func TestConnectWithoutToNeedsANodeThatTellsTheUpstream(t *testing.T) {
	t.Parallel()
	r := tp(t, "connect", "--node", "ws://127.0.0.1:1/v1/agent", "--token", "t")
	if r.code != 1 || strings.Contains(r.stderr, "--to") || !strings.Contains(r.stderr, "pin the node's host key") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	n := startConnectNode(t, "")
	done := make(chan result, 1)
	go func() {
		done <- tp(t, "connect", "--node", n.url, "--token", n.agentToken(t, "jti-1"), "--fingerprint", n.fp)
	}()
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("connect kept going without an upstream")
	}
	const msg = "this node does not tell the tunnel's upstream; pass --to"
	if r.code != 1 || strings.Count(r.stderr, msg) != 1 {
		t.Fatalf("exit %d, want 1 and %q once:\n%s", r.code, msg, r.stderr)
	}
}
