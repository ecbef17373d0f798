package nodebus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// HeartbeaterConfig configures a node's Heartbeater.
type HeartbeaterConfig struct {
	// Conn is the node's NATS connection; the heartbeater never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// Info is the node's static entry (NodeID required); Agents and SentAt are filled per beat.
	Info wire.Heartbeat
	// Agents reports the number of connected agents at each beat. Optional.
	Agents func() int
	// Interval between beats. Default 3s; keep it well below the bucket's TTL (default 15s).
	Interval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock for SentAt. Default time.Now.
	Now func() time.Time
}

// Validate reports every problem with the configuration.
func (c HeartbeaterConfig) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: heartbeater: Conn is required", ErrInvalidConfig))
	}
	if !domain.ValidID(c.Info.NodeID) {
		errs = append(errs, fmt.Errorf("%w: heartbeater: Info.NodeID %q is not a UUID", ErrInvalidConfig, c.Info.NodeID))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("%w: heartbeater: Interval %s is negative", ErrInvalidConfig, c.Interval))
	}
	return errors.Join(errs...)
}

// Heartbeater puts the node's wire.Heartbeat into tp_nodes every Interval. The key expires after the
// bucket's TTL once the beats stop; Stop deliberately leaves it to expire (a restarting node
// should not look like it left).
type Heartbeater struct {
	cfg HeartbeaterConfig
	log *slog.Logger

	life lifecycle.Lifecycle
}

// NewHeartbeater prepares a heartbeater; Start begins beating.
func NewHeartbeater(cfg HeartbeaterConfig) (*Heartbeater, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Heartbeater{cfg: cfg, log: cfg.Logger.With("component", "bus.heartbeat", "node_id", cfg.Info.NodeID)}, nil
}

// Start launches the beat loop; the first beat goes out at once. Failures (NATS away) are logged
// and the loop keeps beating.
func (h *Heartbeater) Start(ctx context.Context) error {
	return h.life.Start(ctx, "heartbeater", func(lctx context.Context) error {
		js, err := jetstream.New(h.cfg.Conn)
		if err != nil {
			return fmt.Errorf("start heartbeater: %w", err)
		}
		h.life.Go(func(context.Context) { h.run(lctx, js) })
		return nil
	})
}

// Stop ends the beats. Safe to call twice, and before Start.
func (h *Heartbeater) Stop() {
	h.life.Stop()
}

func (h *Heartbeater) run(ctx context.Context, js jetstream.JetStream) {
	var kv jetstream.KeyValue
	failing := false
	for {
		err := func() error {
			bctx, cancel := context.WithTimeout(ctx, h.cfg.Interval)
			defer cancel()
			if kv == nil {
				var err error
				if kv, err = js.KeyValue(bctx, h.cfg.Names.NodesBucket()); err != nil {
					return err
				}
			}
			hb := h.cfg.Info
			hb.SentAt = h.cfg.Now().UTC()
			if h.cfg.Agents != nil {
				hb.Agents = h.cfg.Agents()
			}
			value, err := json.Marshal(hb)
			if err != nil {
				return err
			}
			_, err = kv.Put(bctx, hb.NodeID, value)
			return err
		}()
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			h.log.Warn("heartbeat failed; retrying", "error", err)
			failing = true
		case err == nil && failing:
			h.log.Info("heartbeat restored")
			failing = false
		}
		if !lifecycle.Sleep(ctx, h.cfg.Interval) {
			return
		}
	}
}
