package commands

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Bounds on what the audit log keeps of a field a caller controls. The event store refuses an
// event whose metadata exceeds eventstore.MaxMetadataBytes, so an unbounded user agent would make
// the event (and, with it, a legitimate command) fail.
const (
	MaxUserAgentBytes = 512
	MaxNameBytes      = 256 // actor ids, claimed token subjects, organization references
	MaxAddrBytes      = 64  // client addresses
	MaxIDBytes        = 128 // request, correlation and causation ids
	maxReasonBytes    = 64
	// reducedFieldBytes bounds every field of an event the store refused in full.
	reducedFieldBytes = 64
)

// Limits of the auditor.
const (
	// AuditMaxKeys bounds the distinct denial keys (actor, organization, action, object) and,
	// separately, the distinct failed-login keys (reason, subject, address) held per flush
	// window. Requests beyond it are counted in an audit.overflowed event instead. It bounds
	// memory, and what a flood of anonymous requests writes to the log (which every node
	// receives and verifies): at most twice this many events and one overflow event per window.
	AuditMaxKeys = 1_000
	// AuditChunkEvents is how many events one append carries, well below
	// eventstore.MaxEventsPerCall (and near the store's batch size).
	AuditChunkEvents = 500
	// AuditStopTimeout bounds the final flush at Stop.
	AuditStopTimeout = 5 * time.Second
)

// auditorActor is the metadata actor of the events the auditor writes about itself.
const auditorActor = "system:auditor"

// Bounded returns s as the audit log may hold it: valid UTF-8 without control characters (each
// is replaced with U+FFFD; PostgreSQL's jsonb cannot store NUL), at most max bytes. A longer value
// is cut at a character boundary and ends in "…sha256:" and 16 hex digits of the hash of the
// whole value, so equal long values still aggregate together and different ones stay apart.
func Bounded(s string, max int) string {
	if len(s) <= max && clean(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	c := strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, s)
	if len(c) <= max {
		return c
	}
	suffix := "…sha256:" + hex.EncodeToString(sum[:8])
	if max < 2*len(suffix) {
		suffix = "" // too small a bound to spend on the hash
	}
	cut := max - len(suffix)
	for cut > 0 && !utf8.RuneStart(c[cut]) {
		cut--
	}
	return c[:cut] + suffix
}

func clean(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// Bounded returns the actor with the fields a caller sends (address, user agent, request,
// correlation and causation ids) cut to the audit log's bounds. The id is left as it is: it is a
// verified subject, and authorization decides on it.
func (a Actor) Bounded() Actor {
	a.ClientIP = Bounded(a.ClientIP, MaxAddrBytes)
	a.UserAgent = Bounded(a.UserAgent, MaxUserAgentBytes)
	a.RequestID = Bounded(a.RequestID, MaxIDBytes)
	a.CorrelationID = Bounded(a.CorrelationID, MaxIDBytes)
	a.CausationID = Bounded(a.CausationID, MaxIDBytes)
	return a
}

// Auditor turns denials and failed logins into audit events, aggregated per actor (or subject and
// address) per window, so a flood of requests becomes one event with a count rather than a flood
// of events. What it holds is bounded: fields are cut (Bounded), each window holds at most
// AuditMaxKeys keys of each kind, and whatever is not recorded one by one is counted in an
// audit.overflowed event. An event the store refuses for good is reduced or dropped (and
// counted); it never holds back the others.
type Auditor struct {
	s *Service

	mu      sync.Mutex
	denied  map[deniedKey]*deniedAgg
	failed  map[failedKey]*failedAgg
	over    overflow
	stopCh  chan struct{}
	done    chan struct{}
	started bool
	once    sync.Once
}

type deniedKey struct{ actor, org, action, resource string }
type deniedAgg struct {
	id          uuid.UUID // kept across retries: a retry of an append that did land is a duplicate
	count       int
	first, last time.Time
	meta        Actor
}
type failedKey struct{ reason, subject, addr string }
type failedAgg struct {
	id        uuid.UUID
	count     int
	first     time.Time
	userAgent string
}

// overflow counts what a window did not record one by one, by reason (domain.Overflow*).
type overflow struct {
	start                     time.Time
	denials, failures, events map[string]int
	reduced                   int
}

func (o *overflow) empty() bool {
	return len(o.denials) == 0 && len(o.failures) == 0 && len(o.events) == 0 && o.reduced == 0
}

func (o *overflow) since(t time.Time) {
	if o.start.IsZero() || (!t.IsZero() && t.Before(o.start)) {
		o.start = t
	}
}

func count(m *map[string]int, reason string, n int) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[reason] += n
}

// merge adds o2's counts to o.
func (o *overflow) merge(o2 overflow) {
	if o2.empty() {
		return
	}
	o.since(o2.start)
	for r, n := range o2.denials {
		count(&o.denials, r, n)
	}
	for r, n := range o2.failures {
		count(&o.failures, r, n)
	}
	for r, n := range o2.events {
		count(&o.events, r, n)
	}
	o.reduced += o2.reduced
}

func newAuditor(s *Service) *Auditor {
	return &Auditor{s: s, denied: map[deniedKey]*deniedAgg{}, failed: map[failedKey]*failedAgg{}, stopCh: make(chan struct{}), done: make(chan struct{})}
}

// Denied records a refused request.
func (a *Auditor) Denied(actor Actor, perm Permission) {
	now := a.s.cfg.Now()
	actor = actor.Bounded()
	actor.ID = Bounded(actor.ID, MaxNameBytes)
	// The organization may be whatever a caller named (one that does not exist is denied too).
	k := deniedKey{actor: actor.ID, org: Bounded(perm.Org, MaxNameBytes), action: Bounded(perm.Action, MaxNameBytes),
		resource: Bounded(perm.Object, MaxNameBytes)}
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.denied[k]
	if g == nil {
		if len(a.denied) >= AuditMaxKeys {
			a.over.since(now)
			count(&a.over.denials, domain.OverflowKeyCap, 1)
			return
		}
		g = &deniedAgg{id: uuid.Must(uuid.NewV7()), first: now, meta: actor}
		a.denied[k] = g
	}
	g.count++
	g.last = now
}

// AuthFailed records a failed authentication. Subject, address and user agent come from the
// caller; they are cut to the audit log's bounds here whatever the caller did.
func (a *Auditor) AuthFailed(reason, subject, remoteAddr, userAgent string) {
	now := a.s.cfg.Now()
	k := failedKey{reason: Bounded(reason, maxReasonBytes), subject: Bounded(subject, MaxNameBytes), addr: Bounded(remoteAddr, MaxAddrBytes)}
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.failed[k]
	if g == nil {
		if len(a.failed) >= AuditMaxKeys {
			a.over.since(now)
			count(&a.over.failures, domain.OverflowKeyCap, 1)
			return
		}
		g = &failedAgg{id: uuid.Must(uuid.NewV7()), first: now, userAgent: Bounded(userAgent, MaxUserAgentBytes)}
		a.failed[k] = g
	}
	g.count++
}

// Held reports how many denial and failed-login aggregates wait for the next flush; each is at
// most AuditMaxKeys.
func (a *Auditor) Held() (denials, authFailures int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.denied), len(a.failed)
}

func (a *Auditor) start(ctx context.Context, every time.Duration) {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return
	}
	a.started = true
	a.mu.Unlock()
	go func() {
		defer close(a.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = a.Flush(context.WithoutCancel(ctx)) // a failure is logged, and what failed is kept
			case <-a.stopCh:
				a.finalFlush(context.WithoutCancel(ctx))
				return
			}
		}
	}()
}

// stop flushes what is pending and ends the flusher, waiting at most about AuditStopTimeout:
// a database that does not answer must not hold up the shutdown. Safe to call twice.
func (a *Auditor) stop() {
	a.once.Do(func() {
		a.mu.Lock()
		if !a.started {
			// Never started (an offline tool): what it recorded is flushed all the same.
			a.started = true
			go func() {
				defer close(a.done)
				a.finalFlush(context.Background())
			}()
		}
		a.mu.Unlock()
		close(a.stopCh)
	})
	// A second past the flush's own bound: an append already handed to the store ends on the
	// store's terms, not this context's.
	t := time.NewTimer(AuditStopTimeout + time.Second)
	defer t.Stop()
	select {
	case <-a.done:
	case <-t.C:
		d, f := a.Held()
		a.s.log.Error("audit: the final flush did not finish in time; events it holds may be lost", "denials", d, "auth_failures", f,
			"timeout_ms", AuditStopTimeout.Milliseconds())
	}
}

func (a *Auditor) finalFlush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, AuditStopTimeout)
	defer cancel()
	if err := a.Flush(ctx); err != nil {
		d, f := a.Held()
		a.s.log.Error("audit: events not written at shutdown are lost", "denials", d, "auth_failures", f, "error", err)
	}
}

// auditItem is one aggregate on its way to the log.
type auditItem struct {
	dk      deniedKey
	dg      *deniedAgg // nil for a failed login
	fk      failedKey
	fg      *failedAgg
	settled bool // written, or dropped for good (and counted)
	reduced bool // its full event did not fit the store's limits
}

func (it *auditItem) count() int {
	if it.dg != nil {
		return it.dg.count
	}
	return it.fg.count
}

func (it *auditItem) eventType() string {
	if it.dg != nil {
		return domain.TypeAccessDenied
	}
	return domain.TypeAuthFailed
}

// event builds the item's event. Reduced, every field is cut to reducedFieldBytes: what is left
// when the store refused the event in full.
func (it *auditItem) event(now time.Time, reduced bool) eventstore.EventData {
	b := func(s string, max int) string {
		if reduced {
			max = reducedFieldBytes
		}
		return Bounded(s, max)
	}
	var p, m []byte
	var id uuid.UUID
	if g := it.dg; g != nil {
		k := it.dk
		actor, org := b(k.actor, MaxNameBytes), b(orgOrEmpty(k.org), MaxNameBytes)
		p, _ = json.Marshal(domain.AccessDenied{ActorID: actor, OrgID: org, Action: b(k.action, MaxNameBytes),
			Resource: b(k.resource, MaxNameBytes), Count: g.count, WindowStart: g.first.UTC(), WindowEnd: g.last.UTC()})
		meta := domain.Metadata{Actor: actor, OrgID: org, ClientIP: b(g.meta.ClientIP, MaxAddrBytes), RequestID: b(g.meta.RequestID, MaxIDBytes),
			CorrelationID: b(g.meta.CorrelationID, MaxIDBytes), OccurredAt: g.last.UTC()}
		if !reduced {
			meta.UserAgent = b(g.meta.UserAgent, MaxUserAgentBytes)
		}
		m, _ = json.Marshal(meta)
		id = g.id
	} else {
		g, k := it.fg, it.fk
		e := domain.AuthFailed{Reason: b(k.reason, maxReasonBytes), Subject: b(k.subject, MaxNameBytes), RemoteAddr: b(k.addr, MaxAddrBytes),
			Count: g.count, At: g.first.UTC()}
		meta := domain.Metadata{Actor: "anonymous", ClientIP: e.RemoteAddr, OccurredAt: now.UTC()}
		if !reduced {
			e.UserAgent = b(g.userAgent, MaxUserAgentBytes)
			meta.UserAgent = e.UserAgent
		}
		p, _ = json.Marshal(e)
		m, _ = json.Marshal(meta)
		id = g.id
	}
	if reduced && id != uuid.Nil {
		id = uuid.NewSHA1(id, []byte("reduced")) // another event than the one refused, as stable
	}
	return eventstore.EventData{ID: id, Type: it.eventType(), Payload: p, Metadata: m}
}

// fits tells whether the store's size limits admit ev.
func fits(ev eventstore.EventData) bool {
	return len(ev.Payload) <= eventstore.MaxPayloadBytes && len(ev.Metadata) <= eventstore.MaxMetadataBytes
}

// refusedReason names why the store refuses an event for good, or "" when it may take it later.
func refusedReason(err error) string {
	switch {
	case errors.Is(err, eventstore.ErrTooLarge):
		return domain.OverflowTooLarge
	case errors.Is(err, eventstore.ErrInvalidEvent):
		return domain.OverflowInvalid
	case errors.Is(err, eventstore.ErrUnknownEventType):
		return domain.OverflowUnknownType
	}
	return ""
}

// Flush writes the aggregated audit events now, denials first, in appends of at most
// AuditChunkEvents events, then an audit.overflowed event when anything was counted instead of
// recorded. An event the store refuses for good is written reduced, or dropped and counted. When
// the store is unavailable, what was not written is kept for the next flush (within the same
// bounds) and the error is returned.
func (a *Auditor) Flush(ctx context.Context) error {
	a.mu.Lock()
	denied, failed, over := a.denied, a.failed, a.over
	a.denied, a.failed, a.over = map[deniedKey]*deniedAgg{}, map[failedKey]*failedAgg{}, overflow{}
	a.mu.Unlock()
	if len(denied) == 0 && len(failed) == 0 && over.empty() {
		return nil
	}
	now := a.s.cfg.Now()
	items := make([]auditItem, 0, len(denied)+len(failed))
	for k, g := range denied {
		items = append(items, auditItem{dk: k, dg: g})
	}
	for k, g := range failed {
		items = append(items, auditItem{fk: k, fg: g})
	}
	err := a.write(ctx, items, &over, now)
	if err == nil && !over.empty() {
		err = a.writeOverflow(ctx, over, now)
		if err == nil {
			over = overflow{}
		}
	}
	if err != nil {
		kept := a.putBack(items, over)
		a.s.log.Error("audit events not written yet; kept for the next flush", "events", kept, "error", err)
		return err
	}
	return nil
}

// write appends the items in chunks and marks each one it wrote or dropped as settled. It stops
// at the first failure that may pass (the store or database unavailable) and returns it.
func (a *Auditor) write(ctx context.Context, items []auditItem, over *overflow, now time.Time) error {
	dropped := map[string]int{}
	defer func() {
		if len(dropped) > 0 {
			a.s.log.Warn("audit events dropped: the store refuses them even reduced", "events_by_reason", dropped)
		}
	}()
	for start := 0; start < len(items); start += AuditChunkEvents {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := items[start:min(start+AuditChunkEvents, len(items))]
		evs := make([]eventstore.EventData, 0, len(chunk))
		at := make([]int, 0, len(chunk))
		for i := range chunk {
			ev := chunk[i].event(now, false)
			if !fits(ev) {
				chunk[i].reduced = true
				if ev = chunk[i].event(now, true); !fits(ev) {
					a.drop(&chunk[i], domain.OverflowTooLarge, over, dropped)
					continue
				}
			}
			evs = append(evs, ev)
			at = append(at, i)
		}
		if len(evs) == 0 {
			continue
		}
		_, err := a.s.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion, evs...)
		if err == nil {
			for _, i := range at {
				chunk[i].settled = true
				if chunk[i].reduced {
					over.reduced++
				}
			}
			continue
		}
		if refusedReason(err) == "" && !errors.Is(err, eventstore.ErrDuplicateEventID) {
			return err
		}
		// Some event spoils the append: append one by one so that only it is reduced or dropped.
		for j, i := range at {
			if err := a.writeOne(ctx, &chunk[i], evs[j], over, now, dropped); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeOne appends one item's event; refused for good, it tries the reduced event once, then
// drops the item (counted). It returns only failures that may pass.
func (a *Auditor) writeOne(ctx context.Context, it *auditItem, ev eventstore.EventData, over *overflow, now time.Time, dropped map[string]int) error {
	_, err := a.s.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion, ev)
	if err == nil || errors.Is(err, eventstore.ErrDuplicateEventID) {
		// A duplicate is this very event: an earlier append of it landed though its outcome was
		// reported unknown.
		it.settled = true
		if it.reduced {
			over.reduced++
		}
		return nil
	}
	reason := refusedReason(err)
	if reason == "" {
		return err
	}
	if !it.reduced {
		it.reduced = true
		_, err = a.s.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion, it.event(now, true))
		if err == nil || errors.Is(err, eventstore.ErrDuplicateEventID) {
			over.reduced++
			it.settled = true
			return nil
		}
		if reason = refusedReason(err); reason == "" {
			return err
		}
	}
	a.drop(it, reason, over, dropped)
	return nil
}

// drop settles an item the store will never take, counting it and the requests it stood for.
func (a *Auditor) drop(it *auditItem, reason string, over *overflow, dropped map[string]int) {
	it.settled = true
	dropped[reason]++
	count(&over.events, reason, 1)
	if it.dg != nil {
		over.since(it.dg.first)
		count(&over.denials, reason, it.dg.count)
	} else {
		over.since(it.fg.first)
		count(&over.failures, reason, it.fg.count)
	}
}

// writeOverflow records what the window counted instead of recording. Refused for good (the
// store does not know the type), the counts are logged and dropped: keeping them would hold the
// counts of every later window too.
func (a *Auditor) writeOverflow(ctx context.Context, over overflow, now time.Time) error {
	start := over.start
	if start.IsZero() || start.After(now) {
		start = now
	}
	p, _ := json.Marshal(domain.AuditOverflowed{WindowStart: start.UTC(), WindowEnd: now.UTC(), DroppedDenials: over.denials,
		DroppedAuthFailures: over.failures, DroppedEvents: over.events, ReducedEvents: over.reduced})
	m, _ := json.Marshal(domain.Metadata{Actor: auditorActor, OccurredAt: now.UTC()})
	_, err := a.s.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion,
		eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: domain.TypeAuditOverflowed, Payload: p, Metadata: m})
	if err != nil && refusedReason(err) != "" {
		a.s.log.Error("audit: the overflow count cannot be stored; dropped", "dropped_denials", over.denials,
			"dropped_auth_failures", over.failures, "dropped_events", over.events, "reduced_events", over.reduced, "error", err)
		return nil
	}
	return err
}

// putBack returns what a failed flush did not settle to the current window, within its bounds:
// an aggregate whose key the window holds is merged into it, one that no longer fits is counted.
// It returns how many aggregates it kept.
func (a *Auditor) putBack(items []auditItem, over overflow) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	kept := 0
	for i := range items {
		it := &items[i]
		if it.settled {
			continue
		}
		if g := it.dg; g != nil {
			switch cur := a.denied[it.dk]; {
			case cur != nil:
				cur.count += g.count
				cur.first = g.first
				kept++
			case len(a.denied) < AuditMaxKeys:
				a.denied[it.dk] = g
				kept++
			default:
				a.over.since(g.first)
				count(&a.over.denials, domain.OverflowKeyCap, g.count)
			}
			continue
		}
		g := it.fg
		switch cur := a.failed[it.fk]; {
		case cur != nil:
			cur.count += g.count
			cur.first = g.first
			kept++
		case len(a.failed) < AuditMaxKeys:
			a.failed[it.fk] = g
			kept++
		default:
			a.over.since(g.first)
			count(&a.over.failures, domain.OverflowKeyCap, g.count)
		}
	}
	a.over.merge(over)
	return kept
}

func orgOrEmpty(org string) string {
	if org == domain.PlatformOrg {
		return ""
	}
	return org
}
