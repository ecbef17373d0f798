package controlbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// RegistryWatcherConfig configures the control plane's RegistryWatcher.
type RegistryWatcherConfig struct {
	// Conn is the control plane's NATS connection; the watcher never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// OnLost is called when a node's heartbeat expires or is deleted, with the time of its last
	// heartbeat as the server recorded it. Required.
	OnLost func(nodeID string, lastSeen time.Time)
	// OnRecovered is called when a node reported lost heartbeats again. Required.
	OnRecovered func(nodeID string)
	// TTL is how long a heartbeat lives. Default: the bucket's TTL. The watcher declares a node
	// lost itself when no heartbeat arrived for TTL + Grace, even if the server's expiry marker
	// never reaches it.
	TTL time.Duration
	// Grace is added to TTL before the watcher's own verdict. Default 1s.
	Grace time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem with the configuration.
func (c RegistryWatcherConfig) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: registry watcher: Conn is required", ErrInvalidConfig))
	}
	if c.OnLost == nil || c.OnRecovered == nil {
		errs = append(errs, fmt.Errorf("%w: registry watcher: OnLost and OnRecovered are required", ErrInvalidConfig))
	}
	if c.TTL < 0 || c.Grace < 0 {
		errs = append(errs, fmt.Errorf("%w: registry watcher: TTL %s / Grace %s must not be negative", ErrInvalidConfig, c.TTL, c.Grace))
	}
	return errors.Join(errs...)
}

type nodeState struct {
	hb       wire.Heartbeat
	lastSeen time.Time // server time of the last heartbeat
	deadline time.Time // local time after which the node counts as lost
	lost     bool
}

// RegistryWatcher follows tp_nodes: Live lists nodes with a current heartbeat; a node whose key
// expires or disappears is reported once through OnLost, and through OnRecovered when it
// heartbeats again. Callbacks run one at a time on the watcher's goroutine; nodes already present
// when the watcher starts are live without a callback.
type RegistryWatcher struct {
	cfg RegistryWatcherConfig
	log *slog.Logger

	mu    sync.Mutex
	nodes map[string]*nodeState

	life lifecycle.Lifecycle
}

// NewRegistryWatcher prepares a watcher; Start begins watching.
func NewRegistryWatcher(cfg RegistryWatcherConfig) (*RegistryWatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &RegistryWatcher{cfg: cfg, log: cfg.Logger.With("component", "bus.registry"), nodes: map[string]*nodeState{}}, nil
}

// Start opens the bucket (it must exist: EnsureStreams) and starts watching. It returns once the
// current entries are loaded, so Live is complete right after.
func (w *RegistryWatcher) Start(ctx context.Context) error {
	return w.life.Start(ctx, "registry watcher", func(lctx context.Context) error {
		watcher, err := w.watch(ctx, lctx)
		if err != nil {
			return err
		}
		w.life.Go(func(context.Context) { w.run(lctx, watcher) })
		return nil
	})
}

// watch opens the bucket and a watch on it that lasts as long as lctx, and loads the current
// entries.
func (w *RegistryWatcher) watch(ctx, lctx context.Context) (jetstream.KeyWatcher, error) {
	js, err := jetstream.New(w.cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("start registry watcher: %w", err)
	}
	kv, err := js.KeyValue(ctx, w.cfg.Names.NodesBucket())
	if err != nil {
		return nil, fmt.Errorf("start registry watcher: bucket %s: %w", w.cfg.Names.NodesBucket(), err)
	}
	if w.cfg.TTL == 0 {
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("start registry watcher: %w", err)
		}
		w.cfg.TTL = st.TTL()
	}
	if w.cfg.TTL <= 0 {
		return nil, fmt.Errorf("start registry watcher: %w: bucket %s has no TTL, so silent nodes would never expire", ErrInvalidConfig, w.cfg.Names.NodesBucket())
	}
	watcher, err := kv.WatchAll(lctx)
	if err != nil {
		return nil, fmt.Errorf("start registry watcher: %w", err)
	}
	// Load what is there before returning; a nil entry marks the end of the current values.
	for {
		select {
		case e, ok := <-watcher.Updates():
			if !ok {
				return nil, fmt.Errorf("start registry watcher: %w: watch ended", ErrClosed)
			}
			if e == nil {
				return watcher, nil
			}
			w.apply(e, true)
		case <-ctx.Done():
			_ = watcher.Stop()
			return nil, fmt.Errorf("start registry watcher: %w", ctx.Err())
		}
	}
}

// Stop ends watching. Safe to call twice, and before Start.
func (w *RegistryWatcher) Stop() {
	w.life.Stop()
}

// Live returns the nodes with a current heartbeat, by node id.
func (w *RegistryWatcher) Live() []wire.Heartbeat {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]wire.Heartbeat, 0, len(w.nodes))
	for _, n := range w.nodes {
		if !n.lost {
			out = append(out, n.hb)
		}
	}
	slices.SortFunc(out, func(a, b wire.Heartbeat) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

func (w *RegistryWatcher) run(ctx context.Context, watcher jetstream.KeyWatcher) {
	defer func() { _ = watcher.Stop() }()
	tick := time.NewTicker(max(w.cfg.TTL/10, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-watcher.Updates():
			if !ok {
				return
			}
			if e != nil {
				w.apply(e, false)
			}
		case <-tick.C:
			w.expire()
		}
	}
}

// apply folds one bucket entry into the state and fires the callback it implies.
func (w *RegistryWatcher) apply(e jetstream.KeyValueEntry, initial bool) {
	id := e.Key()
	switch e.Operation() {
	case jetstream.KeyValuePut:
		var hb wire.Heartbeat
		if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.NodeID != id {
			w.log.Warn("ignoring a malformed heartbeat", "key", id, "error", err)
			return
		}
		w.mu.Lock()
		n, known := w.nodes[id]
		if !known {
			n = &nodeState{}
			w.nodes[id] = n
		}
		recovered := n.lost
		n.hb, n.lastSeen, n.lost = hb, e.Created(), false
		n.deadline = time.Now().Add(w.cfg.TTL + w.cfg.Grace)
		w.mu.Unlock()
		if recovered && !initial {
			w.log.Info("node heartbeats again", "node_id", id)
			w.cfg.OnRecovered(id)
		}
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		// Expiry markers arrive as deletes (the bucket has LimitMarkerTTL).
		w.markLost(id)
	}
}

func (w *RegistryWatcher) expire() {
	now := time.Now()
	w.mu.Lock()
	var due []string
	for id, n := range w.nodes {
		if !n.lost && now.After(n.deadline) {
			due = append(due, id)
		}
	}
	w.mu.Unlock()
	slices.Sort(due)
	for _, id := range due {
		w.markLost(id)
	}
}

func (w *RegistryWatcher) markLost(id string) {
	w.mu.Lock()
	n, ok := w.nodes[id]
	if !ok || n.lost {
		w.mu.Unlock()
		return
	}
	n.lost = true
	lastSeen := n.lastSeen
	w.mu.Unlock()
	w.log.Warn("node lost", "node_id", id, "last_seen", lastSeen)
	w.cfg.OnLost(id, lastSeen)
}
