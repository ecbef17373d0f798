package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
	"github.com/tunnelplane/tunnelplane/internal/streamtest"
)

// Revocation cuts live traffic on every node within a second of the API's answer: the whole path
// API → log → relay → NATS → two nodes' verified views → their ingresses. A viewer with a grant
// holds an event stream through node A and a WebSocket through node B; the grant revoked, both
// end (the WebSocket with close 1008) and new calls are refused on both nodes, while the owner's
// stream goes on. An access key revoked cuts its stream; a role withdrawn cuts the calls it let in;
// a user deleted loses their calls even where a group grant let them in, and their earlier token.
func TestSystemRevocationCutsLiveCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	// Node B: a second node of the installation, with a data dir of its own and its own agent for
	// the demo tunnel (to the same upstream).
	nodeB, err := startNode(ctx, &globals{dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard, log: quiet},
		nodeapp.Config{Name: "node-b", ListenAddr: "127.0.0.1:0", NATSURL: sv.NATS.ClientURL(), BaseDomain: "localhost",
			ControlPlane: &controlapp.LocalControlPlane{Store: sv.CP.Log.Store, Service: sv.CP.Service, Actor: serveapp.Actor}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nodeB.Close)
	tok, err := sv.CP.Service.Handlers.IssueAgentToken.Handle(commands.WithActor(ctx, commands.Actor{ID: "demo"}),
		commands.IssueAgentToken{OrgID: d.OrgID, TunnelID: d.TunnelID, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		_ = agent.Run(actx, agent.Config{NodeURL: nodeB.URL + "/v1/agent", Token: tok.Token, Upstream: d.UpstreamURL,
			HostKeyFingerprint: nodeB.Fingerprint, Logger: quiet, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	}()
	t.Cleanup(func() { stopAgent(); <-agentDone })

	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	api := adminAPI(t, client, sv.CP.URL, d.UserToken)
	mint := func(user string) string {
		raw, err := token.MintUserInGroups(sv.CP.Service.TokenKey(), token.DefaultIssuer, user, "", nil, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	nodes := map[string]string{"A": sv.Node.URL, "B": nodeB.URL}
	request := func(node, path, header, cred string) *http.Request {
		req, _ := http.NewRequest(http.MethodGet, nodes[node]+"/t/llm.demo"+path, nil)
		req.Header.Set(header, cred)
		return req
	}
	call := func(node, header, cred string) int {
		resp, err := client.Do(request(node, "/api/tags", header, cred))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	sse := func(node, header, cred string) *streamtest.Stream {
		s := streamtest.SSE(t, client, request(node, "/events?every=50ms", header, cred))
		s.Flowing(t, 2, 10*time.Second)
		return s
	}
	// let waits until both nodes answer the credential with status.
	let := func(what, header, cred string, status int) {
		for n := range nodes {
			poll.Until(t, 10*time.Second, what+" on node "+n, func() bool { return call(n, header, cred) == status })
		}
	}
	// revoked calls the API and returns when it answered; took says how long the call took (a
	// stream may end before the answer reaches the caller: the relay is that fast).
	var took time.Duration
	revoked := func(method, path string) time.Time {
		start := time.Now()
		api(method, path, nil)
		took = time.Since(start)
		return time.Now()
	}

	// A viewer's grant: an event stream through A, a WebSocket through B.
	api(http.MethodPost, "/api/v1/role-assignments", map[string]string{"org": "demo", "user_id": "vic", "role": "viewer"})
	g := api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/grants?org=demo", map[string]string{"user": "vic", "ttl": "1h"})
	vic := "Bearer " + mint("vic")
	let("the viewer's grant", "Authorization", vic, http.StatusOK)
	vicSSE := sse("A", "Authorization", vic)
	wsURL := "ws" + strings.TrimPrefix(nodeB.URL, "http") + "/t/llm.demo/ws/ticks?every=50ms"
	vicWS := streamtest.WebSocket(t, wsURL, http.Header{"Authorization": {vic}})
	vicWS.Flowing(t, 2, 10*time.Second)
	owner := sse("B", "Authorization", "Bearer "+d.UserToken)
	id, _ := g["id"].(string)
	at := revoked(http.MethodDelete, "/api/v1/tunnels/"+d.TunnelID+"/grants/"+id+"?org=demo&reason=done")
	sseAfter, wsAfter := vicSSE.EndsWithin(t, at, time.Second), vicWS.EndsWithin(t, at, time.Second)
	t.Logf("grant revoked: event stream on node A ended %v, WebSocket on node B %v after the API answered (the API took %v)", sseAfter, wsAfter, took)
	if _, code, err := vicWS.Ended(); code != 1008 {
		t.Fatalf("the WebSocket ended without close 1008: %d %v", code, err)
	}
	for n := range nodes {
		if s := call(n, "Authorization", vic); s != http.StatusForbidden {
			t.Fatalf("a new call on node %s after the revocation: %d", n, s)
		}
	}
	owner.Flowing(t, 3, 10*time.Second)

	// An access key's stream through B, the key revoked.
	issued := api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/access-keys?org=demo", map[string]any{"ttl": "1d"})
	secret, _ := issued["secret"].(string)
	keyID, _ := issued["id"].(string)
	let("the access key", "X-Tunnel-Key", secret, http.StatusOK)
	keySSE := sse("B", "X-Tunnel-Key", secret)
	at = revoked(http.MethodDelete, "/api/v1/access-keys/"+keyID+"?org=demo&reason=leaked")
	t.Logf("access key revoked: event stream on node B ended %v after the API answered (the API took %v)", keySSE.EndsWithin(t, at, time.Second), took)
	if s := call("B", "X-Tunnel-Key", secret); s != http.StatusUnauthorized {
		t.Fatalf("a new call with the revoked key: %d", s)
	}

	// An admin's stream through A, the role withdrawn.
	api(http.MethodPost, "/api/v1/role-assignments", map[string]string{"org": "demo", "user_id": "ada", "role": "admin"})
	ada := "Bearer " + mint("ada")
	let("the admin's role", "Authorization", ada, http.StatusOK)
	adaSSE := sse("A", "Authorization", ada)
	at = revoked(http.MethodDelete, "/api/v1/role-assignments/ada/admin?org=demo")
	t.Logf("role withdrawn: event stream on node A ended %v after the API answered (the API took %v)", adaSSE.EndsWithin(t, at, time.Second), took)
	owner.Flowing(t, 3, 10*time.Second)

	// A user deleted: gus, a viewer let in by a grant to the group "ml" his token names (which the
	// deletion leaves alone), holds an event stream through A and a WebSocket through B.
	api(http.MethodPost, "/api/v1/role-assignments", map[string]string{"org": "demo", "user_id": "gus", "role": "viewer"})
	api(http.MethodPost, "/api/v1/tunnels/"+d.TunnelID+"/grants?org=demo", map[string]string{"group": "ml", "ttl": "1h"})
	gusRaw, err := token.MintUserInGroups(sv.CP.Service.TokenKey(), token.DefaultIssuer, "gus", "", []string{"ml"}, time.Hour, time.Now().Add(-2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	gus := "Bearer " + gusRaw
	let("the group grant", "Authorization", gus, http.StatusOK)
	gusSSE := sse("A", "Authorization", gus)
	gusWS := streamtest.WebSocket(t, wsURL, http.Header{"Authorization": {gus}})
	gusWS.Flowing(t, 2, 10*time.Second)
	at = revoked(http.MethodDelete, "/api/v1/users/gus?org=demo&reason=left+the+team")
	sseAfter, wsAfter = gusSSE.EndsWithin(t, at, time.Second), gusWS.EndsWithin(t, at, time.Second)
	t.Logf("user deleted: event stream on node A ended %v, WebSocket on node B %v after the API answered (the API took %v)", sseAfter, wsAfter, took)
	for n := range nodes {
		if s := call(n, "Authorization", gus); s != http.StatusUnauthorized {
			t.Fatalf("a new call on node %s with the deleted user's earlier token: %d", n, s)
		}
	}
	owner.Flowing(t, 3, 10*time.Second)
}

// adminAPI calls the control plane's API with bearer and returns the JSON answer (nil for none);
// the test fails on a status of 300 or more.
func adminAPI(t *testing.T, client *http.Client, base, bearer string) func(method, path string, body any) map[string]any {
	return func(method, path string, body any) map[string]any {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if resp.StatusCode >= 300 || (len(b) > 0 && json.Unmarshal(b, &out) != nil) {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return out
	}
}
