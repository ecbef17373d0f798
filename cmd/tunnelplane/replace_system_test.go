package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/dataplane/agent"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// An agent with another token takes the demo tunnel over only with --replace, and the takeover
// shows where operators look: the old session's end in the sessions list, and agent.replaced in
// the audit.
func TestSystemAgentReplacementIsRecorded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, _ := startTestServe(t)
	d := sv.Demo
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	var old []api.AgentSession
	poll.Until(t, 10*time.Second, "the demo agent's session listed", func() bool {
		old = apiSessions(t, client, sv, d.UserToken)
		return len(old) == 1 && old[0].State == "connected"
	})
	ctx := context.Background()
	tok, err := sv.CP.Service.Handlers.IssueAgentToken.Handle(commands.WithActor(ctx, commands.Actor{ID: "demo"}),
		commands.IssueAgentToken{OrgID: d.OrgID, TunnelID: d.TunnelID, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sv.Node.View.WaitFor(wctx, tok.Position); err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		agent.Run(actx, agent.Config{NodeURL: sv.Node.URL + "/v1/agent", Token: tok.Token, Upstream: d.UpstreamURL,
			HostKeyFingerprint: sv.Node.Fingerprint, Replace: true, MinBackoff: 20 * time.Millisecond})
	}()
	defer func() { stop(); <-done }()

	var sessions []api.AgentSession
	poll.Until(t, 15*time.Second, "the old session ended as replaced, the new one connected", func() bool {
		sessions = apiSessions(t, client, sv, d.UserToken)
		var ended, live bool
		for _, s := range sessions {
			ended = ended || (s.ID == old[0].ID && s.EndReason != nil && strings.Contains(*s.EndReason, "--replace"))
			live = live || (s.ID != old[0].ID && s.State == "connected")
		}
		return ended && live
	})

	req, _ := http.NewRequest(http.MethodGet, sv.CP.URL+"/api/v1/audit?org=demo&type="+domain.TypeAgentReplaced+"&wait_for=latest", nil)
	req.Header.Set("Authorization", "Bearer "+d.UserToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l api.List[api.AuditEntry]
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&l) != nil {
		t.Fatalf("audit search: %d", resp.StatusCode)
	}
	if len(l.Items) != 1 || l.Items[0].Actor == nil || *l.Items[0].Actor != "node:"+sv.Node.ID.ID {
		t.Fatalf("agent.replaced in the audit: %+v (sessions %+v)", l.Items, sessions)
	}
}
