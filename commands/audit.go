package commands

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Auditor turns denials and failed logins into audit events, aggregated per actor (or subject and
// address) per window, so a flood of requests becomes one event with a count rather than a flood
// of events.
type Auditor struct {
	s *Service

	mu      sync.Mutex
	denied  map[deniedKey]*deniedAgg
	failed  map[failedKey]*failedAgg
	stopCh  chan struct{}
	done    chan struct{}
	started bool
	once    sync.Once
}

type deniedKey struct{ actor, org, action, resource string }
type deniedAgg struct {
	count       int
	first, last time.Time
	meta        Actor
}
type failedKey struct{ reason, subject, addr string }
type failedAgg struct {
	count     int
	first     time.Time
	userAgent string
}

func newAuditor(s *Service) *Auditor {
	return &Auditor{s: s, denied: map[deniedKey]*deniedAgg{}, failed: map[failedKey]*failedAgg{}, stopCh: make(chan struct{}), done: make(chan struct{})}
}

// Denied records a refused request.
func (a *Auditor) Denied(actor Actor, perm Permission) {
	now := a.s.cfg.Now()
	k := deniedKey{actor: actor.ID, org: perm.Org, action: perm.Action, resource: perm.Object}
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.denied[k]
	if g == nil {
		g = &deniedAgg{first: now, meta: actor}
		a.denied[k] = g
	}
	g.count++
	g.last = now
}

// AuthFailed records a failed authentication.
func (a *Auditor) AuthFailed(reason, subject, remoteAddr, userAgent string) {
	now := a.s.cfg.Now()
	k := failedKey{reason: reason, subject: subject, addr: remoteAddr}
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.failed[k]
	if g == nil {
		g = &failedAgg{first: now, userAgent: userAgent}
		a.failed[k] = g
	}
	g.count++
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
				a.Flush(context.WithoutCancel(ctx))
			case <-a.stopCh:
				a.Flush(context.WithoutCancel(ctx))
				return
			}
		}
	}()
}

func (a *Auditor) stop() {
	a.once.Do(func() { close(a.stopCh) })
	a.mu.Lock()
	started := a.started
	a.mu.Unlock()
	if started {
		<-a.done
	}
}

// Flush writes the aggregated audit events now. Events that cannot be written are kept for the
// next flush (nothing is dropped silently).
func (a *Auditor) Flush(ctx context.Context) {
	a.mu.Lock()
	denied, failed := a.denied, a.failed
	a.denied, a.failed = map[deniedKey]*deniedAgg{}, map[failedKey]*failedAgg{}
	a.mu.Unlock()
	if len(denied) == 0 && len(failed) == 0 {
		return
	}
	now := a.s.cfg.Now()
	var evs []eventstore.EventData
	for k, g := range denied {
		p, _ := json.Marshal(domain.AccessDenied{ActorID: k.actor, OrgID: orgOrEmpty(k.org), Action: k.action, Resource: k.resource,
			Count: g.count, WindowStart: g.first.UTC(), WindowEnd: g.last.UTC()})
		m, _ := json.Marshal(domain.Metadata{Actor: k.actor, OrgID: orgOrEmpty(k.org), ClientIP: g.meta.ClientIP, UserAgent: g.meta.UserAgent,
			RequestID: g.meta.RequestID, CorrelationID: g.meta.CorrelationID, OccurredAt: g.last.UTC()})
		evs = append(evs, eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: domain.TypeAccessDenied, Payload: p, Metadata: m})
	}
	for k, g := range failed {
		p, _ := json.Marshal(domain.AuthFailed{Reason: k.reason, Subject: k.subject, RemoteAddr: k.addr, UserAgent: g.userAgent, Count: g.count, At: g.first.UTC()})
		m, _ := json.Marshal(domain.Metadata{Actor: "anonymous", ClientIP: k.addr, UserAgent: g.userAgent, OccurredAt: now.UTC()})
		evs = append(evs, eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: domain.TypeAuthFailed, Payload: p, Metadata: m})
	}
	if _, err := a.s.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion, evs...); err != nil {
		a.s.log.Error("audit events not written yet; kept for the next flush", "events", len(evs), "error", err)
		a.mu.Lock()
		for k, g := range denied {
			if cur := a.denied[k]; cur != nil {
				cur.count += g.count
				cur.first = g.first
			} else {
				a.denied[k] = g
			}
		}
		for k, g := range failed {
			if cur := a.failed[k]; cur != nil {
				cur.count += g.count
			} else {
				a.failed[k] = g
			}
		}
		a.mu.Unlock()
	}
}

func orgOrEmpty(org string) string {
	if org == domain.PlatformOrg {
		return ""
	}
	return org
}
