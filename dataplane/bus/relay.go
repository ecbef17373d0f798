package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/eventstore"
)

// RelayedEvent is the JSON body of a message on "events.<type>" in TP_EVENTS:
//
//	{"position":42,"stream_id":"tunnel-…","stream_version":3,"event_id":"0190…",
//	 "type":"tunnel.created","schema_version":1,"recorded_at":"2025-01-02T03:04:05.123456Z",
//	 "key_id":"ed25519:…","payload":{…},"metadata":{…}}
//
// payload and metadata are the record's JSON as is (payload upcast to the type's current schema
// version, which schema_version names). Headers: Nats-Msg-Id = event_id, Tp-Position = position
// (decimal), Tp-Type = type, Tp-Stream-Id = stream_id. Messages are in position order with no
// gaps and no repeats; the relay keeps stream sequence = position + 1 from an empty stream on.
type RelayedEvent struct {
	Position      uint64          `json:"position"`
	StreamID      string          `json:"stream_id"`
	StreamVersion uint64          `json:"stream_version"`
	EventID       uuid.UUID       `json:"event_id"`
	Type          string          `json:"type"`
	SchemaVersion uint32          `json:"schema_version"`
	RecordedAt    time.Time       `json:"recorded_at"`
	KeyID         string          `json:"key_id"`
	Payload       json.RawMessage `json:"payload"`
	Metadata      json.RawMessage `json:"metadata"`
}

// DecodeRelayedEvent parses and checks a relayed event body.
func DecodeRelayedEvent(data []byte) (RelayedEvent, error) {
	var ev RelayedEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return RelayedEvent{}, fmt.Errorf("decode relayed event: %w: %w", ErrMalformed, err)
	}
	var missing []string
	if ev.StreamID == "" {
		missing = append(missing, "stream_id")
	}
	if ev.EventID == uuid.Nil {
		missing = append(missing, "event_id")
	}
	if ev.Type == "" {
		missing = append(missing, "type")
	}
	if ev.StreamVersion == 0 {
		missing = append(missing, "stream_version")
	}
	if ev.SchemaVersion == 0 {
		missing = append(missing, "schema_version")
	}
	if len(ev.Payload) == 0 {
		missing = append(missing, "payload")
	}
	if len(missing) > 0 {
		return RelayedEvent{}, fmt.Errorf("decode relayed event: %w: missing %v", ErrMalformed, missing)
	}
	return ev, nil
}

func relayMessage(rec *eventstore.Record) (*nats.Msg, error) {
	body, err := json.Marshal(RelayedEvent{
		Position: rec.Position, StreamID: rec.StreamID, StreamVersion: rec.StreamVersion, EventID: rec.EventID,
		Type: rec.Type, SchemaVersion: rec.SchemaVersion, RecordedAt: rec.RecordedAt.UTC(), KeyID: rec.KeyID,
		Payload: rec.Payload, Metadata: rec.Metadata,
	})
	if err != nil {
		return nil, fmt.Errorf("encode position %d: %w", rec.Position, err)
	}
	h := nats.Header{}
	h.Set(HeaderPosition, strconv.FormatUint(rec.Position, 10))
	h.Set(HeaderType, rec.Type)
	h.Set(HeaderStreamID, rec.StreamID)
	return &nats.Msg{Subject: EventSubject(rec.Type), Data: body, Header: h}, nil
}

// RelayConfig configures the control plane's Relay.
type RelayConfig struct {
	// Store is read from (Subscribe); the relay never writes to it.
	Store *eventstore.Store
	// Conn is the control plane's NATS connection; the relay never closes it.
	Conn *nats.Conn
	// BatchSize is the most records published before waiting for their acknowledgements.
	// Default 256.
	BatchSize int
	// PublishTimeout bounds waiting for a batch's acknowledgements. Default 10s.
	PublishTimeout time.Duration
	// RetryInterval is the pause after a failure (NATS or the store away). Default 1s.
	RetryInterval time.Duration
	// Registerer receives the relay's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with the configuration.
func (c RelayConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, fmt.Errorf("%w: relay: Store is required", ErrInvalidConfig))
	}
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: relay: Conn is required", ErrInvalidConfig))
	}
	if c.BatchSize < 0 || c.BatchSize > 4000 {
		errs = append(errs, fmt.Errorf("%w: relay: BatchSize %d is not within 1..4000", ErrInvalidConfig, c.BatchSize))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: relay: PublishTimeout %s is negative", ErrInvalidConfig, c.PublishTimeout))
	}
	if c.RetryInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: relay: RetryInterval %s is negative", ErrInvalidConfig, c.RetryInterval))
	}
	return errors.Join(errs...)
}

// Relay publishes every log record, in position order, to TP_EVENTS. It keeps no state of its
// own: it resumes after the position in the stream's last message, so a restart neither skips
// nor repeats a record. Every publish also expects the stream's last sequence to be the one the
// relay saw last, so a second relay running by mistake (or a message lost in flight) makes the
// publish fail and the relay resume from the stream again, instead of storing records out of
// order.
type Relay struct {
	cfg RelayConfig
	js  jetstream.JetStream
	log *slog.Logger

	life lifecycle

	position  prometheus.Gauge
	published prometheus.Counter
}

// NewRelay prepares a relay; Start runs it.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	js, err := jetstream.New(c.Conn, jetstream.WithPublishAsyncTimeout(c.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("new relay: %w", err)
	}
	r := &Relay{
		cfg: c, js: js, log: c.Logger.With("component", "bus.relay"),
		position: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelplane_relay_next_position",
			Help: "The next log position the relay will publish to TP_EVENTS (records relayed so far).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_relay_published_total",
			Help: "Log records published to TP_EVENTS.",
		}),
	}
	if c.Registerer != nil {
		var errs [2]error
		r.position, errs[0] = register(c.Registerer, r.position)
		r.published, errs[1] = register(c.Registerer, r.published)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("new relay: %w", err)
		}
	}
	return r, nil
}

// Start launches the relay loop. It keeps retrying while NATS or the store is away.
func (r *Relay) Start(ctx context.Context) error {
	return r.life.start(ctx, "relay", func(lctx context.Context) (func(), error) {
		return func() { r.run(lctx) }, nil
	})
}

// Stop ends the relay; records published but not yet acknowledged are found in the stream (or
// published again) by the next start. Safe to call twice, and before Start.
func (r *Relay) Stop() {
	r.life.stop()
}

func (r *Relay) run(ctx context.Context) {
	for {
		next, lastSeq, err := r.resume(ctx)
		if err == nil {
			r.position.Set(float64(next))
			r.log.Debug("relaying", "from_position", next, "stream_seq", lastSeq)
			err = r.cfg.Store.Subscribe(ctx, next, eventstore.SubscribeOptions{BatchSize: r.cfg.BatchSize},
				func(ctx context.Context, recs []eventstore.Record) error {
					return r.publish(ctx, recs, &lastSeq)
				})
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, eventstore.ErrClosed) {
			r.log.Warn("the event store stopped; the relay stops too")
			return
		}
		r.log.Warn("relay interrupted; resuming from the stream", "error", err, "retry_in", r.cfg.RetryInterval)
		if !sleep(ctx, r.cfg.RetryInterval) {
			return
		}
	}
}

// resume reads the stream's last message: the next position to publish and the sequence the next
// publish expects as the stream's last.
func (r *Relay) resume(ctx context.Context) (next, lastSeq uint64, err error) {
	stream, err := r.js.Stream(ctx, EventsStream)
	if err != nil {
		return 0, 0, fmt.Errorf("resume relay: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("resume relay: %w", err)
	}
	lastSeq = info.State.LastSeq
	if lastSeq == 0 {
		return 0, 0, nil
	}
	msg, err := stream.GetMsg(ctx, lastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// The stream was purged. Positions and sequences move in step from an empty stream on,
		// so the last sequence still tells where the relay was.
		r.log.Warn("the last relayed message is gone (stream purged?); resuming by sequence", "stream_seq", lastSeq)
		return lastSeq, lastSeq, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("resume relay: read message %d: %w", lastSeq, err)
	}
	pos, err := strconv.ParseUint(msg.Header.Get(HeaderPosition), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("resume relay: message %d: %w: header %s is %q", lastSeq, ErrMalformed, HeaderPosition, msg.Header.Get(HeaderPosition))
	}
	return pos + 1, lastSeq, nil
}

// publish sends records pipelined, each expecting its predecessor as the stream's last message,
// then waits for every acknowledgement.
func (r *Relay) publish(ctx context.Context, recs []eventstore.Record, lastSeq *uint64) error {
	for start := 0; start < len(recs); start += r.cfg.BatchSize {
		chunk := recs[start:min(start+r.cfg.BatchSize, len(recs))]
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for i := range chunk {
			msg, err := relayMessage(&chunk[i])
			if err != nil {
				return err
			}
			f, err := r.js.PublishMsgAsync(msg,
				jetstream.WithMsgID(chunk[i].EventID.String()),
				jetstream.WithExpectStream(EventsStream),
				jetstream.WithExpectLastSequence(*lastSeq+uint64(i)))
			if err != nil {
				return fmt.Errorf("relay position %d: %w", chunk[i].Position, err)
			}
			futures = append(futures, f)
		}
		timer := time.NewTimer(r.cfg.PublishTimeout)
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				if ack.Duplicate {
					timer.Stop()
					return fmt.Errorf("relay position %d: JetStream already holds event %s (another relay?)", chunk[i].Position, chunk[i].EventID)
				}
				*lastSeq = ack.Sequence
				r.published.Inc()
				r.position.Set(float64(chunk[i].Position + 1))
			case err := <-f.Err():
				timer.Stop()
				return fmt.Errorf("relay position %d: %w", chunk[i].Position, err)
			case <-timer.C:
				return fmt.Errorf("relay position %d: no acknowledgement within %s", chunk[i].Position, r.cfg.PublishTimeout)
			case <-ctx.Done():
				timer.Stop()
				return ctx.Err()
			}
		}
		timer.Stop()
	}
	return nil
}

// eventsStream looks TP_EVENTS up (with its info as of now); nil without an error when it does not
// exist yet.
func eventsStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, EventsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EventsStream, err)
	}
	return st, nil
}

// CheckEventsStream makes sure TP_EVENTS holds this log: its last message must carry the event
// the log has at that position. An empty or absent stream passes. Otherwise the error wraps
// ErrForeignEvents: the stream was filled from another database (or by another control plane
// sharing the NATS server), and relaying this log after it would mix two logs, so nodes would
// fold records that are not this control plane's.
func CheckEventsStream(ctx context.Context, js jetstream.JetStream, store *eventstore.Store) error {
	st, err := eventsStream(ctx, js)
	if err != nil || st == nil {
		return err
	}
	info := st.CachedInfo() // as of the lookup just made
	if info.State.Msgs == 0 {
		return nil
	}
	msg, err := st.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		return fmt.Errorf("%s: message %d: %w", EventsStream, info.State.LastSeq, err)
	}
	held := msg.Header.Get(jetstream.MsgIDHeader)
	pos, err := strconv.ParseUint(msg.Header.Get(HeaderPosition), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: message %d has no position header", ErrForeignEvents, info.State.LastSeq)
	}
	recs, err := store.ReadAll(ctx, pos, 1)
	if err != nil {
		return fmt.Errorf("%s against the log: %w", EventsStream, err)
	}
	if len(recs) == 0 || recs[0].Position != pos {
		return fmt.Errorf("%w: it holds position %d (event %s), this log ends before it", ErrForeignEvents, pos, held)
	}
	if recs[0].EventID.String() != held {
		return fmt.Errorf("%w: at position %d it holds event %s, this log %s", ErrForeignEvents, pos, held, recs[0].EventID)
	}
	return nil
}

// ResetEventsStream deletes TP_EVENTS and creates it empty (cfg as for EnsureStreams); the relay
// then publishes the log from its start. For a stream that CheckEventsStream found foreign.
func ResetEventsStream(ctx context.Context, js jetstream.JetStream, cfg StreamsConfig) error {
	if err := js.DeleteStream(ctx, EventsStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("reset %s: %w", EventsStream, err)
	}
	return EnsureStreams(ctx, js, cfg)
}

// LastRelayedPosition is the position of the last event TP_EVENTS holds: -1 when it holds none
// or does not exist yet.
func LastRelayedPosition(ctx context.Context, js jetstream.JetStream) (int64, error) {
	st, err := eventsStream(ctx, js)
	if err != nil || st == nil {
		return -1, err
	}
	// Stream sequence = position + 1 (see RelayedEvent).
	return int64(st.CachedInfo().State.LastSeq) - 1, nil
}

// RelayedEventID is the id of the event TP_EVENTS holds at pos; ok is false when it holds none
// there (not relayed yet, or no longer kept).
func RelayedEventID(ctx context.Context, js jetstream.JetStream, pos uint64) (id string, ok bool, err error) {
	st, err := eventsStream(ctx, js)
	if err != nil || st == nil {
		return "", false, err
	}
	msg, err := st.GetMsg(ctx, pos+1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("%s: position %d: %w", EventsStream, pos, err)
	}
	return msg.Header.Get(jetstream.MsgIDHeader), true, nil
}

// SubscribeEventsOptions selects how SubscribeEvents reads TP_EVENTS.
type SubscribeEventsOptions struct {
	// Durable names a durable consumer that remembers what was handled across restarts; a
	// handler error is retried (redelivered) after RetryDelay. Empty: an ordered ephemeral
	// consumer reading from FromPosition, for a node that rebuilds its view from scratch; a
	// handler error ends SubscribeEvents.
	Durable string
	// FromPosition is the first position wanted (ephemeral consumers only). Default 0.
	FromPosition uint64
	// FilterSubjects narrows the types read, e.g. "events.agent_token.>". Default every event.
	// With a filter, positions are not contiguous, so gap detection is off.
	FilterSubjects []string
	// RetryDelay is the redelivery delay after a handler error (durable only). Default 1s.
	RetryDelay time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// SubscribeEvents hands every relayed event to handle, in position order, until ctx ends (then it
// returns ctx.Err()). Repeats are skipped; without a filter, a jump in positions returns ErrGap
// (the stream lost records, so the caller's view must be rebuilt from a snapshot).
func SubscribeEvents(ctx context.Context, js jetstream.JetStream, opts SubscribeEventsOptions, handle func(ctx context.Context, ev RelayedEvent) error) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	filters := opts.FilterSubjects
	if len(filters) == 0 {
		filters = []string{EventsSubjectPrefix + ">"}
	}
	var cons jetstream.Consumer
	var err error
	if opts.Durable == "" {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
		if opts.FromPosition > 0 {
			// Stream sequence = position + 1 (see RelayedEvent).
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.FromPosition+1
		}
		cons, err = js.OrderedConsumer(ctx, EventsStream, cfg)
	} else {
		cons, err = js.CreateOrUpdateConsumer(ctx, EventsStream, jetstream.ConsumerConfig{
			Durable: opts.Durable, FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1,
			MaxAckPending: 1, // strict order: the next event only after this one is handled
		})
	}
	if err != nil {
		return fmt.Errorf("subscribe events: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("subscribe events: %w", err)
	}
	defer it.Stop()
	gapCheck := len(opts.FilterSubjects) == 0
	next, haveNext := opts.FromPosition, opts.Durable == "" // a durable resumes where it was
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("subscribe events: %w", err)
			}
			log.Debug("waiting for relayed events", "error", err)
			if !sleep(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		ev, err := DecodeRelayedEvent(msg.Data())
		if err != nil {
			return fmt.Errorf("subscribe events: %s: %w", msg.Subject(), err)
		}
		if haveNext && ev.Position < next {
			_ = msg.Ack()
			continue
		}
		if haveNext && gapCheck && ev.Position > next {
			return fmt.Errorf("subscribe events: %w: expected position %d, got %d", ErrGap, next, ev.Position)
		}
		if err := handle(ctx, ev); err != nil {
			if opts.Durable == "" {
				return fmt.Errorf("subscribe events: position %d: %w", ev.Position, err)
			}
			log.Warn("event handler failed; redelivering", "position", ev.Position, "error", err, "delay", opts.RetryDelay)
			_ = msg.NakWithDelay(opts.RetryDelay)
			continue
		}
		if opts.Durable != "" {
			// The handler may have ended ctx (it got what it wanted); the ack must still go out.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := msg.DoubleAck(actx); err != nil {
				log.Warn("acknowledging a relayed event failed; it may be handed over again", "position", ev.Position, "error", err)
			}
			cancel()
		}
		next, haveNext = ev.Position+1, true
	}
}
