package controlbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tunnelplane/tunnelplane/bus/wire"
)

// StreamsConfig tunes the streams; the zero value gives the defaults.
type StreamsConfig struct {
	// Replicas of every stream and the bucket (clustered JetStream). Default 1.
	Replicas int
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Id values to drop repeats. Default
	// 10 minutes, at least 2 minutes: a publisher that retries after a lost acknowledgement is
	// absorbed here (and by the event store's unique event ids beyond the window).
	DuplicateWindow time.Duration
	// NodeFactsMaxBytes bounds TP_NODEFACTS; -1 (default) is unlimited.
	NodeFactsMaxBytes int64
	// EventsMaxBytes bounds TP_EVENTS; -1 (default) is unlimited. When full the relay stalls
	// (and says so) rather than dropping records nodes need.
	EventsMaxBytes int64
	// CommandsMaxAge is how long a command stays deliverable. Default 24h: a node away longer
	// rebuilds its state from the log anyway.
	CommandsMaxAge time.Duration
	// HeartbeatTTL is how long a node's heartbeat key lives without a refresh. Default 15s;
	// at least 1s (the server's marker granularity).
	HeartbeatTTL time.Duration
	// Storage of the streams. Default file storage.
	Storage jetstream.StorageType
}

func (c StreamsConfig) withDefaults() StreamsConfig {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.NodeFactsMaxBytes == 0 {
		c.NodeFactsMaxBytes = -1
	}
	if c.EventsMaxBytes == 0 {
		c.EventsMaxBytes = -1
	}
	if c.CommandsMaxAge == 0 {
		c.CommandsMaxAge = 24 * time.Hour
	}
	if c.HeartbeatTTL == 0 {
		c.HeartbeatTTL = 15 * time.Second
	}
	return c
}

// Validate reports every problem with the configuration.
func (c StreamsConfig) Validate() error {
	var errs []error
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%w: streams: Replicas %d is not within 1..5", ErrInvalidConfig, c.Replicas))
	}
	if c.DuplicateWindow != 0 && c.DuplicateWindow < 2*time.Minute {
		errs = append(errs, fmt.Errorf("%w: streams: DuplicateWindow %s is below 2m", ErrInvalidConfig, c.DuplicateWindow))
	}
	if c.NodeFactsMaxBytes < -1 {
		errs = append(errs, fmt.Errorf("%w: streams: NodeFactsMaxBytes %d is below -1", ErrInvalidConfig, c.NodeFactsMaxBytes))
	}
	if c.EventsMaxBytes < -1 {
		errs = append(errs, fmt.Errorf("%w: streams: EventsMaxBytes %d is below -1", ErrInvalidConfig, c.EventsMaxBytes))
	}
	if c.CommandsMaxAge < 0 {
		errs = append(errs, fmt.Errorf("%w: streams: CommandsMaxAge %s is negative", ErrInvalidConfig, c.CommandsMaxAge))
	}
	if c.HeartbeatTTL != 0 && c.HeartbeatTTL < time.Second {
		errs = append(errs, fmt.Errorf("%w: streams: HeartbeatTTL %s is below 1s", ErrInvalidConfig, c.HeartbeatTTL))
	}
	return errors.Join(errs...)
}

// EnsureStreams creates or updates TP_EVENTS, TP_NODEFACTS, TP_COMMANDS and the tp_nodes bucket.
// The control plane calls it at start; it is idempotent.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := cfg.withDefaults()
	streams := []jetstream.StreamConfig{
		{
			Name:        wire.EventsStream,
			Description: "tunnelplane event log, relayed in position order",
			Subjects:    []string{wire.EventsSubjectPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.EventsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        wire.NodeFactsStream,
			Description: "node-signed event batches awaiting ingestion",
			Subjects:    []string{wire.NodeFactsSubjectPrefix + "*"},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.NodeFactsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        wire.CommandsStream,
			Description: "control plane to node commands",
			Subjects:    []string{wire.CommandsSubjectPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      c.CommandsMaxAge,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  min(c.DuplicateWindow, c.CommandsMaxAge),
		},
	}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      wire.NodesBucket,
		Description: "data-plane node heartbeats",
		History:     1,
		TTL:         c.HeartbeatTTL,
		// Markers make the server tell watchers when a key expires, so a silent node is noticed
		// as soon as its heartbeat ages out.
		LimitMarkerTTL: c.HeartbeatTTL,
		Storage:        c.Storage,
		Replicas:       c.Replicas,
	})
	if err != nil {
		return fmt.Errorf("ensure bucket %s: %w", wire.NodesBucket, err)
	}
	return nil
}
