package controlapp_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/projections"
)

// Two control plane replicas on one database, each with its own data dir, given the same
// key-encryption key: they start together on an empty database and agree on one log key; a log
// key rotated through one leaves the other appending (with the new key), and a token key rotated
// through one is the key the other mints with. The keys are in the database, not the data dirs.
func TestReplicasShareTheirKeys(t *testing.T) {
	t.Parallel()
	db := pgtest.NewEmptyDatabase(t)
	kekFile := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(kekFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apps := make([]*controlapp.App, 2)
	dirs := []string{t.TempDir(), t.TempDir()}
	errs := make(chan error, 2)
	for i := range apps {
		a, err := controlapp.New(controlapp.Config{DatabaseURL: db, DataDir: dirs[i], KEKFile: kekFile, APIAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Close)
		apps[i] = a
		go func() { errs <- a.Start(ctxT(t)) }()
	}
	for range apps {
		if err := <-errs; err != nil {
			t.Fatalf("start: %v", err)
		}
	}
	a, b := apps[0], apps[1]
	ctx := ctxT(t)
	for _, dir := range dirs {
		if ids, err := controlapp.LogKeys(dir).IDs(); err != nil || len(ids) != 0 {
			t.Fatalf("a data dir holds log keys %v (%v)", ids, err)
		}
	}

	sys := commands.WithActor(context.Background(), commands.Actor{ID: "root"})
	grant, err := a.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin})
	if err != nil {
		t.Fatal(err)
	}
	// Each replica's role view applies what either wrote in its own time.
	applied := func(pos uint64) {
		t.Helper()
		for _, app := range apps {
			if err := app.Runner.WaitFor(ctx, pos, projections.RoleAssignments); err != nil {
				t.Fatal(err)
			}
		}
	}
	applied(grant.Position)
	rot, err := a.Service.Handlers.RotateSigningKey.Handle(sys, commands.RotateSigningKey{Purpose: "log"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Service.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "after-rotation", Owner: "alice"})
	if err != nil {
		t.Fatalf("the other replica after a log key rotation: %v", err)
	}
	recs, err := b.Log.Store.ReadAll(ctx, res.Position, 1)
	if err != nil || len(recs) != 1 || recs[0].KeyID != rot.ID {
		t.Fatalf("signed by %v, want the rotated key %s (%v)", recs, rot.ID, err)
	}

	tok, err := a.Service.Handlers.RotateSigningKey.Handle(sys, commands.RotateSigningKey{Purpose: "token"})
	if err != nil {
		t.Fatal(err)
	}
	org := res.ID
	// The other replica's views apply the new organization's owner in their own time.
	var tun commands.Result
	poll.Until(t, 10*time.Second, "alice may create a tunnel in her new organization", func() bool {
		tun, err = b.Service.Handlers.CreateTunnel.Handle(commands.WithActor(context.Background(), commands.Actor{ID: "alice"}),
			commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:11434"})
		return err == nil
	})
	if _, err := b.Service.Handlers.IssueAgentToken.Handle(commands.WithActor(context.Background(), commands.Actor{ID: "alice"}),
		commands.IssueAgentToken{OrgID: org, TunnelID: tun.ID, TTL: time.Hour}); err != nil {
		t.Fatalf("the other replica mints after a token key rotation: %v", err)
	}
	if got := b.Service.TokenKey(); got == nil || got.ID() != tok.ID {
		t.Fatalf("the other replica mints with %s, want the rotated token key %s", got.ID(), tok.ID)
	}
	// Two log keys, two token keys (the replicas agreed on one at start), one subjects' KEK, one
	// SIEM secrets key.
	var logKeys, tokenKeys, others int
	if err := b.Log.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE purpose = 'log'), count(*) FILTER (WHERE purpose = 'token'),
		count(*) FILTER (WHERE purpose IN ('subjects-kek', 'siem') AND key_id = 'key') FROM control_keys`).Scan(&logKeys, &tokenKeys, &others); err != nil {
		t.Fatal(err)
	}
	if logKeys != 2 || tokenKeys != 2 || others != 2 {
		t.Fatalf("control_keys holds %d log keys, %d token keys, %d others", logKeys, tokenKeys, others)
	}
}

// A replica without the key-encryption key file does not start: one that made its own would
// share nothing.
func TestAMissingKeyEncryptionKeyFileIsRefused(t *testing.T) {
	t.Parallel()
	a, err := controlapp.New(controlapp.Config{DatabaseURL: pgtest.NewEmptyDatabase(t), DataDir: t.TempDir(),
		KEKFile: filepath.Join(t.TempDir(), "missing"), APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	err = a.Start(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "openssl rand -hex 32") {
		t.Fatalf("start: %v", err)
	}
}
