package grantexpiry_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/grantexpiry"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/internal/servicetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))
}

// clock is the wall clock moved forward by skip.
type clock struct{ skip atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.skip.Load())) }
func (c *clock) advance(d time.Duration) { c.skip.Add(int64(d)) }

type env struct {
	store *eventstore.Store
	svc   *commands.Service
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := &clock{}
	e := servicetest.Start(t, c.now)
	return &env{store: e.Store, svc: e.Service, clock: c}
}

func (e *env) manager(t *testing.T) *grantexpiry.Manager { return e.managerWith(t, 0) }

// managerWith is the notice manager with a lead time (0: the expiry manager).
func (e *env) managerWith(t *testing.T, lead time.Duration) *grantexpiry.Manager {
	t.Helper()
	m, err := grantexpiry.New(grantexpiry.Config{Store: e.store, Service: e.svc, Now: e.clock.now, Retry: 200 * time.Millisecond, Lead: lead})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

// tunnel makes an organization (owner alice) and a tunnel, and returns alice's context, their
// ids, and a function granting the tunnel to a user for a ttl.
func (e *env) tunnel(t *testing.T) (alice context.Context, org, tun commands.Result, grant func(user string, ttl time.Duration) string) {
	t.Helper()
	sys := commands.WithActor(context.Background(), commands.Actor{ID: "root"})
	if _, err := e.svc.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: "root", Role: domain.RoleSuperadmin}); err != nil {
		t.Fatal(err)
	}
	org, err := e.svc.Handlers.CreateOrganization.Handle(sys, commands.CreateOrganization{Name: "acme", Owner: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	alice = commands.WithActor(context.Background(), commands.Actor{ID: "alice"})
	tun, err = e.svc.Handlers.CreateTunnel.Handle(alice, commands.CreateTunnel{OrgID: org.ID, Name: "llm", Upstream: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	grant = func(user string, ttl time.Duration) string {
		res, err := e.svc.Handlers.CreateGrant.Handle(alice, commands.CreateGrant{OrgID: org.ID, TunnelID: tun.ID, User: user, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	return alice, org, tun, grant
}

// expiries reads every grant.expired in the log: grant id → how many.
func (e *env) expiries(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	recs, err := e.store.ReadType(context.Background(), domain.TypeGrantExpired, 0, 1<<62, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var ev domain.GrantExpired
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		var m domain.Metadata
		_ = json.Unmarshal(r.Metadata, &m)
		if r.EventID != commands.GrantExpiryEventID(ev.GrantID) || m.CausationID != ev.GrantID {
			t.Fatalf("grant.expired %s of grant %s caused by %q", r.EventID, ev.GrantID, m.CausationID)
		}
		out[ev.GrantID]++
	}
	return out
}

// TestExpiryAcrossRestart: deadlines that passed while no manager ran fire when one starts, once,
// even with two managers (two control processes) starting together; a revoked grant never
// expires; a deadline reached while a manager runs fires then.
func TestExpiryAcrossRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	alice, org, tun, grant := e.tunnel(t)

	first := e.manager(t)
	g1, g2, revoked := grant("vic", time.Hour), grant("wen", 2*time.Hour), grant("rex", time.Hour)
	if _, err := e.svc.Handlers.RevokeGrant.Handle(alice, commands.RevokeGrant{OrgID: org.ID, TunnelID: tun.ID, GrantID: revoked}); err != nil {
		t.Fatal(err)
	}
	first.Stop() // the process goes down
	e.clock.advance(3 * time.Hour)
	if n := len(e.expiries(t)); n != 0 {
		t.Fatalf("%d expiries while no manager ran", n)
	}

	// Two processes start at once: each deadline that passed fires, once.
	a, b := e.manager(t), e.manager(t)
	poll.Until(t, 10*time.Second, "the expiries after the restart", func() bool { ex := e.expiries(t); return ex[g1] > 0 && ex[g2] > 0 })
	// A deadline reached while they run fires at it.
	g3 := grant("zed", time.Second)
	poll.Until(t, 10*time.Second, "the expiry of a live deadline", func() bool { return e.expiries(t)[g3] > 0 })
	ex := e.expiries(t)
	if len(ex) != 3 || ex[g1] != 1 || ex[g2] != 1 || ex[g3] != 1 || ex[revoked] != 0 {
		t.Fatalf("expiries %v", ex)
	}
	// A manager counts an expiry after its append returns, so the count may trail the log a moment.
	poll.Until(t, 5*time.Second, "the managers counting 3 expiries", func() bool { return a.Fired()+b.Fired() >= 3 })
	if a.Fired()+b.Fired() != 3 {
		t.Fatalf("the managers report %d and %d expiries, want 3 in all", a.Fired(), b.Fired())
	}
	// Yet another start finds nothing left to do.
	a.Stop()
	c := e.manager(t)
	time.Sleep(300 * time.Millisecond) // that nothing happens can only be seen by waiting
	if c.Fired() != 0 || len(e.expiries(t)) != 3 {
		t.Fatalf("a third start fired %d", c.Fired())
	}
	sh, err := e.svc.Sharing(ctx, org.ID, tun.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, gr := range sh.Grants() {
		if !gr.Ended {
			t.Fatalf("grant %s (%s) did not end", gr.GrantID, gr.Subject)
		}
	}
}

// TestStartStopStress: a second Start starts nothing, Stop waits and is safe twice.
func TestStartStopStress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := 0; i < 20; i++ {
		m, err := grantexpiry.New(grantexpiry.Config{Store: e.store, Service: e.svc})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		m.Stop()
		m.Stop()
		if err := m.Start(context.Background()); err == nil {
			t.Fatal("a stopped manager started again")
		}
	}
}

// notices reads every grant.expiring in the log: grant id → how many.
func (e *env) notices(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	recs, err := e.store.ReadType(context.Background(), domain.TypeGrantExpiring, 0, 1<<62, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		var ev domain.GrantExpiring
		if err := json.Unmarshal(r.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if r.EventID != commands.GrantNoticeEventID(ev.GrantID) || ev.SubjectKind != domain.GrantToUser || ev.Subject == "" {
			t.Fatalf("grant.expiring %s: %+v", r.EventID, ev)
		}
		out[ev.GrantID]++
	}
	return out
}

// TestGrantExpiringNotice: the notice manager records grant.expiring once per grant, the lead
// time before its deadline (at once for a grant shorter than the lead), with two managers
// running, across a restart; never for a revoked or an already expired grant.
func TestGrantExpiringNotice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, org, tun, grant := e.tunnel(t)
	const lead = time.Hour
	short, long, revoked, gone := grant("sam", 30*time.Minute), grant("lou", 3*time.Hour), grant("rex", 3*time.Hour), grant("old", 2*time.Hour)
	if _, err := e.svc.Handlers.RevokeGrant.Handle(alice, commands.RevokeGrant{OrgID: org.ID, TunnelID: tun.ID, GrantID: revoked}); err != nil {
		t.Fatal(err)
	}
	a, b := e.managerWith(t, lead), e.managerWith(t, lead)
	poll.Until(t, 10*time.Second, "the notice of a grant shorter than the lead", func() bool { return e.notices(t)[short] > 0 })
	if n := e.notices(t); n[long] != 0 {
		t.Fatalf("a grant three hours from its end was noticed: %v", n)
	}
	a.Stop()
	b.Stop()
	// Down past the notice time of "long", and past the end of "old": only "long" is told.
	e.clock.advance(2*time.Hour + 30*time.Minute)
	c, d := e.managerWith(t, lead), e.managerWith(t, lead)
	poll.Until(t, 10*time.Second, "the notice after the restart", func() bool { return e.notices(t)[long] > 0 })
	poll.Until(t, 10*time.Second, "the managers recorded it", func() bool { return c.Fired()+d.Fired() == 1 })
	if n := e.notices(t); len(n) != 2 || n[short] != 1 || n[long] != 1 || n[revoked] != 0 || n[gone] != 0 {
		t.Fatalf("notices %v, want one each for the short and the long grant", n)
	}
}
