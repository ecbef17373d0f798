package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Names of the JetStream resources. They are part of the wire contract between control plane and
// nodes of different versions: never rename one.
const (
	// EventsStream holds the relayed log: one message per log record on "events.<type>", in
	// position order, Nats-Msg-Id = event id. Limits retention without an age limit, because a
	// node restarted from nothing rebuilds its view from the first record.
	EventsStream        = "TP_EVENTS"
	EventsSubjectPrefix = "events."

	// NodeFactsStream holds node-signed batches on "nodefacts.<node-id>" until the ingester has
	// stored them. Work-queue retention: a batch is deleted when the ingester acknowledges it (the
	// event store is the record, not NATS), and a work-queue stream admits only one consumer per
	// subject, so two ingesters can never split one node's batches between different durable
	// consumers. Unacknowledged batches stay (no age limit); when the stream is full new batches
	// are refused, so nodes keep them in their spool instead of NATS dropping old ones.
	NodeFactsStream        = "TP_NODEFACTS"
	NodeFactsSubjectPrefix = "nodefacts."

	// CommandsStream holds control → node commands on "commands.<name>". Each node reads it with
	// its own durable consumer, so every node sees every command; old commands age out.
	CommandsStream        = "TP_COMMANDS"
	CommandsSubjectPrefix = "commands."

	// NodesBucket is the KV bucket of node heartbeats, keyed by node id; keys expire after the
	// bucket's TTL unless refreshed.
	NodesBucket = "tp_nodes"
)

// Headers set on relayed events (besides Nats-Msg-Id).
const (
	// HeaderPosition carries the record's global position in decimal.
	HeaderPosition = "Tp-Position"
	// HeaderType carries the event type name.
	HeaderType = "Tp-Type"
	// HeaderStreamID carries the record's stream id.
	HeaderStreamID = "Tp-Stream-Id"
)

// NodeFactsSubject is the subject a node publishes its batches to.
func NodeFactsSubject(nodeID string) string { return NodeFactsSubjectPrefix + nodeID }

// EventSubject is the subject a relayed record of this type is published to.
func EventSubject(eventType string) string { return EventsSubjectPrefix + eventType }

// CommandTopic is the watermill topic (and NATS subject) of a command name.
func CommandTopic(commandName string) string { return CommandsSubjectPrefix + commandName }

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
			Name:        EventsStream,
			Description: "tunnelplane event log, relayed in position order",
			Subjects:    []string{EventsSubjectPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.EventsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        NodeFactsStream,
			Description: "node-signed event batches awaiting ingestion",
			Subjects:    []string{NodeFactsSubjectPrefix + "*"},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.NodeFactsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        CommandsStream,
			Description: "control plane to node commands",
			Subjects:    []string{CommandsSubjectPrefix + ">"},
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
		Bucket:      NodesBucket,
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
		return fmt.Errorf("ensure bucket %s: %w", NodesBucket, err)
	}
	return nil
}

// ConnectConfig configures a client connection.
type ConnectConfig struct {
	// Name identifies the connection in the server's monitoring.
	Name string
	// Options are appended to the defaults (credentials, TLS …).
	Options []nats.Option
	// Logger receives connection state changes. Default slog.Default().
	Logger *slog.Logger
}

// Connect dials NATS the way every component here expects: it keeps reconnecting forever and
// succeeds even while the server is down (the Publisher spools meanwhile). Close the connection
// when done.
func Connect(url string, cfg ConnectConfig) (*nats.Conn, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	nc, err := nats.Connect(url, append(opts, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}

// nodeIDFromSubject returns the node id of a "nodefacts.<node-id>" subject.
func nodeIDFromSubject(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, NodeFactsSubjectPrefix)
	if !ok || !domain.ValidID(id) {
		return "", false
	}
	return id, true
}
