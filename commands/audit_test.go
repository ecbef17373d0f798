package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// These tests drive the auditor with what a hostile caller sends and read the real log back.
// They are internal to reach past the bounds of Denied and AuthFailed where a test plays a bug
// in them (an aggregate that is not bounded).

// auditHarness is a write side over a fresh log, its flusher not started (tests flush).
type auditHarness struct {
	url   string
	store *eventstore.Store
	svc   *Service
}

// newAuditHarness builds the write side; the store's registry lacks the types in without.
func newAuditHarness(t *testing.T, without ...string) *auditHarness {
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
	var types []eventstore.EventType
	for _, et := range domain.EventTypes() {
		if !slices.Contains(without, et.Name) {
			types = append(types, eventstore.EventType{Name: et.Name, SchemaVersion: et.SchemaVersion, Upcasters: et.Upcasters})
		}
	}
	reg, err := eventstore.NewRegistry(types...)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("TUNNELPLANE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	st, err := eventstore.New(eventstore.Config{Pool: pool, Key: key, KeySource: logKeys.Load, Registry: reg, PollInterval: 200 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	svc, err := New(Config{Store: st, Pool: pool, LogKeys: logKeys, TokenKeys: eventstore.KeyDir(dir + "/keys/token"), Logger: log,
		AuditFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return &auditHarness{url: u, store: st, svc: svc}
}

// auditLog is what the audit stream holds, decoded.
type auditLog struct {
	denied     []domain.AccessDenied
	deniedMeta []domain.Metadata
	failed     []domain.AuthFailed
	failedMeta []domain.Metadata
	overflow   []overflowed
}

// overflowed is audit.overflowed as stored (spelled out here: it pins the stored schema).
type overflowed struct {
	WindowStart         time.Time      `json:"window_start"`
	WindowEnd           time.Time      `json:"window_end"`
	DroppedDenials      map[string]int `json:"dropped_denials"`
	DroppedAuthFailures map[string]int `json:"dropped_auth_failures"`
	DroppedEvents       map[string]int `json:"dropped_events"`
	ReducedEvents       int            `json:"reduced_events"`
}

func (h *auditHarness) log(t *testing.T) auditLog {
	t.Helper()
	l, err := h.tryLog(t)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (h *auditHarness) tryLog(t *testing.T) (auditLog, error) {
	t.Helper()
	var out auditLog
	for from := uint64(1); ; {
		recs, err := h.store.ReadStream(context.Background(), domain.AuditStream, from, 1000)
		if err != nil {
			return out, err
		}
		for _, r := range recs {
			var m domain.Metadata
			if err := json.Unmarshal(r.Metadata, &m); err != nil {
				t.Fatalf("metadata of %s: %v", r.Type, err)
			}
			switch r.Type {
			case domain.TypeAccessDenied:
				var e domain.AccessDenied
				must(t, json.Unmarshal(r.Payload, &e))
				out.denied, out.deniedMeta = append(out.denied, e), append(out.deniedMeta, m)
			case domain.TypeAuthFailed:
				var e domain.AuthFailed
				must(t, json.Unmarshal(r.Payload, &e))
				out.failed, out.failedMeta = append(out.failed, e), append(out.failedMeta, m)
			case "audit.overflowed":
				if _, err := domain.Decode(r.Type, r.Payload); err != nil {
					t.Fatalf("the domain does not decode %s: %v", r.Type, err)
				}
				var e overflowed
				must(t, json.Unmarshal(r.Payload, &e))
				out.overflow = append(out.overflow, e)
			}
		}
		if len(recs) < 1000 {
			return out, nil
		}
		from = recs[len(recs)-1].StreamVersion + 1
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// deniedCount sums the denials of actor in the log.
func (l auditLog) deniedCount(actor string) int {
	n := 0
	for _, e := range l.denied {
		if e.ActorID == actor {
			n += e.Count
		}
	}
	return n
}

// overflowTotals sums the counts of every audit.overflowed event.
func (l auditLog) overflowTotals() (denials, failures, events map[string]int, reduced int) {
	denials, failures, events = map[string]int{}, map[string]int{}, map[string]int{}
	for _, o := range l.overflow {
		for r, n := range o.DroppedDenials {
			denials[r] += n
		}
		for r, n := range o.DroppedAuthFailures {
			failures[r] += n
		}
		for r, n := range o.DroppedEvents {
			events[r] += n
		}
		reduced += o.ReducedEvents
	}
	return denials, failures, events, reduced
}

// legit is an ordinary denial: a user without a role asks for the node list.
func legit(a *Auditor, user string) {
	a.Denied(Actor{ID: user, ClientIP: "192.0.2.10", UserAgent: "curl/8.5.0", RequestID: "req-" + user, CorrelationID: "corr-" + user},
		Permission{Org: domain.PlatformOrg, Object: ObjNodes, Action: ActRead})
}

func requireDenied(t *testing.T, l auditLog, user string, want int) {
	t.Helper()
	if got := l.deniedCount(user); got != want {
		t.Fatalf("the log holds %d denials of %s, want %d (the audit log stopped taking events)", got, user, want)
	}
}

// The probe's first finding: a 17,000-byte User-Agent on an anonymous request (and a claimed
// subject with a NUL, which jsonb cannot store) made every later append of the audit log fail.
// The fields are cut to their bounds, what is cut ends in a hash of the whole, and a later denial
// is written.
func TestAuditHostileFieldsDoNotStopTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t)
	a := h.svc.Auditor
	huge := strings.Repeat("U", 17_000)
	a.AuthFailed("missing_token", "", "203.0.113.9", huge)
	a.AuthFailed("invalid_token", "mallory\x00", "203.0.113.9", "x\x00y")
	a.Denied(Actor{ID: "eve", ClientIP: "203.0.113.9", UserAgent: huge, RequestID: "r", CorrelationID: "c"},
		Permission{Org: strings.Repeat("o", 17_000) + "\x00", Object: ObjOrgs, Action: ActRead})
	a.Flush(ctx)
	legit(a, "bob")
	a.Flush(ctx)

	l := h.log(t)
	requireDenied(t, l, "bob", 1)
	requireDenied(t, l, "eve", 1)
	if len(l.failed) != 2 {
		t.Fatalf("%d auth_failed events, want 2", len(l.failed))
	}
	for i, e := range l.failed {
		if !utf8.ValidString(e.UserAgent) || len(e.UserAgent) > 512 || len(l.failedMeta[i].UserAgent) > 512 {
			t.Fatalf("user agent of %d bytes stored", len(e.UserAgent))
		}
		switch e.Reason {
		case "missing_token":
			if !strings.HasPrefix(e.UserAgent, "UUUU") || !strings.Contains(e.UserAgent, "sha256:") {
				t.Fatalf("a cut user agent keeps its start and a hash of the whole: %q", e.UserAgent)
			}
		case "invalid_token":
			if e.Subject != "mallory\uFFFD" || e.UserAgent != "x\uFFFDy" {
				t.Fatalf("control characters are replaced: subject %q, user agent %q", e.Subject, e.UserAgent)
			}
		}
	}
	for i, e := range l.denied {
		if e.ActorID == "eve" && (len(e.OrgID) > 256 || strings.ContainsRune(e.OrgID, 0) || len(l.deniedMeta[i].UserAgent) > 512) {
			t.Fatalf("eve's denial holds an org of %d bytes and a user agent of %d", len(e.OrgID), len(l.deniedMeta[i].UserAgent))
		}
	}
}

// The probe's second finding: 10,001 distinct claimed subjects in one window made one append of
// more events than the store takes. Each window holds at most 1,000 keys of each kind; the rest
// is counted in an audit.overflowed event; the events go in appends the store takes.
func TestAuditDistinctKeysPerWindowAreCapped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t)
	a := h.svc.Auditor
	const keyCap, subjects = 1_000, 10_005
	for i := range subjects {
		a.AuthFailed("invalid_token", fmt.Sprintf("subject-%d", i), "203.0.113.9", "junk")
	}
	for range 3 {
		a.AuthFailed("invalid_token", "subject-0", "203.0.113.9", "junk") // a key held still counts
	}
	for i := range keyCap + 2 {
		a.Denied(Actor{ID: fmt.Sprintf("user-%d", i)}, Permission{Org: domain.PlatformOrg, Object: ObjKeys, Action: ActRead})
	}
	a.Flush(ctx)
	legit(a, "bob")
	a.Flush(ctx)

	l := h.log(t)
	requireDenied(t, l, "bob", 1)
	if len(l.failed) != keyCap {
		t.Fatalf("%d auth_failed events, want %d", len(l.failed), keyCap)
	}
	if len(l.denied) != keyCap+1 {
		t.Fatalf("%d access_denied events, want %d and bob's", len(l.denied), keyCap)
	}
	failures := 0
	for _, e := range l.failed {
		failures += e.Count
	}
	denials, failed, events, _ := l.overflowTotals()
	if failures+failed["key_cap"] != subjects+3 || failed["key_cap"] != subjects-keyCap || denials["key_cap"] != 2 || len(events) != 0 {
		t.Fatalf("counted %d failures in events and %v in overflow (want %d key_cap), %v denials (want 2 key_cap), %v events dropped",
			failures, failed, subjects-keyCap, denials, events)
	}
	if o := l.overflow[0]; o.WindowStart.IsZero() || o.WindowEnd.Before(o.WindowStart) {
		t.Fatalf("overflow window %s to %s", o.WindowStart, o.WindowEnd)
	}
}

// Behind the bounds: an aggregate whose fields are not bounded (a bug upstream) is cut to the
// bounds when its event is built, not left to block the queue.
func TestAuditUnboundedAggregateIsBoundedAtFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t)
	a := h.svc.Auditor
	now := time.Now()
	huge := strings.Repeat("U", 17_000)
	a.mu.Lock()
	a.failed[failedKey{reason: "invalid_token", subject: "mallory\x00" + huge, addr: "203.0.113.9"}] = &failedAgg{count: 2, first: now, userAgent: huge}
	a.denied[deniedKey{actor: "eve", org: "acme\x00", action: ActRead, resource: ObjOrgs}] = &deniedAgg{count: 3, first: now, last: now,
		meta: Actor{ID: "eve", UserAgent: huge}}
	a.mu.Unlock()
	legit(a, "bob")
	a.Flush(ctx)

	l := h.log(t)
	requireDenied(t, l, "bob", 1)
	requireDenied(t, l, "eve", 3)
	if len(l.failed) != 1 || l.failed[0].Count != 2 || len(l.failed[0].Subject) > 256 || !strings.HasPrefix(l.failed[0].Subject, "mallory\uFFFDUUU") ||
		!strings.Contains(l.failed[0].Subject, "sha256:") || len(l.failedMeta[0].UserAgent) > 512 {
		t.Fatalf("the unbounded failed login is not stored bounded: subject of %d bytes, user agent of %d", len(l.failed[0].Subject),
			len(l.failedMeta[0].UserAgent))
	}
	for i, e := range l.denied {
		if e.ActorID == "eve" && (e.OrgID != "acme\uFFFD" || len(l.deniedMeta[i].UserAgent) > 512) {
			t.Fatalf("eve's denial: org %q, user agent of %d bytes", e.OrgID, len(l.deniedMeta[i].UserAgent))
		}
	}
}

// An event the store never takes (here: a store that does not know audit.auth_failed) is dropped
// and counted; the denials next to it are written.
func TestAuditEventTheStoreRefusesIsDroppedAndCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t, domain.TypeAuthFailed)
	a := h.svc.Auditor
	for range 3 {
		a.AuthFailed("invalid_token", "mallory", "203.0.113.9", "junk")
	}
	legit(a, "bob")
	a.Flush(ctx)
	legit(a, "carol")
	a.Flush(ctx)

	l := h.log(t)
	requireDenied(t, l, "bob", 1)
	requireDenied(t, l, "carol", 1)
	_, failed, events, _ := l.overflowTotals()
	if len(l.overflow) != 1 || events["unknown_type"] != 1 || failed["unknown_type"] != 3 {
		t.Fatalf("%d overflow events counting %v events and %v failures dropped; want one with 1 event and 3 failures (unknown_type)",
			len(l.overflow), events, failed)
	}
}

// While the database is down the aggregates wait for the next flush, merged into the window's
// bounded maps: what no longer fits is counted, and everything is written once it is back. (The
// 12,000 subjects are more than one append takes: merged without a bound, they would never go.)
func TestAuditTransientFailureKeepsBoundedAggregates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t)
	a := h.svc.Auditor
	for i := range 6_000 {
		a.AuthFailed("invalid_token", fmt.Sprintf("early-%d", i), "203.0.113.9", "junk")
	}
	legit(a, "bob")
	legit(a, "bob")

	down := databaseDown(t, h.url)
	a.Flush(ctx)
	for i := range 6_000 {
		a.AuthFailed("invalid_token", fmt.Sprintf("late-%d", i), "203.0.113.9", "junk")
	}
	legit(a, "bob")
	legit(a, "bob")
	legit(a, "bob")
	down()

	// The pool finds its connections gone on first use; flush until the log takes the events.
	var l auditLog
	deadline := time.Now().Add(30 * time.Second)
	for {
		a.Flush(ctx)
		var err error
		if l, err = h.tryLog(t); (err == nil && l.deniedCount("bob") > 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	requireDenied(t, l, "bob", 5)
	if len(l.failed) != 1_000 {
		t.Fatalf("%d auth_failed events after the outage, want 1000 (the window's bound)", len(l.failed))
	}
	failures := 0
	for _, e := range l.failed {
		failures += e.Count
	}
	_, failed, _, _ := l.overflowTotals()
	if failures+failed["key_cap"] != 12_000 || failed["key_cap"] != 11_000 {
		t.Fatalf("%d failures in events, %v in overflow; want 12000 in all, 11000 key_cap", failures, failed)
	}
}

// databaseDown refuses connections to the database at u and ends those it has, as an outage
// does. The returned func (also run at cleanup) lets them in again.
func databaseDown(t *testing.T, u string) (up func()) {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	name := pgx.Identifier{strings.TrimPrefix(pu.Path, "/")}
	admin := pgtest.Server(t).AdminURL
	pgtest.Exec(t, admin, "ALTER DATABASE "+name.Sanitize()+" ALLOW_CONNECTIONS false")
	pgtest.Exec(t, admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name[0])
	done := false
	up = func() {
		if !done {
			done = true
			pgtest.Exec(t, admin, "ALTER DATABASE "+name.Sanitize()+" ALLOW_CONNECTIONS true")
		}
	}
	t.Cleanup(up)
	return up
}

// Stop writes what is pending, a hostile aggregate beside it notwithstanding.
func TestAuditStopFlushes(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	h.svc.Start(context.Background())
	a := h.svc.Auditor
	a.AuthFailed("missing_token", "", "203.0.113.9", strings.Repeat("U", 17_000))
	legit(a, "bob")
	h.svc.Stop()
	requireDenied(t, h.log(t), "bob", 1)
	h.svc.Stop() // twice is fine
}

// Stop waits for the final flush a bounded time: a database that holds the log's head locked
// does not hold up the shutdown; what was pending is written once the lock goes.
func TestAuditStopWaitsABoundedTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newAuditHarness(t)
	h.svc.Start(ctx)
	legit(h.svc.Auditor, "bob")

	lock, err := pgx.Connect(ctx, h.url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := lock.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM log_head FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	unlock := func() { _ = tx.Rollback(ctx); _ = lock.Close(ctx) }
	t.Cleanup(unlock)

	start := time.Now()
	stopped := make(chan struct{})
	go func() { h.svc.Stop(); close(stopped) }()
	bound := 5*time.Second + 3*time.Second // the flush's bound, a second of grace, and a margin
	select {
	case <-stopped:
	case <-time.After(bound):
		t.Fatalf("Stop still waits for the audit flush after %s", time.Since(start))
	}
	t.Logf("Stop returned after %s with the log head locked", time.Since(start))
	unlock()
	deadline := time.Now().Add(20 * time.Second)
	for h.log(t).deniedCount("bob") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pending denial was not written once the lock went")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Start and Stop from many goroutines at once: one flusher at most, every Stop returns, nothing
// is left running (goleak in TestMain), and what was recorded is written.
func TestAuditStartStopStress(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	legit(h.svc.Auditor, "bob")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				h.svc.Start(context.Background())
			}
			h.svc.Stop()
			h.svc.Start(context.Background())
		}()
	}
	wg.Wait()
	requireDenied(t, h.log(t), "bob", 1)
}
