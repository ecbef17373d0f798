package nodeapp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/dataplane/view"
)

// snapshotEvery is how often the node saves its view when it has changed.
const snapshotEvery = time.Minute

// snapshots keeps the view's snapshot file: restored at start when it fits the log, saved while
// the view moves and at stop.
type snapshots struct {
	path   string // <data-dir>/node/view.json
	origin string // the log's origin, which a snapshot names
	log    *slog.Logger

	mu         sync.Mutex // one write at a time
	savedAt    int64      // position of the last snapshot written or loaded (-1: none)
	restoredAt int64      // position the view was restored at (-1: it replayed from the start)
}

// relayedID tells which event TP_EVENTS holds at a position (ok false: none there).
type relayedID func(ctx context.Context, pos uint64) (id string, ok bool, err error)

// restore loads the snapshot into v if there is one that fits this log: taken of the same log
// origin and, where TP_EVENTS still holds the snapshot's last event, naming the same event there
// (a log restored from a backup reuses positions). It reports whether v holds the snapshot; when
// it does not, v may hold part of one and must be replaced by an empty view.
func (s *snapshots) restore(ctx context.Context, v *view.View, relayed relayedID) (bool, error) {
	err := v.LoadFile(s.path, s.origin)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err == nil {
		pos, id := v.Last()
		if pos < 0 {
			return false, nil
		}
		got, ok, lerr := relayed(ctx, uint64(pos))
		if lerr != nil {
			return false, fmt.Errorf("node: %w", lerr)
		}
		if !ok || got == id {
			s.mu.Lock()
			s.savedAt, s.restoredAt = pos, pos
			s.mu.Unlock()
			s.log.Info("node view restored from its snapshot", "position", pos)
			return true, nil
		}
		err = fmt.Errorf("%w: the log holds event %s at position %d, the snapshot %s", view.ErrSnapshotMismatch, got, pos, id)
	}
	s.log.Warn("node view snapshot not used; replaying the log from its start", "path", s.path, "error", err)
	return false, nil
}

// save writes v's snapshot if v moved since the last one.
func (s *snapshots) save(v *view.View) {
	if s == nil || v == nil || s.path == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.Position() <= s.savedAt {
		return
	}
	start := time.Now()
	pos, err := v.SaveFile(s.path, s.origin)
	if err != nil {
		s.log.Error("node view snapshot not saved", "error", err)
		return
	}
	s.savedAt = pos
	s.log.Debug("node view snapshot saved", "position", pos, "took", time.Since(start).Round(time.Microsecond))
}

func (s *snapshots) saved() int64 {
	if s == nil {
		return -1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.savedAt
}

// loop saves the view every snapshotEvery while it changes, so a restarted node replays at most
// that much of the log.
func (s *snapshots) loop(ctx context.Context, v func() *view.View) {
	t := time.NewTicker(snapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.save(v())
		case <-ctx.Done():
			return
		}
	}
}

// registerViewMetrics exports how far the view is: SREs alert on a node that stays unready or
// whose position lags the relay's (tunnelplane_relay_next_position - 1). A node started again in
// the same process replaces the previous node's gauges.
func (a *App) registerViewMetrics(reg prometheus.Registerer) error {
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_position",
			Help: "The last log position the node's view has applied (-1: none)."},
			func() float64 { return float64(a.View.Position()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_ready",
			Help: "1 once the node's view holds what the relayed log held when the node started; until then agents and callers get 503."},
			func() float64 {
				if a.View.Ready() == nil {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_snapshot_position",
			Help: "The log position of the node's last saved or loaded view snapshot (-1: none)."},
			func() float64 { return float64(a.snaps.saved()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnelplane_node_relayed_skipped_total",
			Help: "Relayed messages the node's view skipped because they do not verify against the log (someone else published them, or they were changed)."},
			func() float64 { return float64(a.skipped.Load()) }),
	}
	for _, g := range gauges {
		err := reg.Register(g)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			reg.Unregister(are.ExistingCollector)
			err = reg.Register(g)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// viewWait is how long Start waits for the view to catch up before it returns anyway (the node
// then answers 503 until the view has).
const viewWait = 5 * time.Second

// awaitView waits up to wait for the view to reach target, the log's last position at start;
// the replay is logged every 2 s until it has, and the view saved once it has.
func (a *App) awaitView(ctx context.Context, target int64, wait time.Duration) {
	start := time.Now()
	done := make(chan struct{})
	a.life.Go(func(runCtx context.Context) {
		defer close(done)
		for target >= 0 {
			wctx, cancel := context.WithTimeout(runCtx, 2*time.Second)
			err := a.View.WaitFor(wctx, uint64(target))
			cancel()
			if err == nil {
				break
			}
			if runCtx.Err() != nil {
				return
			}
			a.log.Info("node view catching up", "applied", a.View.Position()+1, "events", target+1)
		}
		a.log.Info("node view caught up", "events", target+1, "took", time.Since(start).Round(time.Millisecond))
		a.snaps.save(a.View)
	})
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		a.log.Warn("node view still catching up; agents and callers get 503 until it has", "applied", a.View.Position()+1, "events", target+1)
	case <-ctx.Done():
	}
}
