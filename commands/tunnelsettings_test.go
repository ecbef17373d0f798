package commands_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

// lastTunnelEvent is the newest event of a tunnel's stream, decoded.
func lastTunnelEvent(t *testing.T, h *harness, tunnelID string) domain.Event {
	t.Helper()
	recs, err := h.store.ReadStream(context.Background(), domain.TunnelStream(tunnelID), 1, 100)
	if err != nil || len(recs) == 0 {
		t.Fatalf("tunnel stream: %d records, %v", len(recs), err)
	}
	e, err := domain.Decode(recs[len(recs)-1].Type, recs[len(recs)-1].Payload)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A tunnel's labels (at create and update) and CORS setting are validated and recorded in the
// log; changing them takes the right to share, which an editor lacks.
func TestTunnelLabelsAndCORSCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1",
		Labels: map[string]string{"team": "ml"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := lastTunnelEvent(t, h, tun.ID).(*domain.TunnelCreated); c.Labels["team"] != "ml" {
		t.Fatalf("created %+v", c)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "bad", Upstream: "http://127.0.0.1:1",
		Labels: map[string]string{"Team": "ml"}}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("bad label: %v", err)
	}
	cors := &domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{"https://App.example.com:443", "http://localhost:5173"}}
	labels := &map[string]string{"team": "ml", "env": "dev"}
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("alice"), commands.UpdateTunnel{OrgID: org, TunnelID: tun.ID, CORS: cors, Labels: labels}); err != nil {
		t.Fatal(err)
	}
	u := lastTunnelEvent(t, h, tun.ID).(*domain.TunnelUpdated)
	if u.CORS == nil || u.CORS.Mode != domain.CORSOrigins || len(u.CORS.Origins) != 2 || u.CORS.Origins[0] != "http://localhost:5173" ||
		u.CORS.Origins[1] != "https://app.example.com" || u.Labels == nil || (*u.Labels)["env"] != "dev" || u.Name != nil {
		t.Fatalf("updated %+v", u)
	}
	for name, c := range map[string]commands.UpdateTunnel{
		"an origin with a path":       {CORS: &domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{"https://a.example/app"}}},
		"a wildcard origin":           {CORS: &domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{"*"}}},
		"an unknown mode":             {CORS: &domain.TunnelCORS{Mode: "all"}},
		"origins in passthrough mode": {CORS: &domain.TunnelCORS{Mode: domain.CORSPassthrough, Origins: []string{"https://a.example"}}},
		"a bad label":                 {Labels: &map[string]string{"team": "ML"}},
	} {
		c.OrgID, c.TunnelID = org, tun.ID
		if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("alice"), c); !errors.Is(err, domain.ErrValidation) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// An editor may rename, not relabel nor open the tunnel to other sites.
	if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: "eddie", Role: domain.RoleEditor}); err != nil {
		t.Fatal(err)
	}
	pass := &domain.TunnelCORS{Mode: domain.CORSPassthrough}
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("eddie"), commands.UpdateTunnel{OrgID: org, TunnelID: tun.ID, CORS: pass}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an editor sets CORS: %v", err)
	}
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("eddie"), commands.UpdateTunnel{OrgID: org, TunnelID: tun.ID, Labels: &map[string]string{}}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an editor relabels: %v", err)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(as("eddie"), commands.CreateTunnel{OrgID: org, Name: "eds", Upstream: "http://127.0.0.1:1",
		Labels: map[string]string{"team": "ml"}}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an editor creates a labelled tunnel: %v", err)
	}
	name := "llm-2"
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("eddie"), commands.UpdateTunnel{OrgID: org, TunnelID: tun.ID, Name: &name, Labels: labels}); err != nil {
		t.Fatalf("an editor renames (same labels): %v", err)
	}
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(as("alice"), commands.UpdateTunnel{OrgID: org, TunnelID: tun.ID, CORS: pass}); err != nil {
		t.Fatal(err)
	}
	if u := lastTunnelEvent(t, h, tun.ID).(*domain.TunnelUpdated); u.CORS == nil || u.CORS.Mode != domain.CORSPassthrough || u.Labels != nil {
		t.Fatalf("passthrough recorded as %+v", u)
	}
}

// An access key scoped by a label selector is recorded with its selector and no tunnel; only who
// may use every tunnel of the organization (its owners and admins) may issue or revoke one.
func TestLabelAccessKeyCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	issue := commands.IssueAccessKey{OrgID: org, Selector: map[string]string{"team": "ml"}, TTL: 30 * 24 * time.Hour}
	k, err := h.svc.Handlers.IssueAccessKey.Handle(as("alice"), issue)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := h.store.ReadStream(context.Background(), domain.AccessKeyStream(k.ID), 1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("stream: %d records, %v", len(recs), err)
	}
	e, _ := domain.Decode(recs[0].Type, recs[0].Payload)
	if ev := e.(*domain.AccessKeyIssued); ev.TunnelID != "" || ev.Selector["team"] != "ml" || ev.OrgID != org {
		t.Fatalf("event %+v", ev)
	}
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(as("alice"), commands.IssueAccessKey{OrgID: org, TunnelID: tun.ID, Selector: issue.Selector, TTL: time.Hour}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a tunnel and a selector: %v", err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(as("alice"), commands.IssueAccessKey{OrgID: org, Selector: map[string]string{"team": "ML"}, TTL: time.Hour}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("a bad selector: %v", err)
	}
	// An operator issues keys for its own tunnels, not for whatever gets labelled later.
	if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: "bob", Role: domain.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(as("bob"), issue); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an operator issues a label key: %v", err)
	}
	if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as("bob"), commands.RevokeAccessKey{OrgID: org, KeyID: k.ID}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("an operator revokes a label key: %v", err)
	}
	if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as("alice"), commands.RevokeAccessKey{OrgID: org, KeyID: k.ID, Reason: "done"}); err != nil {
		t.Fatal(err)
	}
}
