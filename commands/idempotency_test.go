package commands_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A process that dies after its command's events committed, before it said so: a retry with the
// same key gets the original answer at once (same tunnel, nothing appended again). An agent
// token's retry re-mints the same token.
func TestIdempotentRetryAfterACrashAfterTheCommit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	crash := true
	commands.SetCrashHook(h.svc, func(stage string) bool { return stage == "handled" && crash })
	ctx := commands.WithIdempotencyKey(as("alice"), "create-llm")
	cmd := commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(ctx, cmd); err == nil {
		t.Fatal("the crash hook did not stop the command")
	}
	head, _ := h.store.Head(context.Background())
	crash = false
	res, err := h.svc.Handlers.CreateTunnel.Handle(ctx, cmd)
	if err != nil {
		t.Fatalf("retry after the crash: %v", err)
	}
	if res.ID == "" || res.Position != head-1 || res.Version != 1 {
		t.Fatalf("retry answered %+v, want the committed tunnel at position %d", res, head-1)
	}
	if h2, _ := h.store.Head(context.Background()); h2 != head {
		t.Fatalf("the retry appended %d records", h2-head)
	}

	crash = true
	tctx := commands.WithIdempotencyKey(as("alice"), "token-1")
	tcmd := commands.IssueAgentToken{OrgID: org, TunnelID: res.ID, TTL: time.Hour}
	if _, err := h.svc.Handlers.IssueAgentToken.Handle(tctx, tcmd); err == nil {
		t.Fatal("the crash hook did not stop the token command")
	}
	crash = false
	t1, err := h.svc.Handlers.IssueAgentToken.Handle(tctx, tcmd)
	if err != nil || t1.Token == "" {
		t.Fatalf("token retry after the crash: %+v %v", t1, err)
	}
	t2, err := h.svc.Handlers.IssueAgentToken.Handle(tctx, tcmd)
	if err != nil || t2.Token != t1.Token || t2.ID != t1.ID {
		t.Fatalf("token replays differ: %v\n%q\n%q", err, t1.Token, t2.Token)
	}
}

// A process that dies after claiming the key, before its events: a retry during the claim's
// lease gets ErrInProgress saying how long to wait (at most the lease), and a retry after that
// runs the command.
func TestIdempotentRetryAfterACrashBeforeTheCommit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	crash := true
	commands.SetCrashHook(h.svc, func(stage string) bool { return stage == "claimed" && crash })
	ctx := commands.WithIdempotencyKey(as("alice"), "create-llm")
	cmd := commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"}
	crashed := time.Now()
	if _, err := h.svc.Handlers.CreateTunnel.Handle(ctx, cmd); err == nil {
		t.Fatal("the crash hook did not stop the command")
	}
	crash = false
	head, _ := h.store.Head(context.Background())
	_, err := h.svc.Handlers.CreateTunnel.Handle(ctx, cmd)
	var ip *commands.InProgressError
	if !errors.Is(err, commands.ErrInProgress) || !errors.As(err, &ip) || ip.RetryAfter <= 0 || ip.RetryAfter > commands.IdempotencyLease {
		t.Fatalf("retry during the lease: %v, want ErrInProgress with 0 < RetryAfter <= %s", err, commands.IdempotencyLease)
	}
	var res commands.Result
	poll.Until(t, commands.IdempotencyLease+5*time.Second, "the retry runs once the lease expired", func() bool {
		res, err = h.svc.Handlers.CreateTunnel.Handle(ctx, cmd)
		if err != nil && !errors.Is(err, commands.ErrInProgress) {
			t.Fatalf("retry: %v", err)
		}
		return err == nil
	})
	if took := time.Since(crashed); took > commands.IdempotencyLease+time.Second {
		t.Errorf("the retry ran %s after the crash, want at most the lease (%s)", took, commands.IdempotencyLease)
	}
	if res.ID == "" || res.Position < head {
		t.Fatalf("the retry did not run the command: %+v (head was %d)", res, head)
	}
}
