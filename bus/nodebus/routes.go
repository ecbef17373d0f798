package nodebus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// RouteTable is the node's side of the route table (dataplane/node): the tunnels it holds
// agents for, and the entries of other nodes.
type RouteTable interface {
	HeldTunnels() []string
	HeldChanged() <-chan struct{}
	PutRoute(tunnelID, nodeID, url string) bool
	DeleteRoute(tunnelID, nodeID string)
	ExpireRoutes(before time.Time) int
}

// RoutesConfig configures a node's Routes.
type RoutesConfig struct {
	// Conn is the node's NATS connection; Routes never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names; the bucket is Names.RoutesBucket().
	Names wire.Names
	// NodeID is this node; PeerURL where other nodes reach its peer endpoint (ws:// or wss://).
	NodeID, PeerURL string
	Table           RouteTable
	// Interval between refreshes of this node's entries (default 3s, the heartbeat's).
	Interval time.Duration
	// TTL is how long another node's entry counts without a refresh (default 15s, the bucket's
	// age, which removes it from NATS; servers before 2.11 do not tell watchers).
	TTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports every problem with the configuration.
func (c RoutesConfig) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: routes: Conn is required", ErrInvalidConfig))
	}
	if c.Table == nil {
		errs = append(errs, fmt.Errorf("%w: routes: Table is required", ErrInvalidConfig))
	}
	if !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: routes: NodeID %q is not a UUID", ErrInvalidConfig, c.NodeID))
	}
	if err := wire.CheckPeerURL(c.PeerURL); err != nil {
		errs = append(errs, fmt.Errorf("%w: routes: PeerURL: %w", ErrInvalidConfig, err))
	}
	if c.Interval < 0 || c.TTL < 0 || (c.Interval > 0 && c.TTL > 0 && c.TTL <= c.Interval) {
		errs = append(errs, fmt.Errorf("%w: routes: Interval %s and TTL %s: want 0 < Interval < TTL", ErrInvalidConfig, c.Interval, c.TTL))
	}
	return errors.Join(errs...)
}

// Routes keeps this node's entries in the route table (a KV bucket: one key per tunnel it holds
// an agent of, put when an agent takes the tunnel, refreshed every Interval, deleted when the
// tunnel's last session here ends and at Stop) and watches every other node's entries into the
// node's table, decoded as hostile input (wire.ParseRouteEntry; the table bounds their number).
type Routes struct {
	cfg  RoutesConfig
	log  *slog.Logger
	life lifecycle.Lifecycle
}

// NewRoutes prepares the route table's upkeep; Start begins it.
func NewRoutes(cfg RoutesConfig) (*Routes, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = 3 * time.Second
	}
	if cfg.TTL == 0 {
		cfg.TTL = max(15*time.Second, 2*cfg.Interval)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Routes{cfg: cfg, log: cfg.Logger.With("component", "bus.routes", "node_id", cfg.NodeID)}, nil
}

// Start launches the publishing and watching loops. A missing bucket (a control plane that
// predates the route table) is looked for again every Interval, with one warning.
func (r *Routes) Start(ctx context.Context) error {
	return r.life.Start(ctx, "routes", func(lctx context.Context) error {
		js, err := jetstream.New(r.cfg.Conn)
		if err != nil {
			return fmt.Errorf("start routes: %w", err)
		}
		r.life.Go(func(context.Context) { r.publish(lctx, js) })
		r.life.Go(func(context.Context) { r.watch(lctx, js) })
		return nil
	})
}

// Stop ends both loops after deleting this node's entries (for at most 2s). Safe to call twice.
func (r *Routes) Stop() { r.life.Stop() }

// bucket opens the route bucket, waiting for it (false: ctx ended).
func (r *Routes) bucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, bool) {
	warned := false
	for {
		bctx, cancel := context.WithTimeout(ctx, r.cfg.Interval)
		kv, err := js.KeyValue(bctx, r.cfg.Names.RoutesBucket())
		cancel()
		if err == nil {
			return kv, true
		}
		if !warned && ctx.Err() == nil {
			r.log.Warn("route table bucket not available; calls are not forwarded between nodes until it is", "bucket", r.cfg.Names.RoutesBucket(), "error", err)
			warned = true
		}
		if !lifecycle.Sleep(ctx, r.cfg.Interval) {
			return nil, false
		}
	}
}

func (r *Routes) publish(ctx context.Context, js jetstream.JetStream) {
	kv, ok := r.bucket(ctx, js)
	if !ok {
		return
	}
	published := map[string]bool{}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		for t := range published {
			_ = kv.Delete(dctx, wire.RouteKey(t, r.cfg.NodeID))
		}
	}()
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	failing := false
	sync := func(refresh bool) {
		value, _ := json.Marshal(wire.RouteEntry{NodeID: r.cfg.NodeID, PeerURL: r.cfg.PeerURL, At: r.cfg.Now().UTC()})
		held := map[string]bool{}
		var errs []error
		for _, t := range r.cfg.Table.HeldTunnels() {
			held[t] = true
			if published[t] && !refresh {
				continue
			}
			if _, err := kv.Put(ctx, wire.RouteKey(t, r.cfg.NodeID), value); err != nil {
				errs = append(errs, err)
				continue
			}
			published[t] = true
		}
		for t := range published {
			if !held[t] {
				if err := kv.Delete(ctx, wire.RouteKey(t, r.cfg.NodeID)); err != nil {
					errs = append(errs, err)
					continue
				}
				delete(published, t)
			}
		}
		switch err := errors.Join(errs...); {
		case err != nil && ctx.Err() == nil && !failing:
			r.log.Warn("route table update failed; retrying", "error", err)
			failing = true
		case err == nil && failing:
			r.log.Info("route table updates restored")
			failing = false
		}
	}
	sync(true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.cfg.Table.HeldChanged():
			sync(false)
		case <-tick.C:
			sync(true)
			r.cfg.Table.ExpireRoutes(r.cfg.Now().Add(-r.cfg.TTL))
		}
	}
}

// watch follows the bucket with an ordered pull consumer on its stream (the last message of
// every key first, then each change), not kv.Watch's push consumer: a node's NATS account gets
// its deliveries as answers to its own pulls, as for the relayed log (deploy/nats), with no
// delivery subject to export to it.
func (r *Routes) watch(ctx context.Context, js jetstream.JetStream) {
	if _, ok := r.bucket(ctx, js); !ok {
		return
	}
	bucket := r.cfg.Names.RoutesBucket()
	prefix := "$KV." + bucket + "."
	var bad, full int64
	for ctx.Err() == nil {
		err := func() error {
			cons, err := js.OrderedConsumer(ctx, "KV_"+bucket, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + ">"},
				DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
			if err != nil {
				return err
			}
			it, err := cons.Messages()
			if err != nil {
				return err
			}
			defer it.Stop()
			for {
				msg, err := it.Next(jetstream.NextContext(ctx))
				if err != nil {
					if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						return err
					}
					// A missed heartbeat or a server gone a moment: the ordered consumer starts
					// over by itself.
					if !lifecycle.Sleep(ctx, 100*time.Millisecond) {
						return ctx.Err()
					}
					continue
				}
				key, ok := strings.CutPrefix(msg.Subject(), prefix)
				if !ok {
					continue
				}
				switch msg.Headers().Get("KV-Operation") {
				case "DEL", "PURGE":
					if tunnelID, nodeID, err := wire.ParseRouteKey(key); err == nil {
						r.cfg.Table.DeleteRoute(tunnelID, nodeID)
					}
					continue
				}
				tunnelID, entry, err := wire.ParseRouteEntry(key, msg.Data())
				if err != nil {
					if bad++; bad&(bad-1) == 0 { // 1, 2, 4, …: a flood is not logged line by line
						r.log.Warn("route table entry refused", "key", boundedKey(key), "error", err, "refused", bad)
					}
					continue
				}
				if !r.cfg.Table.PutRoute(tunnelID, entry.NodeID, entry.PeerURL) {
					if full++; full&(full-1) == 0 {
						r.log.Warn("route table full; entry dropped", "tunnel_id", tunnelID, "peer_node_id", entry.NodeID, "dropped", full)
					}
				}
			}
		}()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("route table watch failed; retrying", "error", err)
		if !lifecycle.Sleep(ctx, r.cfg.Interval) {
			return
		}
	}
}

// boundedKey is a key fit for a log line.
func boundedKey(k string) string {
	if len(k) > 80 {
		return k[:80] + "…"
	}
	return k
}
