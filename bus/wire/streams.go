package wire

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

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

// NodeIDFromSubject returns the node id of a "nodefacts.<node-id>" subject.
func NodeIDFromSubject(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, NodeFactsSubjectPrefix)
	if !ok || !domain.ValidID(id) {
		return "", false
	}
	return id, true
}
