package wire

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/domain"
)

// ErrInvalidCluster: a cluster name that cannot prefix NATS names.
var ErrInvalidCluster = errors.New("invalid cluster name")

var clusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// Names are the JetStream streams, bucket, subjects and consumers of one installation (a log, its
// control planes and nodes). A cluster name prefixes every one of them, so installations sharing a
// NATS server never meet; the zero value is the default installation, whose names are those every
// release used before cluster names: TP_EVENTS, TP_NODEFACTS, TP_COMMANDS, tp_nodes, events.>,
// nodefacts.*, commands.>. They are part of the wire contract between control planes and nodes of
// different versions: never rename one.
type Names struct{ cluster string }

// NewNames validates a cluster name: "" (the default installation) or 1–32 of a-z, 0-9 and "-",
// starting and ending with a letter or digit.
func NewNames(cluster string) (Names, error) {
	if cluster != "" && !clusterName.MatchString(cluster) {
		return Names{}, fmt.Errorf("%w %q: use 1-32 lowercase letters, digits and '-', starting and ending with a letter or digit", ErrInvalidCluster, cluster)
	}
	return Names{cluster: cluster}, nil
}

// Cluster is the cluster name ("" for the default installation).
func (n Names) Cluster() string { return n.cluster }

func (n Names) resource(name string) string {
	if n.cluster == "" {
		return name
	}
	return n.cluster + "_" + name
}

func (n Names) subject(s string) string {
	if n.cluster == "" {
		return s
	}
	return n.cluster + "." + s
}

// EventsStream holds the relayed log: one message per log record on EventSubject(type), in
// position order, Nats-Msg-Id = event id. Limits retention without an age limit, because a node
// restarted from nothing rebuilds its view from the first record.
func (n Names) EventsStream() string { return n.resource("TP_EVENTS") }

// EventsSubjects is the subject filter of every relayed event.
func (n Names) EventsSubjects() string { return n.subject("events.>") }

// EventSubject is the subject a relayed record of this type is published to.
func (n Names) EventSubject(eventType string) string { return n.subject("events." + eventType) }

// EventTypeSubjects filters the relayed events of the types whose names start with prefix
// (e.g. "agent_token." gives every agent_token.* event).
func (n Names) EventTypeSubjects(prefix string) string { return n.subject("events." + prefix + ">") }

// NodeFactsStream holds node-signed batches on NodeFactsSubject(node) until the ingester has
// stored them. Work-queue retention: a batch is deleted when the ingester acknowledges it (the
// event store is the record, not NATS), and a work-queue stream admits only one consumer per
// subject, so two ingesters can never split one node's batches between different durable
// consumers. Unacknowledged batches stay (no age limit); when the stream is full new batches are
// refused, so nodes keep them in their spool instead of NATS dropping old ones.
func (n Names) NodeFactsStream() string { return n.resource("TP_NODEFACTS") }

// NodeFactsSubjects is the subject filter of every node's batches.
func (n Names) NodeFactsSubjects() string { return n.subject("nodefacts.*") }

// NodeFactsSubject is the subject a node publishes its batches to.
func (n Names) NodeFactsSubject(nodeID string) string { return n.subject("nodefacts." + nodeID) }

// NodeIDFromSubject returns the node id of a NodeFactsSubject.
func (n Names) NodeIDFromSubject(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, n.subject("nodefacts."))
	if !ok || !domain.ValidID(id) {
		return "", false
	}
	return id, true
}

// CommandsStream holds control → node commands on CommandTopic(name). Each node reads it with its
// own durable consumers, so every node sees every command; old commands age out.
func (n Names) CommandsStream() string { return n.resource("TP_COMMANDS") }

// CommandsSubjects is the subject filter of every command.
func (n Names) CommandsSubjects() string { return n.subject("commands.>") }

// CommandTopic is the watermill topic (and NATS subject) of a command name.
func (n Names) CommandTopic(commandName string) string { return n.subject("commands." + commandName) }

// CommandConsumer is a node's durable consumer of one command's subject.
func (n Names) CommandConsumer(nodeID, commandName string) string {
	return n.resource("tp_node_" + nodeID + "_" + commandName)
}

// CommandDeliverSubject is where a node's push consumer of one command delivers.
func (n Names) CommandDeliverSubject(nodeID, commandName string) string {
	return n.subject("_tp.cmd." + nodeID + "." + commandName)
}

// NodesBucket is the KV bucket of node heartbeats, keyed by node id; keys expire after the
// bucket's TTL unless refreshed.
func (n Names) NodesBucket() string { return n.resource("tp_nodes") }

// RoutesBucket is the KV bucket of the route table: which node holds an agent of which tunnel,
// one key "<tunnel id>.<node id>" per pair (RouteEntry). Its max age expires the entries of a
// node that stopped refreshing them (per-key TTLs need NATS 2.11; the bucket's age works on 2.9).
func (n Names) RoutesBucket() string { return n.resource("tp_routes") }

// IngesterConsumer is the control planes' shared durable consumer of NodeFactsStream.
func (n Names) IngesterConsumer() string { return n.resource("tp_ingester") }

// logStamp marks a stream's description with the log it belongs to.
const logStamp = " [log "

// StampedDescription is a stream description naming the log (its origin) the stream belongs to.
func StampedDescription(description, origin string) string {
	if origin == "" {
		return description
	}
	return description + logStamp + origin + "]"
}

// DescriptionStamp is the log origin a StampedDescription names ("" none).
func DescriptionStamp(description string) string {
	_, rest, ok := strings.Cut(description, logStamp)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(rest, "]")
}

// EventsStreamOrigin is the log origin the events stream is stamped with: "" when the stream does
// not exist or carries no stamp (made by a version before stamps).
func EventsStreamOrigin(ctx context.Context, js jetstream.JetStream, names Names) (string, error) {
	st, err := LookupEventsStream(ctx, js, names)
	if err != nil || st == nil {
		return "", err
	}
	return DescriptionStamp(st.CachedInfo().Config.Description), nil
}
