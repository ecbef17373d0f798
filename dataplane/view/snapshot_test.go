package view_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// decisions is what a view answers to a fixed set of questions: routes, ingress decisions for
// several users, agent tokens, as one comparable text.
func decisions(t *testing.T, v *view.View, tokens map[string]string, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	pos, id := v.Last()
	fmt.Fprintf(&b, "position %d %s\nkeys %d\n", pos, id, v.Keys().Len())
	refs := []string{tun, tun2, tun3, "llm.acme", "llm.globex", "llm", "chat.acme", "chat", "gone.acme", "nope"}
	for _, ref := range refs {
		for _, u := range []string{"alice", "carol", "vic", "zed", "dave"} {
			r, ok := v.Resolve(ref, node.Principal{UserID: u})
			cors := r.CORS
			r.CORS = nil // a pointer: printed by what it points to
			fmt.Fprintf(&b, "resolve %s for %s → %+v %v cors %+v\n", ref, u, r, ok, deref(cors))
			r.CORS = cors
			if ok {
				fmt.Fprintf(&b, "  %v\n", authorizeBearer(v, users[u], r))
			}
		}
	}
	for _, name := range []string{"revoked", "valid", "deleted", "oldkey", "revokedkey"} {
		a, err := v.AuthenticateAgent(context.Background(), tokens[name])
		fmt.Fprintf(&b, "agent %s: %+v %v\n", name, a, err)
	}
	for _, id := range []string{keyValid, keyCIDR, keyExpired, keyOther, keyLabel} {
		for _, addr := range []string{"10.0.0.1", "192.0.2.1"} {
			fmt.Fprintf(&b, "access key %s from %s: %v\n", id, addr, callWithKey(v, secretOf(id), tun, addr))
		}
	}
	return b.String()
}

const (
	tun3     = "0193f2a4-7c1e-7d3a-9b2e-000000000006"
	keyLabel = "0193f2a4-7c1e-7d3a-9b2e-0000000000a6"
)

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// A view restored from a snapshot answers every question as the view it was taken of, and both
// go on alike as further events arrive; a snapshot of another log, issuer or format is refused.
func TestSnapshotRestoresTheSameView(t *testing.T) {
	t.Parallel()
	v := view.New(token.DefaultIssuer, view.Hooks{})
	f := &feed{t: t, v: v}
	k1, _ := ledger.GenerateSigningKey()
	k2, _ := ledger.GenerateSigningKey()
	k3, _ := ledger.GenerateSigningKey()
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "control-plane", k1))
	f.log(ledger.TypeKeyRotated, ledger.NewKeyRotation("o", ledger.PurposeToken, "control-plane", k1, k2))
	f.log(ledger.TypeKeyAdded, ledger.NewKeyAdded("o", ledger.PurposeToken, "extra", k3))
	f.log(ledger.TypeKeyRevoked, ledger.KeyRevokedPayload{KeyID: k3.ID(), Reason: "leaked"})
	f.domain(domain.OrganizationCreated{OrgID: org, Name: "acme"})
	f.domain(domain.OrganizationCreated{OrgID: org2, Name: "globex"})
	f.domain(domain.TunnelCreated{TunnelID: tun, OrgID: org, Owner: "alice", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelCreated{TunnelID: tun2, OrgID: org2, Owner: "zed", Name: "llm", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelCreated{TunnelID: tun3, OrgID: org, Owner: "alice", Name: "gone", Upstream: "http://127.0.0.1:1", Protocol: "http"})
	f.domain(domain.TunnelUpdated{TunnelID: tun, OrgID: org, Name: ptr("chat"), Upstream: ptr("http://127.0.0.1:2")})
	f.domain(domain.TunnelDeleted{TunnelID: tun3, OrgID: org, Name: "gone"})
	f.domain(domain.TunnelAccessLogSet{TunnelID: tun, OrgID: org, AccessLog: domain.AccessLogCalls, Previous: domain.AccessLogWindows})
	f.domain(domain.TunnelUpdated{TunnelID: tun, OrgID: org, Labels: &map[string]string{"team": "ml"},
		CORS: &domain.TunnelCORS{Mode: domain.CORSOrigins, Origins: []string{"https://app.example"}}})
	f.domain(domain.AccessKeyIssued{KeyID: keyLabel, OrgID: org, Selector: map[string]string{"team": "ml"}, SecretHash: domain.HashAccessKey(secretOf(keyLabel)),
		ExpiresAt: time.Now().Add(time.Hour), IssuedBy: "alice"})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})
	f.domain(domain.RoleAssigned{OrgID: org, UserID: "vic", Role: domain.RoleAdmin})
	f.domain(domain.RoleUnassigned{OrgID: org, UserID: "vic", Role: domain.RoleAdmin})
	f.domain(domain.RoleAssigned{OrgID: domain.PlatformOrg, UserID: "dave", Role: domain.RoleSuperadmin})
	f.domain(domain.AgentTokenRevoked{TokenID: tokID, OrgID: org, TunnelID: tun})
	issueKey(f, keyValid, org, tun, time.Now().Add(time.Hour))
	issueKey(f, keyCIDR, org, tun, time.Now().Add(time.Hour), "10.0.0.0/8")
	issueKey(f, keyExpired, org, tun, time.Now().Add(-time.Hour))
	issueKey(f, keyOther, org, tun, time.Now().Add(time.Hour))
	f.domain(domain.AccessKeyRevoked{KeyID: keyOther, OrgID: org, TunnelID: tun})
	// The valid token names its issuer's sealing key; the agent's identity carries it.
	f.domain(domain.AgentTokenIssued{TokenID: "0193f2a4-7c1e-7d3a-9b2e-000000000007", OrgID: org, TunnelID: tun, ExpiresAt: time.Now().Add(time.Hour),
		KeyID: k2.ID(), IssuedBy: "alice", SealKey: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)), SealGen: 2})

	now := time.Now()
	users := map[string]string{}
	for _, u := range []string{"alice", "carol", "vic", "zed", "dave"} {
		users[u], _ = token.MintUser(k2, token.DefaultIssuer, u, "", time.Hour, now)
	}
	mintAgent := func(k *ledger.SigningKey, jti, tunnel string) string {
		s, err := token.MintAgent(k, token.DefaultIssuer, jti, org, tunnel, now.Add(time.Hour), now)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tokens := map[string]string{
		"revoked":    mintAgent(k2, tokID, tun),
		"valid":      mintAgent(k2, "0193f2a4-7c1e-7d3a-9b2e-000000000007", tun),
		"deleted":    mintAgent(k2, "0193f2a4-7c1e-7d3a-9b2e-000000000008", tun3),
		"oldkey":     mintAgent(k1, "0193f2a4-7c1e-7d3a-9b2e-00000000000a", tun),
		"revokedkey": mintAgent(k3, "0193f2a4-7c1e-7d3a-9b2e-00000000000b", tun),
	}
	want := decisions(t, v, tokens, users)
	for _, must := range []string{"agent valid: {OrgID", "Seal:{Subject:alice Generation:2 Public:[9 9 9", "agent revoked: {", "agent token revoked", "tunnel deleted", "resolve chat.acme for alice → {OrgID",
		"Name:chat Calls:true CORS:<nil>} true cors {Passthrough:false Origins:[https://app.example]}", "Name:llm Calls:false CORS:<nil>} true cors <nil>",
		"access key " + keyLabel + " from 192.0.2.1: <nil>",
		"access key " + keyValid + " from 192.0.2.1: <nil>", "access key " + keyCIDR + " from 10.0.0.1: <nil>", "access key " + keyCIDR + " from 192.0.2.1: forbidden",
		"access key " + keyOther + " from 10.0.0.1: invalid token: the access key was revoked", "the access key expired"} {
		if !strings.Contains(want, must) {
			t.Fatalf("the history did not produce the decisions the test needs (%q):\n%s", must, want)
		}
	}

	path := filepath.Join(t.TempDir(), "view.json")
	pos, err := v.SaveFile(path, "origin-1")
	if err != nil || pos != int64(f.pos)-1 {
		t.Fatalf("SaveFile: %d, %v", pos, err)
	}
	r := view.New(token.DefaultIssuer, view.Hooks{})
	r.ReadyAt(pos)
	if r.Ready() == nil {
		t.Fatal("ready before restore")
	}
	if err := r.LoadFile(path, "origin-1"); err != nil {
		t.Fatal(err)
	}
	if r.Ready() != nil {
		t.Fatalf("not ready at the snapshot's position: %v", r.Ready())
	}
	if got := decisions(t, r, tokens, users); got != want {
		t.Fatalf("restored view decides otherwise:\n%s\nwant:\n%s", got, want)
	}

	// Both go on alike.
	g := &feed{t: t, v: r, pos: f.pos}
	for _, ff := range []*feed{f, g} {
		ff.domain(domain.TunnelDeleted{TunnelID: tun, OrgID: org, Name: "chat"})
		ff.domain(domain.RoleUnassigned{OrgID: org, UserID: "carol", Role: domain.RoleAdmin})
	}
	if got, want := decisions(t, r, tokens, users), decisions(t, v, tokens, users); got != want {
		t.Fatalf("after more events the restored view decides otherwise:\n%s\nwant:\n%s", got, want)
	}

	// Refusals leave the view empty.
	b, _ := os.ReadFile(path)
	var doc map[string]any
	_ = json.Unmarshal(b, &doc)
	doc["format"] = 99
	otherFormat, _ := json.Marshal(doc)
	for name, c := range map[string]struct {
		v      *view.View
		b      []byte
		origin string
	}{
		"other log":    {view.New(token.DefaultIssuer, view.Hooks{}), b, "origin-2"},
		"other issuer": {view.New("someone-else", view.Hooks{}), b, "origin-1"},
		"other format": {view.New(token.DefaultIssuer, view.Hooks{}), otherFormat, "origin-1"},
	} {
		if err := c.v.Restore(c.b, c.origin); !errors.Is(err, view.ErrSnapshotMismatch) {
			t.Errorf("%s: %v", name, err)
		}
		if c.v.Position() != -1 || c.v.Keys().Len() != 0 {
			t.Errorf("%s: the view changed", name)
		}
	}
	if err := v.Restore(b, "origin-1"); err == nil {
		t.Error("restored into a view that has applied events")
	}
	if err := view.New(token.DefaultIssuer, view.Hooks{}).Restore([]byte("{torn"), "origin-1"); err == nil {
		t.Error("a torn snapshot restored")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("SaveFile left %d files", len(entries))
	}
}
