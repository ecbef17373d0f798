// Package grantexpiry is the process manager that records grant.expired at each grant's
// deadline. It owns no state of its own: at start it reads the grants the log holds (a deadline
// that passed while no process ran fires at once), then follows the log for new ones. What it
// appends is decided by the tunnel's sharing aggregate (commands.Service.ExpireGrant) under an
// event id derived from the grant id, so two control processes, or one restarted mid-append,
// record each expiry exactly once. It must not decide access: nodes refuse an expired grant from
// its deadline on without waiting for this event.
//
// With Config.Lead set, the same manager is the notice one: it records grant.expiring Lead before
// each grant's deadline (at once for a grant shorter than that), once, for webhooks and the
// notifications feed (commands.Service.NoticeGrantExpiring; its own stream per grant, written at
// version 0, so a second process or a restart adds nothing).
package grantexpiry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Config wires the manager.
type Config struct {
	Store   *eventstore.Store
	Service *commands.Service
	// Retry is how long a failed expiry waits before it is tried again. Default 5s.
	Retry time.Duration
	// Lead, when set, makes this the notice manager: grant.expiring at the deadline minus Lead.
	Lead   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Validate reports every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("grant expiry: Store is required"))
	}
	if c.Service == nil {
		errs = append(errs, errors.New("grant expiry: Service is required"))
	}
	if c.Retry < 0 || c.Lead < 0 {
		errs = append(errs, errors.New("grant expiry: Retry or Lead is negative"))
	}
	return errors.Join(errs...)
}

type pendingGrant struct {
	org, tunnel string
	due         time.Time
}

// Manager appends grant.expired at each grant's deadline.
type Manager struct {
	cfg  Config
	life lifecycle.Lifecycle

	mu      sync.Mutex
	pending map[string]pendingGrant // grant id → deadline (grants not ended as far as read)
	wake    chan struct{}
	fired   int
}

// New validates cfg.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Retry == 0 {
		cfg.Retry = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, pending: map[string]pendingGrant{}, wake: make(chan struct{}, 1)}, nil
}

var grantTypes = []string{domain.TypeGrantCreated, domain.TypeGrantRevoked, domain.TypeGrantExpired, domain.TypeGrantExpiring}

// name is the manager's in logs.
func (m *Manager) name() string {
	if m.cfg.Lead > 0 {
		return "grant notice"
	}
	return "grant expiry"
}

// Start reads every grant the log holds up to its head, then follows the log and fires expiries
// until Stop. Deadlines already passed fire at once.
func (m *Manager) Start(ctx context.Context) error {
	return m.life.Start(ctx, m.name(), func(runCtx context.Context) error {
		follow, err := m.cfg.Store.ReadAndFollow(ctx, grantTypes, m.cfg.Retry, func(err error, from uint64) {
			m.cfg.Logger.Warn(m.name()+": following the log failed; resuming", "error", err, "from", from)
		}, m.fold)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name(), err)
		}
		m.life.Go(follow)
		m.life.Go(m.fire)
		return nil
	})
}

// Stop ends the manager and waits for it. Safe to call twice.
func (m *Manager) Stop() { m.life.Stop() }

// Fired is how many expiries this manager appended.
func (m *Manager) Fired() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fired
}

// fold takes grant events in log order.
func (m *Manager) fold(recs []eventstore.Record) error {
	if len(recs) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		e, err := domain.Decode(r.Type, r.Payload)
		if err != nil {
			return fmt.Errorf("grant expiry at %d: %w", r.Position, err)
		}
		switch ev := e.(type) {
		case *domain.GrantCreated:
			m.pending[ev.GrantID] = pendingGrant{org: ev.OrgID, tunnel: ev.TunnelID, due: ev.ExpiresAt.Add(-m.cfg.Lead)}
		case *domain.GrantRevoked:
			delete(m.pending, ev.GrantID)
		case *domain.GrantExpired:
			delete(m.pending, ev.GrantID)
		case *domain.GrantExpiring:
			if m.cfg.Lead > 0 {
				delete(m.pending, ev.GrantID)
			}
		}
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// fire waits for the next deadline and records every expiry due.
func (m *Manager) fire(ctx context.Context) {
	for {
		now := m.cfg.Now()
		var due []string
		next := time.Time{}
		m.mu.Lock()
		for id, g := range m.pending {
			if !now.Before(g.due) {
				due = append(due, id)
			} else if next.IsZero() || g.due.Before(next) {
				next = g.due
			}
		}
		m.mu.Unlock()
		sort.Strings(due)
		for _, id := range due {
			if ctx.Err() != nil {
				return
			}
			m.expire(ctx, id)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = next.Sub(m.cfg.Now())
		}
		if len(due) > 0 && m.anyDue() {
			wait = m.cfg.Retry // what failed is tried again later, not in a tight loop
		}
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func (m *Manager) anyDue() bool {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.pending {
		if !now.Before(g.due) {
			return true
		}
	}
	return false
}

// expire records one grant's expiry. The log's own grant.expired (from this manager or another
// process) removes it from pending as it is followed; a grant that ended otherwise is removed here.
func (m *Manager) expire(ctx context.Context, id string) {
	m.mu.Lock()
	g, ok := m.pending[id]
	m.mu.Unlock()
	if !ok {
		return
	}
	actor, act := "system:grant-expiry", m.cfg.Service.ExpireGrant
	if m.cfg.Lead > 0 {
		actor, act = "system:grant-notice", m.cfg.Service.NoticeGrantExpiring
	}
	actx := commands.WithActor(ctx, commands.Actor{ID: actor, CorrelationID: id})
	res, err := act(actx, g.org, g.tunnel, id)
	switch {
	case err == nil:
		m.mu.Lock()
		delete(m.pending, id)
		if !res.Noop {
			m.fired++
		}
		m.mu.Unlock()
		if !res.Noop {
			m.cfg.Logger.Info(m.name()+" recorded", "grant_id", id, "tunnel_id", g.tunnel, "position", res.Position, "causation_id", id)
		}
	case errors.Is(err, domain.ErrNotFound):
		// The tunnel is gone from this organization: nothing can be recorded, nothing calls.
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	default:
		if ctx.Err() == nil {
			m.cfg.Logger.Warn(m.name()+" failed; retrying", "grant_id", id, "error", err)
		}
	}
}
