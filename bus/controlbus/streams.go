package controlbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// Origin is the log's origin (eventstore: Store.Origin). When set, EnsureStreams stamps the
	// streams with it and refuses streams stamped by another log.
	Origin string
	// ReplaceForeign deletes streams stamped by another log instead of refusing them: for a NATS
	// server that is this installation's own (serve's embedded one).
	ReplaceForeign bool
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

// MinServerVersion is the oldest NATS server the bus runs on (Debian 12's package is 2.9.x). Expiry
// markers for node heartbeats are used from MarkerServerVersion on; older servers age heartbeat
// keys out with the bucket's max age, and the registry watcher's own TTL verdict notices them.
const (
	MinServerVersion    = "2.9.0"
	MarkerServerVersion = "2.11.0"
)

// CheckServer fails with ErrServerVersion, naming the server's version and the minimum, when the
// connected server is older than MinServerVersion or has JetStream off. It creates nothing.
func CheckServer(ctx context.Context, js jetstream.JetStream) error {
	v := js.Conn().ConnectedServerVersion()
	if v == "" {
		return fmt.Errorf("%w: not connected to a NATS server (is it running at %s?)", ErrServerVersion, js.Conn().ConnectedUrlRedacted())
	}
	if !versionAtLeast(v, MinServerVersion) {
		return fmt.Errorf("%w: the NATS server is version %s; tunnelplane needs %s or later", ErrServerVersion, v, MinServerVersion)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("%w: the NATS server (version %s) has JetStream off for this account; start it with -js", ErrServerVersion, v)
		}
		return fmt.Errorf("NATS JetStream: %w", err)
	}
	return nil
}

// versionAtLeast compares dotted server versions ("2.9.10", "2.11.0-RC.1").
func versionAtLeast(have, want string) bool {
	h, w := versionParts(have), versionParts(want)
	for i := range 3 {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

func versionParts(v string) [3]int {
	var out [3]int
	v, _, _ = strings.Cut(strings.TrimPrefix(v, "v"), "-")
	for i, p := range strings.SplitN(v, ".", 3) {
		n, err := strconv.Atoi(p)
		if err != nil {
			break
		}
		out[i] = n
	}
	return out
}

// EnsureStreams checks the server (CheckServer), then creates or updates the events, node-facts
// and commands streams and the nodes bucket of cfg.Names. It is idempotent. With cfg.Origin set,
// every stream is stamped with the log's origin, and streams stamped by another log fail with
// ErrForeignStreams before anything is created or changed, unless cfg.ReplaceForeign (then they
// are deleted and created anew).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := CheckServer(ctx, js); err != nil {
		return err
	}
	c := cfg.withDefaults()
	n := c.Names
	streams := []jetstream.StreamConfig{
		{
			Name:        n.EventsStream(),
			Description: wire.StampedDescription("tunnelplane event log, relayed in position order", c.Origin),
			Subjects:    []string{n.EventsSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.EventsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        n.NodeFactsStream(),
			Description: wire.StampedDescription("node-signed event batches awaiting ingestion", c.Origin),
			Subjects:    []string{n.NodeFactsSubjects()},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    c.NodeFactsMaxBytes,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  c.DuplicateWindow,
		},
		{
			Name:        n.CommandsStream(),
			Description: wire.StampedDescription("control plane to node commands", c.Origin),
			Subjects:    []string{n.CommandsSubjects()},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      c.CommandsMaxAge,
			Storage:     c.Storage,
			Replicas:    c.Replicas,
			Duplicates:  min(c.DuplicateWindow, c.CommandsMaxAge),
		},
	}
	bucket := jetstream.KeyValueConfig{
		Bucket:      n.NodesBucket(),
		Description: wire.StampedDescription("data-plane node heartbeats", c.Origin),
		History:     1,
		TTL:         c.HeartbeatTTL,
		Storage:     c.Storage,
		Replicas:    c.Replicas,
	}
	if versionAtLeast(js.Conn().ConnectedServerVersion(), MarkerServerVersion) {
		// Markers make the server tell watchers when a key expires, so a silent node is noticed
		// as soon as its heartbeat ages out.
		bucket.LimitMarkerTTL = c.HeartbeatTTL
	}
	// The route table: each node refreshes its entries with its heartbeat; the bucket's age
	// (the heartbeat TTL) expires the entries of a node that died (per-key TTLs need 2.11).
	routes := jetstream.KeyValueConfig{
		Bucket:      n.RoutesBucket(),
		Description: wire.StampedDescription("tunnels each data-plane node holds agents for", c.Origin),
		History:     1,
		TTL:         c.HeartbeatTTL,
		// Bounded: every node writes here, and one that floods it must fill a bounded stream
		// (further writes refused) rather than the server's memory or disk.
		// A value is at most an entry; the rest is room for a delete marker's headers.
		MaxValueSize: wire.MaxRouteEntry + 1024,
		MaxBytes:     RoutesMaxBytes,
		Storage:      c.Storage,
		Replicas:     c.Replicas,
	}
	names := []string{n.EventsStream(), n.NodeFactsStream(), n.CommandsStream(), "KV_" + n.NodesBucket(), "KV_" + n.RoutesBucket()}
	keep, err := checkStamps(ctx, js, names, c.Origin, c.ReplaceForeign)
	if err != nil {
		return err
	}
	for i := range streams {
		if c.Origin == "" && keep[i] != "" {
			streams[i].Description = keep[i]
		}
		if err := retryServerErrors(ctx, func() error {
			_, err := js.CreateOrUpdateStream(ctx, streams[i])
			return err
		}); err != nil {
			return fmt.Errorf("ensure stream %s: %w", streams[i].Name, err)
		}
	}
	for i, b := range []jetstream.KeyValueConfig{bucket, routes} {
		if c.Origin == "" && keep[3+i] != "" {
			b.Description = keep[3+i]
		}
		ensure := func() error {
			_, err := js.CreateOrUpdateKeyValue(ctx, b)
			return err
		}
		if b.Bucket == routes.Bucket {
			ensure = func() error { return ensureSealedBucket(ctx, js, b) }
		}
		if err := retryServerErrors(ctx, ensure); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", b.Bucket, err)
		}
	}
	return nil
}

// RoutesMaxBytes bounds the route table's stream: about 100,000 routes of the largest entry.
const RoutesMaxBytes = 128 << 20

// ensureSealedBucket creates or updates a KV bucket whose stream refuses roll-ups and purges:
// every node writes the route table, and one message with "Nats-Rollup: all" (or a purge of the
// stream) would otherwise wipe every other node's entries. Entries end by delete markers
// (kv.Delete), which it still takes; kv.Purge does not work on it. The server refuses to turn
// DenyPurge off again, so an existing bucket is updated as a stream, not through
// CreateOrUpdateKeyValue (which would ask for roll-ups back).
func ensureSealedBucket(ctx context.Context, js jetstream.JetStream, b jetstream.KeyValueConfig) error {
	st, err := js.Stream(ctx, "KV_"+b.Bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return err
		}
		st, err = js.Stream(ctx, "KV_"+b.Bucket)
	}
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	maxBytes, maxMsg := b.MaxBytes, b.MaxValueSize
	if maxBytes == 0 {
		maxBytes = -1
	}
	if maxMsg == 0 {
		maxMsg = -1
	}
	if cfg.Description == b.Description && cfg.MaxAge == b.TTL && cfg.Replicas == max(b.Replicas, 1) && !cfg.AllowRollup && cfg.DenyPurge &&
		cfg.MaxBytes == maxBytes && cfg.MaxMsgSize == maxMsg {
		return nil
	}
	cfg.Description, cfg.MaxAge, cfg.Replicas, cfg.MaxBytes, cfg.MaxMsgSize = b.Description, b.TTL, max(b.Replicas, 1), maxBytes, maxMsg
	if b.TTL > 0 && cfg.Duplicates > b.TTL {
		cfg.Duplicates = b.TTL // the server wants it within the age, as KV buckets make it
	}
	cfg.AllowRollup, cfg.DenyPurge = false, true
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// retryServerErrors runs op again, up to three times in all, while JetStream answers with a
// server-side error (5xx): a server that has just deleted an account's last stream can fail to
// create the next one's storage for a moment ("error creating store for stream").
func retryServerErrors(ctx context.Context, op func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = op()
		var apiErr *jetstream.APIError
		if err == nil || attempt == 3 || !errors.As(err, &apiErr) || apiErr.Code < 500 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
}

// checkStamps looks the streams up: any stamped with another log than origin fails (or, with
// replace, is deleted). It returns the descriptions found, so a caller without an origin keeps
// the stamps there are.
func checkStamps(ctx context.Context, js jetstream.JetStream, names []string, origin string, replace bool) ([]string, error) {
	found := make([]string, len(names))
	var foreign []string
	for i, name := range names {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up stream %s: %w", name, err)
		}
		found[i] = st.CachedInfo().Config.Description
		if other := wire.DescriptionStamp(found[i]); origin != "" && other != "" && other != origin {
			foreign = append(foreign, fmt.Sprintf("%s belongs to %s", name, other))
		}
	}
	if len(foreign) == 0 {
		return found, nil
	}
	if !replace {
		return nil, fmt.Errorf("%w: %s, not to %s: another installation uses this NATS server under the same cluster name; give this one its own --cluster, or remove them (nats stream rm)",
			ErrForeignStreams, strings.Join(foreign, ", "), origin)
	}
	for i, name := range names {
		if other := wire.DescriptionStamp(found[i]); other != "" && other != origin {
			if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil, fmt.Errorf("replace stream %s: %w", name, err)
			}
			found[i] = ""
		}
	}
	return found, nil
}
