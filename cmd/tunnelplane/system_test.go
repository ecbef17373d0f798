package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// startTestServe runs the all-in-one server in-process with the demo, on free ports.
func startTestServe(t *testing.T, tweak ...func(*serveOptions)) (*serveapp.App, *globals) {
	t.Helper()
	g := &globals{databaseURL: pgtest.NewEmptyDatabase(t), dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if os.Getenv("TP_DEBUG") != "" {
		g.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	o := testServeOptions()
	for _, f := range tweak {
		f(&o)
	}
	sv, err := startServe(context.Background(), g, o)
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(sv.Close)
	return sv, g
}

func testServeOptions() serveOptions {
	o := serveOptions{nodeAddr: "127.0.0.1:0", natsAddr: "127.0.0.1:0", baseDomain: "localhost", nodeName: "node-1", demo: true, demoDelay: time.Millisecond}
	o.cp.APIAddr = "127.0.0.1:0"
	return o
}

// A second start on the same data dir and database (make run twice) picks up where the first
// left off: same log, node re-enrolled, demo tunnel pointed at the new upstream.
func TestServeRestartsOnTheSameDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, g := startTestServe(t)
	nodeID, tunnelID := sv.Node.ID.ID, sv.Demo.TunnelID
	if sv.Node.RestoredAt() != -1 {
		t.Fatalf("a first start restored its view at %d", sv.Node.RestoredAt())
	}
	sv.Close()
	// Stopping saved the node's view; the next start begins from it and replays only the rest.
	snap, err := os.ReadFile(filepath.Join(g.dataDir, "node", "view.json"))
	if err != nil {
		t.Fatal(err)
	}
	var saved struct{ Position int64 }
	if err := json.Unmarshal(snap, &saved); err != nil || saved.Position < 1 {
		t.Fatalf("view snapshot: %v, position %d", err, saved.Position)
	}
	sv2 := restartServe(t, g, "second start", saved.Position)
	if sv2.Node.ID.ID != nodeID || sv2.Demo.TunnelID != tunnelID {
		t.Fatalf("node %s→%s, tunnel %s→%s", nodeID, sv2.Node.ID.ID, tunnelID, sv2.Demo.TunnelID)
	}
	generate(t, sv2, "again")
	// The first run's demo agent token was revoked when the second issued its own.
	tokens := demoTokenStates(t, sv2)
	if tokens[sv.Demo.AgentTokenID] != "revoked" || tokens[sv2.Demo.AgentTokenID] != "active" {
		t.Fatalf("demo agent tokens after a restart: %v (first %s, second %s)", tokens, sv.Demo.AgentTokenID, sv2.Demo.AgentTokenID)
	}
	resp, err := http.Get(sv2.Node.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The snapshot is saved again once the view has caught up, so it may be ahead of the one read.
	now := sv2.Node.View.Position()
	for name, want := range map[string][2]int64{"tunnelplane_node_view_ready": {1, 1},
		"tunnelplane_node_view_position": {saved.Position, now}, "tunnelplane_node_view_snapshot_position": {saved.Position, now}} {
		if v, ok := gauge(string(metrics), name); !ok || v < want[0] || v > want[1] {
			t.Errorf("%s = %d (found %v), want %d to %d", name, v, ok, want[0], want[1])
		}
	}
	sv2.Close()

	// A snapshot whose last event is not the one the log has at that position (a database
	// restored from a backup reuses positions) is not used either.
	path := filepath.Join(g.dataDir, "node", "view.json")
	snap, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(snap, &doc); err != nil || doc["event_id"] == "" {
		t.Fatalf("view snapshot: %v, event id %v", err, doc["event_id"])
	}
	doc["event_id"] = "01a21bd8-0000-7000-8000-000000000000"
	snap, _ = json.Marshal(doc)
	if err := os.WriteFile(path, snap, 0o600); err != nil {
		t.Fatal(err)
	}
	sv2 = restartServe(t, g, "a snapshot naming another event", -1)
	generate(t, sv2, "replayed")
	sv2.Close()

	// The same data dir against another database (another log): the snapshot must not be used,
	// or the node would skip the new log's first events and know neither keys nor tunnels.
	g.databaseURL = pgtest.NewEmptyDatabase(t)
	generate(t, restartServe(t, g, "another database", -1), "fresh")
}

// restartServe starts serve again on g and checks the position its node's view was restored at
// (-1: the snapshot was not used).
func restartServe(t *testing.T, g *globals, what string, restoredAt int64) *serveapp.App {
	t.Helper()
	sv, err := startServe(context.Background(), g, testServeOptions())
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(sv.Close)
	if sv.Node.RestoredAt() != restoredAt {
		t.Fatalf("%s: the view was restored at %d, want %d", what, sv.Node.RestoredAt(), restoredAt)
	}
	return sv
}

// gauge reads an integer sample without labels from Prometheus text.
func gauge(metrics, name string) (int64, bool) {
	i := strings.Index(metrics, "\n"+name+" ")
	if i < 0 {
		return 0, false
	}
	var v int64
	_, err := fmt.Sscan(metrics[i+len(name)+2:], &v)
	return v, err == nil
}

// generate asks the demo model through the node and expects its answer to the prompt.
func generate(t *testing.T, sv *serveapp.App, prompt string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, sv.Node.URL+"/t/llm.demo/api/generate", strings.NewReader(`{"prompt":"`+prompt+`"}`))
	req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	first := strings.Fields(demo.CannedAnswer(prompt))[0]
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"response":"`+first+` "`) {
		t.Fatalf("%q: %d %s", prompt, resp.StatusCode, body)
	}
}

// demoTokenStates lists the demo tunnel's agent tokens, id → state, through the API.
func demoTokenStates(t *testing.T, sv *serveapp.App) map[string]string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, sv.CP.URL+"/api/v1/tokens?org=demo&state=all&wait_for=latest", nil)
	req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct{ ID, State string } `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tokens: %d %v", resp.StatusCode, err)
	}
	out := map[string]string{}
	for _, it := range list.Items {
		out[it.ID] = it.State
	}
	return out
}

// nodeFacts reads the node's signed facts from the log.
func nodeFacts(t *testing.T, sv *serveapp.App) []eventstore.Record {
	t.Helper()
	recs, err := sv.CP.Log.Store.ReadStream(context.Background(), domain.NodeFactsStream(sv.Node.ID.ID), 1, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Deleting a tunnel disconnects its agent at once, the node reports it as a signed event that the
// control plane stores, and the whole log still verifies.
func TestSystemTunnelDeletionDisconnectsTheAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, sv.Node.URL+"/t/llm.demo/api/generate", strings.NewReader(`{"prompt":"a b c"}`))
	req.Header.Set("Authorization", "Bearer "+d.UserToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"done":true`) {
		t.Fatalf("through the tunnel: %d %s", resp.StatusCode, body)
	}
	poll.Until(t, 10*time.Second, "AgentConnected stored", func() bool {
		for _, r := range nodeFacts(t, sv) {
			if r.Type == domain.TypeAgentConnected && r.KeyID == sv.Node.ID.EventKey.ID() {
				return true
			}
		}
		return false
	})

	// The control plane shows the session the node reported, and the tunnel as having an agent.
	var live []api.AgentSession
	poll.Until(t, 10*time.Second, "the session listed as connected", func() bool {
		live = apiSessions(t, client, sv, d.UserToken)
		return len(live) == 1 && live[0].State == "connected"
	})
	if s := live[0]; s.NodeID != sv.Node.ID.ID || s.TunnelID != d.TunnelID || s.KEX != "mlkem768x25519-sha256" || s.Cipher != "aes128-gcm@openssh.com" ||
		s.Protocol != "tunnelplane.v2" || s.EndedAt != nil {
		t.Fatalf("connected session: %+v", s)
	}

	del, err := sv.CP.Service.Handlers.DeleteTunnel.Handle(commands.WithActor(context.Background(), commands.Actor{ID: "demo"}),
		commands.DeleteTunnel{OrgID: d.OrgID, TunnelID: d.TunnelID, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	poll.Until(t, 5*time.Second, "agent disconnected after the tunnel was deleted", func() bool { return len(sv.Node.Node.Sessions()) == 0 })
	t.Logf("agent disconnected %s after the deletion (position %d)", time.Since(start), del.Position)
	var reason string
	poll.Until(t, 10*time.Second, "AgentDisconnected stored", func() bool {
		for _, r := range nodeFacts(t, sv) {
			if r.Type == domain.TypeAgentDisconnected {
				var p domain.AgentDisconnected
				_ = json.Unmarshal(r.Payload, &p)
				reason = p.Reason
				return p.TunnelID == d.TunnelID
			}
		}
		return false
	})
	if !strings.Contains(reason, "deleted") {
		t.Fatalf("disconnect reason %q", reason)
	}
	var ended []api.AgentSession
	poll.Until(t, 10*time.Second, "the session listed as ended", func() bool {
		ended = apiSessions(t, client, sv, d.UserToken)
		return len(ended) == 1 && ended[0].State == "ended"
	})
	if s := ended[0]; s.ID != live[0].ID || s.EndReason == nil || *s.EndReason != reason || s.BytesIn == nil || *s.BytesIn == 0 || *s.BytesOut == 0 {
		t.Fatalf("ended session: %+v", s)
	}
	// The deleted tunnel no longer answers; its agent cannot come back.
	req, _ = http.NewRequest(http.MethodGet, sv.Node.URL+"/t/llm.demo/healthz", nil)
	req.Header.Set("Authorization", "Bearer "+d.UserToken)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("deleted tunnel answered %d", resp.StatusCode)
	}
	rep, err := eventstore.Verify(context.Background(), sv.CP.Log.Pool, eventstore.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Failure)
	}
}

// apiSessions lists the demo organization's agent sessions through the admin API.
func apiSessions(t *testing.T, client *http.Client, sv *serveapp.App, token string) []api.AgentSession {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, sv.CP.URL+"/api/v1/sessions?org=demo&wait_for=latest", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l api.List[api.AgentSession]
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&l) != nil {
		t.Fatalf("list sessions: %d", resp.StatusCode)
	}
	return l.Items
}

// Revoking the agent's token disconnects it within a second, the node reports why, and the
// control plane's node list shows the node as live from its heartbeats.
func TestSystemTokenRevocationAndLiveNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, g := startTestServe(t)
	d := sv.Demo
	root := lastLine(tp(t, "admin", "token", "create", "--user", "root", "--role", "superadmin", "--database-url", g.databaseURL, "--data-dir", g.dataDir).stdout)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	var nodes struct {
		Items []struct {
			ID   string `json:"id"`
			Live *bool  `json:"live"`
		} `json:"items"`
	}
	poll.Until(t, 10*time.Second, "the node listed as live", func() bool {
		req, _ := http.NewRequest(http.MethodGet, sv.CP.URL+"/api/v1/nodes?wait_for=latest", nil)
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&nodes) != nil || len(nodes.Items) != 1 {
			return false
		}
		return nodes.Items[0].ID == sv.Node.ID.ID && nodes.Items[0].Live != nil && *nodes.Items[0].Live
	})

	var tokenID string
	if err := sv.CP.Log.Pool.QueryRow(context.Background(), `SELECT token_id::text FROM agent_tokens WHERE tunnel_id = $1`, d.TunnelID).Scan(&tokenID); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.CP.Service.Handlers.RevokeAgentToken.Handle(commands.WithActor(context.Background(), commands.Actor{ID: "demo"}),
		commands.RevokeAgentToken{OrgID: d.OrgID, TokenID: tokenID, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	poll.Until(t, time.Second, "agent disconnected within a second of the revocation", func() bool { return len(sv.Node.Node.Sessions()) == 0 })
	t.Logf("disconnected %s after the revocation", time.Since(start))
	poll.Until(t, 10*time.Second, "AgentDisconnected (revoked) stored", func() bool {
		for _, r := range nodeFacts(t, sv) {
			var p domain.AgentDisconnected
			if r.Type == domain.TypeAgentDisconnected && json.Unmarshal(r.Payload, &p) == nil && strings.Contains(p.Reason, "revoked") {
				return true
			}
		}
		return false
	})
}

// A user whose role is withdrawn loses access through the node within a second or two, even
// though the node had cached the earlier authorization (for 5 s by default).
func TestSystemWithdrawnRoleEndsTunnelAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	owner := commands.WithActor(context.Background(), commands.Actor{ID: "demo"})
	if _, err := sv.CP.Service.Handlers.AssignRole.Handle(owner, commands.AssignRole{OrgID: d.OrgID, UserID: "carol", Role: domain.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	carol, err := token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, "carol", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	status := func() int {
		req, _ := http.NewRequest(http.MethodGet, sv.Node.URL+"/t/llm.demo/api/tags", nil)
		req.Header.Set("Authorization", "Bearer "+carol)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	poll.Until(t, 10*time.Second, "the node lets an org admin through", func() bool { return status() == http.StatusOK })
	if _, err := sv.CP.Service.Handlers.UnassignRole.Handle(owner, commands.UnassignRole{OrgID: d.OrgID, UserID: "carol", Role: domain.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Carol holds no role in the organization any more: its tunnels are unknown to her (404), as
	// to any outsider.
	poll.Until(t, 3*time.Second, "the withdrawn admin is refused", func() bool { return status() == http.StatusNotFound })
	t.Logf("refused %s after the role was withdrawn", time.Since(start))
}

// Whoever can publish on the cluster's NATS changes nothing a node decides: a token key and a
// superadmin grant published into TP_EVENTS are skipped (they are not the log's records), the
// node goes on with the genuine log after them, commands that name no decision of the log are
// refused, and the genuine drain command (the API's decision, relayed and sent) still runs.
func TestSystemForgedMessagesOnNATSChangeNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	ctx := context.Background()
	sv, _ := startTestServe(t)
	d := sv.Demo
	nc, err := nats.Connect(sv.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	last, err := controlbus.LastRelayedPosition(ctx, js, wire.Names{})
	if err != nil {
		t.Fatal(err)
	}
	origin, err := sv.CP.Log.Store.Origin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	forgedKey, _ := eventstore.GenerateSigningKey()
	forge := func(pos int64, stream, typ string, payload any) {
		t.Helper()
		p, _ := json.Marshal(payload)
		body, _ := json.Marshal(wire.RelayedEvent{Position: uint64(pos), StreamID: stream, StreamVersion: 99, EventID: uuid.Must(uuid.NewV7()),
			Type: typ, SchemaVersion: 1, RecordedAt: time.Now().UTC(), KeyID: forgedKey.ID(), Payload: p, Metadata: []byte(`{}`)})
		msg := &nats.Msg{Subject: wire.Names{}.EventSubject(typ), Data: body, Header: nats.Header{}}
		msg.Header.Set(wire.HeaderPosition, fmt.Sprint(pos))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	forge(last+1, eventstore.LogStream, eventstore.TypeKeyAdded, eventstore.NewKeyAdded(origin, eventstore.PurposeToken, "control-plane", forgedKey))
	forge(last+2, domain.RoleStream(domain.PlatformOrg, "mallory"), domain.TypeRoleAssigned,
		domain.RoleAssigned{OrgID: domain.PlatformOrg, UserID: "mallory", Role: domain.RoleSuperadmin})
	forge(1_000_000, "x", domain.TypeTunnelDeleted, domain.TunnelDeleted{TunnelID: d.TunnelID, OrgID: d.OrgID})
	if _, err := js.Publish(ctx, wire.Names{}.EventSubject("junk"), []byte("not json")); err != nil {
		t.Fatal(err)
	}

	// The genuine log goes on after them: the relay resumes after its own last message, the node
	// takes the next genuine record.
	root := commands.WithActor(ctx, commands.Actor{ID: "root"})
	if _, err := sv.CP.Service.GrantDirect(root, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	org, err := sv.CP.Service.Handlers.CreateOrganization.Handle(root,
		commands.CreateOrganization{Name: "after", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := sv.Node.View.WaitFor(wctx, org.Position); err != nil {
		t.Fatalf("the node did not go on with the genuine log after the forged messages: %v", err)
	}
	if sv.Node.SkippedRelayed() < 3 {
		t.Fatalf("skipped %d relayed messages, want at least 3", sv.Node.SkippedRelayed())
	}
	if metrics := scrape(t, sv.CP.URL+"/metrics"); !strings.Contains(metrics, "tunnelplane_node_relayed_skipped_total "+fmt.Sprint(sv.Node.SkippedRelayed())) {
		t.Fatalf("skipped messages not in the metrics")
	}
	// A genuine record copied and re-chained after the head (a withdrawn role granted again):
	// its envelope is signed, its chain hash recomputed, the head's checkpoint attached; it is
	// not the log's record there, and the node goes on with the log.
	demo := commands.WithActor(ctx, commands.Actor{ID: "demo"})
	grant, err := sv.CP.Service.Handlers.AssignRole.Handle(demo, commands.AssignRole{OrgID: d.OrgID, UserID: "carol", Role: domain.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	withdrawn, err := sv.CP.Service.Handlers.UnassignRole.Handle(demo, commands.UnassignRole{OrgID: d.OrgID, UserID: "carol", Role: domain.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Node.View.WaitFor(wctx, withdrawn.Position); err != nil {
		t.Fatal(err)
	}
	carol, err := token.MintUser(sv.CP.Service.TokenKey(), token.DefaultIssuer, "carol", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := viewAuthorize(sv, carol, route0(t, sv)); !refused(err) {
		t.Fatalf("carol after the withdrawal: %v", err)
	}
	recs, err := sv.CP.Log.Store.ReadAll(ctx, grant.Position, 1)
	if err != nil {
		t.Fatal(err)
	}
	headPos, _ := sv.CP.Log.Store.Head(ctx)
	prevRec, err := sv.CP.Log.Store.ReadAll(ctx, headPos-1, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, note, err := sv.CP.Log.Store.LatestCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	replay := recs[0]
	replay.Position, replay.PrevHash = headPos, prevRec[0].Hash
	h := replay.ChainHash()
	replay.Hash = h[:]
	env := eventstore.Envelope{EventID: replay.EventID, StreamID: replay.StreamID, Type: replay.Type, SchemaVersion: replay.StoredSchemaVersion,
		KeyID: replay.KeyID, Payload: replay.StoredPayload, Metadata: replay.Metadata}
	body, _ := json.Marshal(wire.RelayedEvent{Position: replay.Position, StreamID: replay.StreamID, StreamVersion: replay.StreamVersion,
		EventID: replay.EventID, Type: replay.Type, SchemaVersion: replay.SchemaVersion, RecordedAt: replay.RecordedAt, KeyID: replay.KeyID,
		Payload: replay.Payload, Metadata: replay.Metadata, Envelope: eventstore.AppendEnvelope(nil, &env), Signature: replay.Signature,
		SignatureProof: replay.SignatureProof, PrevHash: replay.PrevHash, Hash: replay.Hash, Checkpoint: note})
	msg := &nats.Msg{Subject: wire.Names{}.EventSubject(replay.Type), Data: body, Header: nats.Header{}}
	msg.Header.Set(wire.HeaderPosition, fmt.Sprint(replay.Position))
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	org2, err := sv.CP.Service.Handlers.CreateOrganization.Handle(root, commands.CreateOrganization{Name: "later", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.Node.View.WaitFor(wctx, org2.Position); err != nil {
		t.Fatalf("the node did not go on with the genuine log after the re-chained record: %v", err)
	}
	if err := viewAuthorize(sv, carol, route0(t, sv)); !refused(err) {
		t.Fatalf("carol after the re-chained grant: %v", err)
	}

	mallory, err := token.MintUser(forgedKey, token.DefaultIssuer, "mallory", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	route, ok := sv.Node.View.Resolve("llm.demo", node.Principal{})
	if !ok {
		t.Fatal("the forged deletion removed the demo tunnel")
	}
	if err := viewAuthorize(sv, mallory, route); !errors.Is(err, node.ErrUnauthenticated) {
		t.Fatalf("a token signed with a forged key: %v", err)
	}

	// Commands: one naming no decision of the log is refused; one whose id names a decision of
	// another kind too; one naming a genuine decision runs that decision, whatever it says.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := sv.Node.Resolve(short, wire.DisconnectAgent{CommandID: uuid.NewString(), TunnelID: d.TunnelID}); err == nil {
		t.Fatal("a command naming no decision was accepted")
	}
	drain, err := sv.CP.Service.Handlers.DrainNode.Handle(root, commands.DrainNode{NodeID: sv.Node.ID.ID})
	if err != nil {
		t.Fatal(err)
	}
	recs, err = sv.CP.Log.Store.ReadAll(ctx, drain.Position, 1)
	if err != nil || len(recs) != 1 {
		t.Fatal(err)
	}
	drainID := recs[0].EventID.String()
	if _, err := sv.Node.Resolve(ctx, wire.DisconnectAgent{CommandID: drainID, TunnelID: d.TunnelID}); err == nil {
		t.Fatal("a drain decision was taken for a disconnect")
	}
	if run, err := sv.Node.Resolve(ctx, wire.DrainNode{CommandID: drainID, NodeID: uuid.NewString()}); err != nil ||
		run != (wire.DrainNode{CommandID: drainID, NodeID: sv.Node.ID.ID}) {
		t.Fatalf("a drain naming the decision but another node resolved to %+v, %v", run, err)
	}
	// The reactor sends the genuine drain: the node lets its agent go.
	poll.Until(t, 15*time.Second, "the node drained", func() bool { return len(sv.Node.Node.Sessions()) == 0 })
	poll.Until(t, 10*time.Second, "node.drained reported", func() bool {
		for _, r := range nodeFacts(t, sv) {
			if r.Type == domain.TypeNodeDrained {
				return true
			}
		}
		return false
	})
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// viewAuthorize is what the node's ingress asks its view for a request with bearer.
func viewAuthorize(sv *serveapp.App, bearer string, r node.Route) error {
	p, err := sv.Node.View.AuthenticateCaller(context.Background(), bearer)
	if err != nil {
		return err
	}
	return sv.Node.View.AuthorizeIngress(context.Background(), p, r)
}

// refused reports a decision that keeps the caller out (403, or 404 for a caller who may not
// learn the tunnel exists).
func refused(err error) bool {
	return errors.Is(err, node.ErrForbidden) || errors.Is(err, node.ErrUnknownTunnel)
}

// route0 is the demo tunnel's route in the node's view.
func route0(t *testing.T, sv *serveapp.App) node.Route {
	t.Helper()
	r, ok := sv.Node.View.Resolve("llm.demo", node.Principal{})
	if !ok {
		t.Fatal("the demo tunnel does not resolve")
	}
	return r
}

// A node whose view stays behind what the control plane's log held a while ago (here: the relay
// stopped) refuses agents and callers until it catches up, instead of deciding on a view a
// revocation may have overtaken.
func TestSystemStaleViewRefusesUntilCaughtUp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	ctx := context.Background()
	g := &globals{databaseURL: pgtest.NewEmptyDatabase(t), dataDir: t.TempDir(), stdout: io.Discard, stderr: io.Discard,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o := testServeOptions()
	o.maxViewLag, o.lagSample = 200*time.Millisecond, 20*time.Millisecond
	sv, err := startServe(ctx, g, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Close)
	sv.CP.Bus.Relay.Stop()
	root := commands.WithActor(ctx, commands.Actor{ID: "root"})
	if _, err := sv.CP.Service.GrantDirect(root, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	org, err := sv.CP.Service.Handlers.CreateOrganization.Handle(root, commands.CreateOrganization{Name: "unrelayed", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the node refuses on a stale view", func() bool { return sv.Node.View.Ready() != nil })
	req, _ := http.NewRequest(http.MethodGet, sv.Node.URL+"/t/llm.demo/healthz", nil)
	req.Header.Set("Authorization", "Bearer "+sv.Demo.UserToken)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a call through a node with a stale view: %d", resp.StatusCode)
	}
	// A relay again: the node catches up and serves.
	nc, err := nats.Connect(sv.NATS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	relay, err := controlbus.NewRelay(controlbus.RelayConfig{Store: sv.CP.Log.Store, Conn: nc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Stop)
	wc, cancelWait := context.WithTimeout(ctx, 10*time.Second)
	defer cancelWait()
	if err := sv.Node.View.WaitFor(wc, org.Position); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "the node serves again", func() bool { return sv.Node.View.Ready() == nil })
}
