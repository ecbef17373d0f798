package bus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
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
// version, which schema_version names). Headers: Nats-Msg-Id = event_id.<first 8 bytes of hash, hex>, Tp-Position = position
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
	// The record's proof, for whoever reads the relayed log to check that the log's keys signed
	// it, in this place (Record, eventstore.ChainVerifier): the exact bytes hashed and signed
	// (payload and metadata above are re-encoded JSON), the producer's batch signature, the
	// record's place in that batch, and the hash chain.
	Envelope       []byte `json:"envelope,omitempty"`
	Signature      []byte `json:"signature,omitempty"`
	SignatureProof []byte `json:"signature_proof,omitempty"`
	PrevHash       []byte `json:"prev_hash,omitempty"`
	Hash           []byte `json:"hash,omitempty"`
	// Checkpoint is the signed checkpoint note of the log's size after this record, on the last
	// record of each append batch: what lets a reader take the batch as the log's
	// (eventstore.ChainVerifier).
	Checkpoint string `json:"checkpoint,omitempty"`
}

// Record rebuilds the log record the event carries from its envelope (the exact bytes the log
// hashed and signed), with what eventstore.ChainVerifier checks. Payload is the payload as stored
// (SchemaVersion its stored version), and every field a reader acts on comes from the envelope,
// not from the message's JSON.
func (ev RelayedEvent) Record() (eventstore.Record, error) {
	if len(ev.Envelope) == 0 {
		return eventstore.Record{}, fmt.Errorf("%w: position %d carries no envelope (relayed by an older control plane?)", ErrMalformed, ev.Position)
	}
	env, err := eventstore.DecodeEnvelope(ev.Envelope)
	if err != nil {
		return eventstore.Record{}, fmt.Errorf("%w: position %d: %w", ErrMalformed, ev.Position, err)
	}
	return eventstore.Record{Position: ev.Position, StreamID: env.StreamID, StreamVersion: ev.StreamVersion, EventID: env.EventID,
		Type: env.Type, SchemaVersion: env.SchemaVersion, Payload: env.Payload, Metadata: env.Metadata, RecordedAt: ev.RecordedAt,
		KeyID: env.KeyID, Signature: ev.Signature, SignatureProof: ev.SignatureProof, PrevHash: ev.PrevHash, Hash: ev.Hash,
		StoredSchemaVersion: env.SchemaVersion, StoredPayload: env.Payload}, nil
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

// relayMsgID is a relayed record's Nats-Msg-Id: its event id and the start of its hash. JetStream
// drops a message whose id it has seen within DuplicateWindow, so the id must not be one that
// anyone could publish first: an event id can be known before the record is stored (a node
// chooses its facts' ids), its hash cannot.
func relayMsgID(rec *eventstore.Record) string {
	return rec.EventID.String() + "." + hex.EncodeToString(rec.Hash[:min(8, len(rec.Hash))])
}

// msgID is relayMsgID, with a random suffix for a record whose id someone else took.
func (r *Relay) msgID(rec *eventstore.Record) string {
	if !r.fresh[rec.Position] {
		return relayMsgID(rec)
	}
	return relayMsgID(rec) + "." + hex.EncodeToString(binary.BigEndian.AppendUint64(nil, rand.Uint64()))
}

// holds tells whether the message at seq is rec as relayed (its body carries rec's hash).
func (r *Relay) holds(ctx context.Context, seq uint64, rec *eventstore.Record) (bool, error) {
	st, err := r.js.Stream(ctx, EventsStream)
	if err != nil {
		return false, err
	}
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: message %d: %w", EventsStream, seq, err)
	}
	var body struct {
		Hash []byte `json:"hash"`
	}
	return json.Unmarshal(msg.Data, &body) == nil && bytes.Equal(body.Hash, rec.Hash), nil
}

// relayedEventID is the event id a relayed message's Nats-Msg-Id names.
func relayedEventID(h nats.Header) string {
	id, _, _ := strings.Cut(h.Get(jetstream.MsgIDHeader), ".")
	return id
}

func relayMessage(rec *eventstore.Record, checkpoint string) (*nats.Msg, error) {
	env := eventstore.Envelope{EventID: rec.EventID, StreamID: rec.StreamID, Type: rec.Type, SchemaVersion: rec.StoredSchemaVersion,
		KeyID: rec.KeyID, Payload: rec.StoredPayload, Metadata: rec.Metadata}
	body, err := json.Marshal(RelayedEvent{
		Position: rec.Position, StreamID: rec.StreamID, StreamVersion: rec.StreamVersion, EventID: rec.EventID,
		Type: rec.Type, SchemaVersion: rec.SchemaVersion, RecordedAt: rec.RecordedAt.UTC(), KeyID: rec.KeyID,
		Payload: rec.Payload, Metadata: rec.Metadata,
		Envelope: eventstore.AppendEnvelope(make([]byte, 0, eventstore.EnvelopeSize(&env)), &env), Signature: rec.Signature,
		SignatureProof: rec.SignatureProof, PrevHash: rec.PrevHash, Hash: rec.Hash, Checkpoint: checkpoint,
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

	// fresh holds the positions whose message id someone else took (run's goroutine only).
	fresh map[uint64]bool

	// last is the last record this relay published and saw acknowledged (run's goroutine only):
	// where it resumes within the process, whatever others published after it.
	last struct {
		pos, seq uint64
		maxSeq   uint64 // the highest sequence acknowledged to it (duplicates too)
		ok       bool
	}
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
		cfg: c, js: js, log: c.Logger.With("component", "bus.relay"), fresh: map[uint64]bool{},
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

// resume finds where to go on: after the last message of TP_EVENTS that this log's relay
// published (next position), expecting the stream's last sequence as it is now. Messages after
// it were published by someone else (whoever may publish on events.> can); nodes verify every
// record and skip them.
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
	if r.last.ok && r.last.seq <= lastSeq {
		if lastSeq > r.last.maxSeq {
			r.log.Error("TP_EVENTS holds messages this relay did not publish after its last one; nodes skip them (restrict who may publish on events.>)",
				"last_relayed_seq", r.last.seq, "stream_seq", lastSeq)
		}
		return r.last.pos + 1, lastSeq, nil
	}
	t, err := lastGenuine(ctx, stream, r.cfg.Store, lastSeq)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("resume relay: %w", err)
	case t.found:
		if t.seq != lastSeq {
			r.log.Error("TP_EVENTS holds messages this relay did not publish after its last one; nodes skip them (restrict who may publish on events.>)",
				"last_relayed_seq", t.seq, "stream_seq", lastSeq)
		}
		return t.pos + 1, lastSeq, nil
	case t.present == 0:
		// The stream was purged. Positions and sequences move in step from an empty stream on
		// (unless someone else published), so the last sequence tells where the relay was. (It
		// cannot publish the log again: JetStream drops repeated event ids for DuplicateWindow.)
		r.log.Warn("the relayed messages are gone (stream purged?); resuming by sequence; nodes without a snapshot cannot start from this stream",
			"stream_seq", lastSeq)
		return lastSeq, lastSeq, nil
	}
	// Nothing of this log's among the last messages: someone else's flood, or a stream of another
	// log (which the control plane refuses at its start, CheckEventsStream). Relay the log from
	// its start: readers skip what they hold, JetStream drops ids it has seen lately.
	r.log.Error("none of the last messages in TP_EVENTS was relayed from this log; relaying the log from its start (restrict who may publish on events.>)",
		"looked_at", t.present, "stream_seq", lastSeq)
	return 0, lastSeq, nil
}

// tail is what lastGenuine found.
type tail struct {
	found    bool
	pos, seq uint64 // of the last genuine message
	id       string
	present  int // messages looked at (not deleted)
	oldStyle bool
}

// genuineLookback bounds how far lastGenuine walks back over messages someone else published.
const genuineLookback = 1024

// lastGenuine walks TP_EVENTS back from lastSeq to the last message this log's relay published:
// one whose Nats-Msg-Id is the event id the log holds at the position it names. oldStyle: that
// message carries no record proof (relayed by an older version; nodes cannot verify it).
func lastGenuine(ctx context.Context, st jetstream.Stream, store *eventstore.Store, lastSeq uint64) (tail, error) {
	var t tail
	for seq := lastSeq; seq >= 1 && lastSeq-seq < genuineLookback; seq-- {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return t, fmt.Errorf("%s: message %d: %w", EventsStream, seq, err)
		}
		t.present++
		pos, err := strconv.ParseUint(msg.Header.Get(HeaderPosition), 10, 64)
		if err != nil {
			continue
		}
		recs, err := store.ReadAll(ctx, pos, 1)
		if err != nil {
			return t, fmt.Errorf("%s against the log: %w", EventsStream, err)
		}
		// Headers anyone could copy: the body must carry the record's hash as the log has it.
		var ev struct {
			Envelope []byte `json:"envelope"`
			Hash     []byte `json:"hash"`
		}
		_ = json.Unmarshal(msg.Data, &ev)
		if len(recs) == 1 && recs[0].Position == pos && recs[0].EventID.String() == relayedEventID(msg.Header) {
			if len(ev.Envelope) == 0 {
				return tail{found: true, pos: pos, seq: seq, id: recs[0].EventID.String(), present: t.present, oldStyle: true}, nil
			}
			if bytes.Equal(ev.Hash, recs[0].Hash) {
				return tail{found: true, pos: pos, seq: seq, id: recs[0].EventID.String(), present: t.present}, nil
			}
		}
		if t.seq == 0 {
			t.seq, t.pos, t.id = seq, pos, relayedEventID(msg.Header) // the last one, for the error
		}
	}
	return t, nil
}

// publish sends records pipelined, each expecting its predecessor as the stream's last message,
// then waits for every acknowledgement.
func (r *Relay) publish(ctx context.Context, recs []eventstore.Record, lastSeq *uint64) error {
	for start := 0; start < len(recs); start += r.cfg.BatchSize {
		chunk := recs[start:min(start+r.cfg.BatchSize, len(recs))]
		cps, err := r.cfg.Store.Checkpoints(ctx, chunk[0].Position, chunk[len(chunk)-1].Position+1)
		if err != nil {
			return fmt.Errorf("relay position %d: %w", chunk[0].Position, err)
		}
		futures := make([]jetstream.PubAckFuture, 0, len(chunk))
		for i := range chunk {
			msg, err := relayMessage(&chunk[i], cps[chunk[i].Position+1])
			if err != nil {
				return err
			}
			f, err := r.js.PublishMsgAsync(msg,
				jetstream.WithMsgID(r.msgID(&chunk[i])),
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
					// The id is in the stream: this record, published before a publish ahead of
					// it failed (a message someone else published came between) or by a second
					// relay, and readers take records in any order until a checkpoint closes
					// them; or someone else's message under the id they saw in flight, and the
					// record goes again under a fresh id.
					ours, err := r.holds(ctx, ack.Sequence, &chunk[i])
					if err != nil {
						timer.Stop()
						return fmt.Errorf("relay position %d: %w", chunk[i].Position, err)
					}
					if !ours {
						timer.Stop()
						r.fresh[chunk[i].Position] = true
						r.log.Error("a message someone else published holds a record's id; relaying the record under a fresh id (restrict who may publish on events.>)",
							"position", chunk[i].Position, "stream_seq", ack.Sequence)
						return fmt.Errorf("relay position %d: its message id was taken by another publisher", chunk[i].Position)
					}
					r.log.Debug("already relayed", "position", chunk[i].Position, "stream_seq", ack.Sequence)
					r.last.pos, r.last.ok, r.last.maxSeq = chunk[i].Position, true, max(r.last.maxSeq, ack.Sequence)
					r.position.Set(float64(chunk[i].Position + 1))
					continue
				}
				*lastSeq = ack.Sequence
				r.last.pos, r.last.seq, r.last.ok, r.last.maxSeq = chunk[i].Position, ack.Sequence, true, max(r.last.maxSeq, ack.Sequence)
				delete(r.fresh, chunk[i].Position)
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
	t, err := lastGenuine(ctx, st, store, info.State.LastSeq)
	switch {
	case err != nil:
		return err
	case t.found && t.oldStyle:
		return fmt.Errorf("%w: it was relayed by an older version, without the record proofs nodes now check", ErrForeignEvents)
	case t.found:
		return nil
	case t.present == 0:
		return nil // purged: the relay resumes by sequence
	case t.seq == 0:
		return fmt.Errorf("%w: its last %d messages carry no position", ErrForeignEvents, t.present)
	}
	return fmt.Errorf("%w: at position %d it holds event %s, which this log does not hold there", ErrForeignEvents, t.pos, t.id)
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
	last := st.CachedInfo().State.LastSeq
	// Stream sequence = position + 1 (see RelayedEvent), unless someone else published on
	// events.>: then the last message whose position header fits its place (a relayed record
	// is never at a sequence below its position + 1) tells.
	for seq := last; seq >= 1 && last-seq < genuineLookback; seq-- {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("%s: message %d: %w", EventsStream, seq, err)
		}
		if pos, err := strconv.ParseUint(msg.Header.Get(HeaderPosition), 10, 64); err == nil && pos < seq {
			return int64(pos), nil
		}
	}
	return int64(last) - 1, nil
}

// RelayedEventID is the id of the event TP_EVENTS holds at pos; ok is false when it holds none
// there (not relayed yet, or no longer kept).
func RelayedEventID(ctx context.Context, js jetstream.JetStream, pos uint64) (id string, ok bool, err error) {
	st, err := eventsStream(ctx, js)
	if err != nil || st == nil {
		return "", false, err
	}
	// At sequence pos + 1, or later when someone else published on events.> before it.
	last := st.CachedInfo().State.LastSeq
	for seq := pos + 1; seq <= last && seq-pos <= genuineLookback; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("%s: position %d: %w", EventsStream, pos, err)
		}
		if msg.Header.Get(HeaderPosition) == strconv.FormatUint(pos, 10) {
			return relayedEventID(msg.Header), true, nil
		}
	}
	return "", false, nil
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
	// SkipBad, when set, is told of messages that do not decode or jump ahead of the next
	// position, and they are skipped instead of ending the subscription: a reader that verifies
	// every record (eventstore.ChainVerifier) must not stall on what someone else published.
	SkipBad func(seq uint64, err error)
	// Next, when set, is asked before each message for the first position the reader still
	// wants: earlier ones are skipped, all others go to handle, in stream order, with no gap
	// check (a reader that holds records until a checkpoint verifies them decides itself).
	Next func() uint64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// seqOf is a message's stream sequence (0 when it has no JetStream metadata).
func seqOf(msg jetstream.Msg) uint64 {
	if m, err := msg.Metadata(); err == nil {
		return m.Sequence.Stream
	}
	return 0
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
			if opts.SkipBad != nil {
				opts.SkipBad(seqOf(msg), fmt.Errorf("%s: %w", msg.Subject(), err))
				_ = msg.Ack()
				continue
			}
			return fmt.Errorf("subscribe events: %s: %w", msg.Subject(), err)
		}
		if opts.Next != nil {
			next, haveNext, gapCheck = opts.Next(), true, false
		}
		if haveNext && ev.Position < next {
			_ = msg.Ack()
			continue
		}
		if haveNext && gapCheck && ev.Position > next {
			err := fmt.Errorf("%w: expected position %d, got %d", ErrGap, next, ev.Position)
			if opts.SkipBad != nil {
				opts.SkipBad(seqOf(msg), err)
				_ = msg.Ack()
				continue
			}
			return fmt.Errorf("subscribe events: %w", err)
		}
		if err := handle(ctx, ev); err != nil {
			if errors.Is(err, ErrSkipEvent) {
				// Not taken (it did not verify): the genuine event for this position may follow.
				_ = msg.Ack()
				continue
			}
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
