package commands_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/projections"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

type harness struct {
	url    string
	store  *eventstore.Store
	runner *projections.Runner
	svc    *commands.Service
}

func registry(t testing.TB) *eventstore.Registry {
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
	}
	reg, err := eventstore.NewRegistry(types...)
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	u := pgtest.NewDatabase(t)
	pool := pgtest.Pool(t, u)
	dir := t.TempDir()
	logKeys := eventstore.KeyDir(dir + "/keys/log")
	key, err := logKeys.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Init(ctx, pool, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: logKeys.Load, Registry: registry(t), PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	runner, err := projections.New(projections.Config{Store: st, Projections: projections.All()})
	if err != nil {
		t.Fatal(err)
	}
	if err := runner.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runner.Stop)
	svc, err := commands.New(commands.Config{Store: st, Pool: pool, LogKeys: logKeys, TokenKeys: eventstore.KeyDir(dir + "/keys/token"),
		RBACPosition: func() int64 { p, _ := runner.Position(projections.RoleAssignments); return p },
		WaitRBAC: func(ctx context.Context, pos uint64) error {
			return runner.WaitFor(ctx, pos, projections.RoleAssignments)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.EnsureTokenKey(ctx); err != nil {
		t.Fatal(err)
	}
	svc.Start(ctx)
	t.Cleanup(svc.Stop)
	return &harness{url: u, store: st, runner: runner, svc: svc}
}

func as(user string) context.Context {
	return commands.WithActor(context.Background(), commands.Actor{ID: user, ClientIP: "203.0.113.7", UserAgent: "test", RequestID: "req-1", CorrelationID: "corr-1"})
}

// bootstrap makes a superadmin, an org "acme" owned by alice, and returns the org id.
func (h *harness) bootstrap(t *testing.T) string {
	t.Helper()
	sys := commands.WithActor(context.Background(), commands.Actor{ID: "root"})
	// The first superadmin is granted directly (as `admin token create --role superadmin` does).
	if _, err := h.svc.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	res, err := h.svc.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatalf("create org: %v", err)
	}
	return res.ID
}

func TestTunnelLifecycleAndNames(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	alice := as("alice")
	res, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:11434"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("second tunnel with the same name: %v", err)
	}
	newName := "llm2"
	v := res.Version
	up, err := h.svc.Handlers.UpdateTunnel.Handle(alice, commands.UpdateTunnel{OrgID: org, TunnelID: res.ID, Name: &newName, ExpectedVersion: &v})
	if err != nil {
		t.Fatal(err)
	}
	// The old name is free again, the new one taken.
	if _, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:2"}); err != nil {
		t.Fatalf("reuse a released name: %v", err)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "llm2", Upstream: "http://127.0.0.1:2"}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("take a renamed tunnel's name: %v", err)
	}
	// A stale If-Match loses.
	if _, err := h.svc.Handlers.UpdateTunnel.Handle(alice, commands.UpdateTunnel{OrgID: org, TunnelID: res.ID, Upstream: ptr("http://127.0.0.1:3"), ExpectedVersion: &v}); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("stale version: %v", err)
	}
	del, err := h.svc.Handlers.DeleteTunnel.Handle(alice, commands.DeleteTunnel{OrgID: org, TunnelID: res.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.DeleteTunnel.Handle(alice, commands.DeleteTunnel{OrgID: org, TunnelID: res.ID}); !errors.Is(err, domain.ErrInvalidState) {
		t.Fatalf("delete twice: %v", err)
	}
	if err := h.runner.WaitFor(context.Background(), del.Position, projections.Tunnels, projections.Audit); err != nil {
		t.Fatal(err)
	}
	var name, state string
	var version int64
	if err := h.store.Pool().QueryRow(context.Background(), `SELECT name, state, version FROM tunnels WHERE tunnel_id = $1`, res.ID).Scan(&name, &state, &version); err != nil {
		t.Fatal(err)
	}
	if name != "llm2" || state != "deleted" || version != int64(up.Version)+1 {
		t.Fatalf("read model: %s %s v%d", name, state, version)
	}
	var actor, corr, ip string
	if err := h.store.Pool().QueryRow(context.Background(), `SELECT actor, correlation_id, client_ip FROM audit WHERE position = $1`, del.Position-1).Scan(&actor, &corr, &ip); err != nil {
		t.Fatal(err)
	}
	if actor != "alice" || corr != "corr-1" || ip != "203.0.113.7" {
		t.Fatalf("audit row: %s %s %s", actor, corr, ip)
	}
}

func ptr[T any](v T) *T { return &v }

// Two writers race to update the same tunnel at the same version: one wins, one gets a conflict.
func TestConflictingUpdatesOneWins(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	alice := as("alice")
	res, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "race", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := res.Version
			_, errs[i] = h.svc.Handlers.UpdateTunnel.Handle(alice, commands.UpdateTunnel{OrgID: org, TunnelID: res.ID,
				Upstream: ptr(fmt.Sprintf("http://127.0.0.1:%d", 100+i)), ExpectedVersion: &v})
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, domain.ErrConflict) {
			t.Fatalf("unexpected: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want 1 (%v)", wins, errs)
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	ctx := commands.WithIdempotencyKey(as("alice"), "create-llm-1")
	first, err := h.svc.Handlers.CreateTunnel.Handle(ctx, commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	head, _ := h.store.Head(context.Background())
	again, err := h.svc.Handlers.CreateTunnel.Handle(ctx, commands.CreateTunnel{OrgID: org, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil || again != first {
		t.Fatalf("repeat: %+v %v, want %+v", again, err, first)
	}
	if h2, _ := h.store.Head(context.Background()); h2 != head {
		t.Fatalf("the repeat appended %d records", h2-head)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(ctx, commands.CreateTunnel{OrgID: org, Name: "other", Upstream: "http://127.0.0.1:1"}); !errors.Is(err, commands.ErrIdempotencyMismatch) {
		t.Fatalf("same key, other request: %v", err)
	}
	// Another actor's identical key is independent.
	if _, err := h.svc.Handlers.CreateTunnel.Handle(commands.WithIdempotencyKey(as("alice"), "create-llm-2"), commands.CreateTunnel{OrgID: org, Name: "second", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	// A token replay returns the very same token.
	tctx := commands.WithIdempotencyKey(as("alice"), "token-1")
	t1, err := h.svc.Handlers.IssueAgentToken.Handle(tctx, commands.IssueAgentToken{OrgID: org, TunnelID: first.ID, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t2, err := h.svc.Handlers.IssueAgentToken.Handle(tctx, commands.IssueAgentToken{OrgID: org, TunnelID: first.ID, TTL: time.Hour})
	if err != nil || t2.Token != t1.Token || t2.ID != t1.ID || t1.Token == "" {
		t.Fatalf("token replay: %v\n%q\n%q", err, t1.Token, t2.Token)
	}
}

func TestAuthorizationAndDeniedAudit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	// bob has no role: denied, three times, aggregated into one audit event with count 3.
	for range 3 {
		_, err := h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "x", Upstream: "http://127.0.0.1:1"})
		if !errors.Is(err, commands.ErrForbidden) {
			t.Fatalf("bob without a role: %v", err)
		}
	}
	// alice (owner) grants bob viewer: he may read but not create.
	if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: "bob", Role: domain.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.svc.Authorizer().Allowed(context.Background(), "bob", commands.Permission{Org: org, Object: commands.ObjTunnels, Action: commands.ActRead}); !ok {
		t.Fatal("viewer cannot read tunnels")
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "x", Upstream: "http://127.0.0.1:1"}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("viewer creates a tunnel: %v", err)
	}
	// The grant is visible at once to the next request (no stale policy).
	if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: "bob", Role: domain.RoleOperator}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.CreateTunnel.Handle(as("bob"), commands.CreateTunnel{OrgID: org, Name: "x", Upstream: "http://127.0.0.1:1"}); err != nil {
		t.Fatalf("operator right after the grant: %v", err)
	}
	// An admin may not make owners.
	if _, err := h.svc.Handlers.AssignRole.Handle(as("alice"), commands.AssignRole{OrgID: org, UserID: "carol", Role: domain.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.AssignRole.Handle(as("carol"), commands.AssignRole{OrgID: org, UserID: "dave", Role: domain.RoleOwner}); !errors.Is(err, commands.ErrForbidden) {
		t.Fatalf("admin makes an owner: %v", err)
	}
	h.svc.Auditor.Flush(context.Background())
	head, _ := h.store.Head(context.Background())
	if err := h.runner.WaitFor(context.Background(), head-1, projections.Audit); err != nil {
		t.Fatal(err)
	}
	recs, err := h.store.ReadStream(context.Background(), domain.AuditStream, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, r := range recs {
		e, _ := domain.Decode(r.Type, r.Payload)
		if d, ok := e.(*domain.AccessDenied); ok {
			counts[d.ActorID+"/"+d.Action] += d.Count
		}
	}
	if counts["bob/create"] != 4 || counts["carol/assign_owner"] != 1 {
		t.Fatalf("denied audit counts = %v", counts)
	}
	if len(recs) != 2 {
		t.Fatalf("%d audit events for 5 denials, want 2 (aggregated per actor)", len(recs))
	}
}

// A rebuilt read model is identical to the live one, and reads keep working during the rebuild.
func TestRebuildEqualsLive(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	alice := as("alice")
	var last uint64
	for i := range 30 {
		res, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: fmt.Sprintf("t%d", i), Upstream: "http://127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			r, err := h.svc.Handlers.DeleteTunnel.Handle(alice, commands.DeleteTunnel{OrgID: org, TunnelID: res.ID})
			if err != nil {
				t.Fatal(err)
			}
			last = r.Position
		}
	}
	ctx := context.Background()
	names := []string{projections.Orgs, projections.Tunnels, projections.RoleAssignments, projections.Audit}
	if err := h.runner.WaitFor(ctx, last, names...); err != nil {
		t.Fatal(err)
	}
	queries := map[string]string{
		projections.Tunnels:         `SELECT tunnel_id, org_id, name, owner, upstream, protocol, state, version, created_at, updated_at, position FROM tunnels ORDER BY tunnel_id`,
		projections.Orgs:            `SELECT org_id, name, created_by, created_at, position FROM orgs ORDER BY org_id`,
		projections.RoleAssignments: `SELECT org_id, user_id, role, assigned_at, position FROM role_assignments ORDER BY 1, 2, 3`,
		projections.Audit:           `SELECT position, event_id, type, stream_id, actor, org_id, correlation_id FROM audit ORDER BY position`,
	}
	for _, name := range names {
		before := dump(t, h, queries[name])
		// Reads during the rebuild see complete data.
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 20 {
				if got := dump(t, h, queries[name]); len(got) != len(before) {
					t.Errorf("%s: a read during the rebuild saw %d rows, want %d", name, len(got), len(before))
					return
				}
			}
		}()
		st, err := h.runner.Rebuild(ctx, name, nil)
		<-done
		if err != nil {
			t.Fatalf("rebuild %s: %v", name, err)
		}
		if st.Generation != 2 {
			t.Fatalf("%s generation %d after a rebuild", name, st.Generation)
		}
		after := dump(t, h, queries[name])
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("%s: rebuilt read model differs from the live one:\nbefore %v\nafter  %v", name, before, after)
		}
	}
	// The live runner keeps applying into the new generation.
	res, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "after", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.runner.WaitFor(ctx, res.Position, projections.Tunnels); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM tunnels WHERE name = 'after'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tunnel created after the rebuild: %d %v", n, err)
	}
}

func dump(t *testing.T, h *harness, sql string) []string {
	rows, err := h.store.Pool().Query(context.Background(), sql)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		v, _ := rows.Values()
		out = append(out, fmt.Sprint(v))
	}
	return out
}

// Two control planes (two processes with their own caches) change the same tunnel: a stale
// cache never loses a write or fakes a conflict.
func TestStaleCacheAcrossProcesses(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	other, err := commands.New(commands.Config{Store: h.store, Pool: h.store.Pool(), LogKeys: eventstore.KeyDir(""), TokenKeys: eventstore.KeyDir("")})
	if err != nil {
		t.Fatal(err)
	}
	alice := as("alice")
	res, err := h.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: "shared", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	up := func(svc *commands.Service, port int, pin *uint64) (commands.Result, error) {
		return svc.Handlers.UpdateTunnel.Handle(alice, commands.UpdateTunnel{OrgID: org, TunnelID: res.ID, Upstream: ptr(fmt.Sprintf("http://127.0.0.1:%d", port)), ExpectedVersion: pin})
	}
	if _, err := up(h.svc, 2, nil); err != nil { // h.svc now caches version 2
		t.Fatal(err)
	}
	if _, err := up(other, 3, nil); err != nil { // another process writes version 3
		t.Fatal(err)
	}
	r, err := up(h.svc, 4, nil) // stale cache: retried on a fresh read
	if err != nil || r.Version != 4 {
		t.Fatalf("unpinned update on a stale cache: %+v %v", r, err)
	}
	if _, err := up(other, 5, nil); err != nil { // version 5 elsewhere again
		t.Fatal(err)
	}
	v := uint64(5)
	if r, err := up(h.svc, 6, &v); err != nil || r.Version != 6 { // pinned to the true version
		t.Fatalf("If-Match with the current version on a stale cache: %+v %v", r, err)
	}
	old := uint64(4)
	if _, err := up(h.svc, 7, &old); !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("If-Match with an old version: %v", err)
	}
	recs, err := h.store.ReadStream(context.Background(), domain.TunnelStream(res.ID), 1, 100)
	if err != nil || len(recs) != 6 {
		t.Fatalf("tunnel stream has %d events, want 6 (%v)", len(recs), err)
	}
}

// A process that has never seen a name assumes it is new; when another process used it, the
// reservation conflicts and is decided again on a fresh read: a held name stays taken, a
// released one can be reused.
func TestNamesAcrossProcesses(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	org := h.bootstrap(t)
	alice := as("alice")
	fresh := func() *commands.Service {
		svc, err := commands.New(commands.Config{Store: h.store, Pool: h.store.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	create := func(svc *commands.Service, name string) (commands.Result, error) {
		return svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org, Name: name, Upstream: "http://127.0.0.1:1"})
	}
	held, err := create(h.svc, "held")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := create(fresh(), "held"); !errors.Is(err, domain.ErrConflict) || errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Fatalf("a name another process holds: %v, want the name-taken conflict", err)
	}
	gone, err := create(h.svc, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Handlers.DeleteTunnel.Handle(alice, commands.DeleteTunnel{OrgID: org, TunnelID: gone.ID}); err != nil {
		t.Fatal(err)
	}
	again, err := create(fresh(), "gone")
	if err != nil {
		t.Fatalf("reuse a name another process released: %v", err)
	}
	recs, err := h.store.ReadStream(context.Background(), domain.TunnelNameStream(org, "gone"), 1, 100)
	if err != nil || len(recs) != 3 {
		t.Fatalf("name stream has %d events, want reserve, release, reserve (%v)", len(recs), err)
	}
	if again.ID == held.ID || again.ID == gone.ID {
		t.Fatalf("ids reused: %s", again.ID)
	}
}
