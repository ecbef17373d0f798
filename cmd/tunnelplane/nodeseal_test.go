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
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/serveapp"
)

// A node seals its agent's address to the token issuer's sealing key before it signs
// agent.connected: the log and the agent_sessions read model hold only enc:x1 values, the
// sessions API shows the address, and once the issuer is erased it shows [erased] while the log
// still verifies.
func TestSystemAgentAddressIsSealedAndErased(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	sv, g := startTestServe(t)
	d := sv.Demo
	ctx := context.Background()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// The demo token's issue record names its issuer's sealing key.
	var issued domain.AgentTokenIssued
	recs, err := sv.CP.Log.Store.ReadStream(ctx, domain.AgentTokenStream(d.AgentTokenID), 1, 10)
	if err != nil || len(recs) == 0 || json.Unmarshal(recs[0].Payload, &issued) != nil {
		t.Fatalf("agent_token.issued: %v", err)
	}
	if issued.IssuedBy != serveapp.Actor || issued.SealKey == "" || issued.SealGen < 1 {
		t.Fatalf("agent_token.issued without the issuer's sealing key: %+v", issued)
	}

	// agent.connected, as the node signed it, holds the address sealed, never in plaintext.
	var connected string
	poll.Until(t, 10*time.Second, "agent.connected stored", func() bool {
		for _, r := range nodeFacts(t, sv) {
			if r.Type == domain.TypeAgentConnected {
				connected = string(r.Payload)
				return true
			}
		}
		return false
	})
	if !strings.Contains(connected, `"remote_addr":"enc:x1:`) || strings.Contains(connected, "127.0.0.1") {
		t.Fatalf("agent.connected: %s", connected)
	}
	super := pgtest.SuperPool(t, g.databaseURL)
	var stored, model string
	if err := super.QueryRow(ctx, `SELECT convert_from(payload, 'UTF8') || payload_json::text FROM events WHERE type = $1 LIMIT 1`, domain.TypeAgentConnected).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stored, `"enc:x1:`) || strings.Contains(stored, "127.0.0.1") {
		t.Fatalf("the events table holds agent.connected as %s", stored)
	}

	// The sessions API opens it; the read model keeps it sealed.
	var live []api.AgentSession
	poll.Until(t, 10*time.Second, "the session listed", func() bool {
		live = apiSessions(t, client, sv, d.UserToken)
		return len(live) >= 1
	})
	if !strings.HasPrefix(live[len(live)-1].RemoteAddr, "127.0.0.1:") {
		t.Fatalf("the sessions API shows the address as %q", live[len(live)-1].RemoteAddr)
	}
	if err := super.QueryRow(ctx, `SELECT remote_addr FROM agent_sessions ORDER BY connected_at LIMIT 1`).Scan(&model); err != nil || !strings.HasPrefix(model, "enc:x1:") {
		t.Fatalf("agent_sessions holds remote_addr %q (%v)", model, err)
	}

	// Erasing the issuer reaches the node's fact.
	sys := commands.WithActor(ctx, commands.Actor{ID: serveapp.Actor})
	if _, err := sv.CP.Service.Handlers.EraseSubject.Handle(sys, commands.EraseSubject{Subject: serveapp.Actor, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range apiSessions(t, client, sv, d.UserToken) {
		if s.RemoteAddr != "[erased]" {
			t.Fatalf("after erasing the issuer the sessions API shows %q", s.RemoteAddr)
		}
	}
	rep, err := eventstore.Verify(ctx, sv.CP.Log.Pool, eventstore.VerifyOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Failure)
	}
}
