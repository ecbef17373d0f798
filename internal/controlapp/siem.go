package controlapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/projections/readmodels"
	"github.com/tunnelplane/tunnelplane/siem"
)

// siemLockKey is the PostgreSQL advisory lock the instance forwarding to SIEM sinks holds: one
// instance per database forwards, so no sink is fed twice at once and cursors are not raced.
const siemLockKey = 0x7470_5349_454d // "tpSIEM"

// SIEMSinksConfig configures the sinks' runner.
type SIEMSinksConfig struct {
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	Sinks interface {
		ListSIEMSinks(ctx context.Context, f readmodels.SIEMSinkFilter) ([]readmodels.SIEMSink, error)
	}
	Options siem.SinkOptions
	Metrics *siem.Metrics
	// Poll is how often the sinks are read again (default 1s): a configured, changed, removed
	// or skipped-for sink takes effect within it.
	Poll   time.Duration
	Logger *slog.Logger
}

// SIEMSinks runs a forwarder for each sink the log configured, in one control plane instance at
// a time: it starts, restarts (on a new version) and stops them as the sinks view changes, and
// passes them the records operators skipped.
type SIEMSinks struct {
	cfg  SIEMSinksConfig
	life lifecycle.Lifecycle

	lock    advisoryLock // siemLockKey, held while this instance forwards
	leading atomic.Bool
	running map[string]*runningSink
}

type runningSink struct {
	f       *siem.Forwarder
	spec    domain.SIEMSinkSpec
	version int64
	failed  string // why it could not start (retried at the next poll)
}

// NewSIEMSinks checks cfg.
func NewSIEMSinks(cfg SIEMSinksConfig) (*SIEMSinks, error) {
	if cfg.Store == nil || cfg.Pool == nil || cfg.Sinks == nil || cfg.Options.Secrets == nil {
		return nil, errors.New("siem sinks: a store, a pool, the sinks view and a secrets key are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "siem")
	return &SIEMSinks{cfg: cfg, running: map[string]*runningSink{},
		lock: advisoryLock{pool: cfg.Pool, key: siemLockKey, what: "siem", log: cfg.Logger}}, nil
}

// Start runs the sinks until Stop.
func (s *SIEMSinks) Start(ctx context.Context) error {
	return s.life.Start(ctx, "siem sinks", func(context.Context) error {
		s.life.Go(s.run)
		return nil
	})
}

// Leading reports whether this instance forwards to the sinks (it holds the lock).
func (s *SIEMSinks) Leading() bool { return s.leading.Load() }

// Stop stops every forwarder (what was delivered but not recorded goes again at the next start)
// and lets go of the lock.
func (s *SIEMSinks) Stop() { s.life.Stop() }

func (s *SIEMSinks) run(ctx context.Context) {
	defer s.release()
	for {
		if s.lead(ctx) {
			s.sync(ctx)
		}
		if !lifecycle.Sleep(ctx, s.cfg.Poll) {
			return
		}
	}
}

// lead reports whether this instance holds the forwarding lock, taking it when it is free. A
// lock connection that broke stops every forwarder first: another instance may take over.
func (s *SIEMSinks) lead(ctx context.Context) bool {
	ok := s.lock.hold(ctx, s.stopAll)
	s.leading.Store(ok)
	return ok
}

// release stops every forwarder, then lets go of the lock.
func (s *SIEMSinks) release() {
	s.stopAll()
	s.leading.Store(false)
	s.lock.release()
}

func (s *SIEMSinks) stopAll() {
	for id, r := range s.running {
		if r.f != nil {
			r.f.Stop()
		}
		delete(s.running, id)
	}
}

// sync makes the running forwarders those of the sinks view.
func (s *SIEMSinks) sync(ctx context.Context) {
	sinks, err := s.cfg.Sinks.ListSIEMSinks(ctx, readmodels.SIEMSinkFilter{Limit: 10000})
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Logger.Warn("siem: cannot read the sinks", "error", err)
		}
		return
	}
	seen := make(map[string]bool, len(sinks))
	for _, k := range sinks {
		seen[k.ID] = true
		r := s.running[k.ID]
		if r != nil && r.f != nil && reflect.DeepEqual(r.spec, k.Spec) {
			// Unchanged but for the records skipped (skips are events of the sink's stream too):
			// the running forwarder takes them, no restart.
			if r.version != k.Version {
				r.f.Skip(positions(k.Skipped))
				r.version = k.Version
			}
			continue
		}
		if r != nil && r.f != nil {
			r.f.Stop()
			s.cfg.Logger.Info("siem: sink changed; restarting it", "sink_id", k.ID, "version", k.Version)
		}
		s.running[k.ID] = s.start(ctx, k, r)
	}
	for id, r := range s.running {
		if !seen[id] {
			if r.f != nil {
				r.f.Stop()
			}
			delete(s.running, id)
			s.cfg.Metrics.Forget(id)
			s.cfg.Logger.Info("siem: sink removed; stopped", "sink_id", id)
		}
	}
}

// start builds and starts a sink's forwarder; one that cannot start is recorded beside its
// cursor (the API shows it) and tried again at the next poll.
func (s *SIEMSinks) start(ctx context.Context, k readmodels.SIEMSink, before *runningSink) *runningSink {
	r := &runningSink{spec: k.Spec, version: k.Version}
	fail := func(err error) *runningSink {
		r.failed = err.Error()
		if before == nil || before.failed != r.failed {
			s.cfg.Logger.Error("siem: sink cannot start; retrying", "sink_id", k.ID, "name", k.Name, "error", err)
			if err := siem.RecordSinkError(ctx, s.cfg.Pool, k.ID, "not started: "+err.Error()); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("siem: could not record why a sink did not start", "sink_id", k.ID, "error", err)
			}
		}
		return r
	}
	parts, err := siem.BuildSink(k.OrgID, k.Spec, s.cfg.Options)
	if err != nil {
		return fail(err)
	}
	f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: k.ID, Store: s.cfg.Store, Pool: s.cfg.Pool, Format: parts.Format, AppendFormat: parts.AppendFormat, Filter: parts.Filter,
		Redact: parts.Redact, Transport: parts.Transport, Unsigned: parts.Unsigned, Metrics: s.cfg.Metrics, Logger: s.cfg.Logger.With("sink_name", k.Name)})
	if err != nil {
		return fail(err)
	}
	f.Skip(positions(k.Skipped))
	if err := f.Start(ctx); err != nil {
		return fail(fmt.Errorf("start: %w", err))
	}
	r.f = f
	s.cfg.Logger.Info("siem: forwarding", "sink_id", k.ID, "name", k.Name, "transport", k.Spec.Transport, "format", k.Spec.Format, "org_id", k.OrgID)
	return r
}

func positions(p []int64) []uint64 {
	out := make([]uint64, len(p))
	for i, v := range p {
		out[i] = uint64(v)
	}
	return out
}
