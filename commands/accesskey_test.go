package commands_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
)

func TestAccessKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	tun, err := h.svc.Handlers.CreateTunnel.Handle(as("alice"), commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := commands.WithIdempotencyKey(as("alice"), "key-1")
	issue := commands.IssueAccessKey{OrgID: org, TunnelID: tun.ID, TTL: 30 * 24 * time.Hour, CIDRs: []string{"10.0.0.0/8"}, RateTier: "free"}
	k, err := h.svc.Handlers.IssueAccessKey.Handle(ctx, issue)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Secret, domain.AccessKeyPrefix) || k.ExpiresAt == nil || k.Token != "" {
		t.Fatalf("issued %+v", k)
	}
	// The log holds the hash and never the secret.
	recs, err := h.store.ReadStream(context.Background(), domain.AccessKeyStream(k.ID), 1, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("stream: %d records, %v", len(recs), err)
	}
	if bytes.Contains(recs[0].Payload, []byte(k.Secret)) || bytes.Contains(recs[0].Metadata, []byte(k.Secret)) {
		t.Fatal("the log holds the secret")
	}
	e, _ := domain.Decode(recs[0].Type, recs[0].Payload)
	ev := e.(*domain.AccessKeyIssued)
	if ev.SecretHash != domain.HashAccessKey(k.Secret) || ev.TunnelID != tun.ID || ev.IssuedBy != "alice" || ev.RateTier != "free" ||
		len(ev.CIDRs) != 1 || !ev.ExpiresAt.Equal(*k.ExpiresAt) || ev.DerivedFrom != h.svc.TokenKey().ID() || ev.DerivedFrom != k.KeyID {
		t.Fatalf("event %+v", ev)
	}
	// A replay (a client that lost the first answer) shows the same secret, and appends nothing.
	head, _ := h.store.Head(context.Background())
	again, err := h.svc.Handlers.IssueAccessKey.Handle(ctx, issue)
	if err != nil || again.Secret != k.Secret || again.ID != k.ID {
		t.Fatalf("replay: %+v %v", again, err)
	}
	if h2, _ := h.store.Head(context.Background()); h2 != head {
		t.Fatal("the replay appended")
	}
	other, err := h.svc.Handlers.IssueAccessKey.Handle(as("alice"), issue)
	if err != nil || other.Secret == k.Secret || other.ID == k.ID {
		t.Fatalf("a second key: %+v %v", other, err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(as("alice"), commands.IssueAccessKey{OrgID: org, TunnelID: tun.ID, TTL: time.Hour,
		CIDRs: []string{"not-a-cidr"}}); !errors.Is(err, domain.ErrValidation) {
		t.Fatalf("bad cidr: %v", err)
	}

	// An operator holds access_keys:issue but may not use alice's tunnel: no key for it, and no
	// revoking one. A viewer may not issue at all.
	for user, role := range map[string]domain.Role{"bob": domain.RoleOperator, "vic": domain.RoleViewer} {
		if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: user, Role: role}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.svc.Handlers.IssueAccessKey.Handle(as(user), issue); !errors.Is(err, commands.ErrForbidden) {
			t.Fatalf("%s issues a key for alice's tunnel: %v", role, err)
		}
		if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as(user), commands.RevokeAccessKey{OrgID: org, KeyID: k.ID}); !errors.Is(err, commands.ErrForbidden) {
			t.Fatalf("%s revokes a key of alice's tunnel: %v", role, err)
		}
	}
	// bob may for his own tunnel.
	own, err := h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "bobs", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.IssueAccessKey.Handle(as("bob"), commands.IssueAccessKey{OrgID: org, TunnelID: own.ID, TTL: time.Hour}); err != nil {
		t.Fatalf("operator, own tunnel: %v", err)
	}

	// Another organization's id finds nothing; revoking twice is refused.
	orgB, err := h.svc.Handlers.CreateOrganization.Handle(as("root"), commands.CreateOrganization{Name: "other", Owner: "olga"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as("olga"), commands.RevokeAccessKey{OrgID: orgB.ID, KeyID: k.ID}); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("revoke through another org: %v", err)
	}
	if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as("alice"), commands.RevokeAccessKey{OrgID: org, KeyID: k.ID, Reason: "leaked"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.RevokeAccessKey.Handle(as("alice"), commands.RevokeAccessKey{OrgID: org, KeyID: k.ID}); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("revoke twice: %v", err)
	}
}
