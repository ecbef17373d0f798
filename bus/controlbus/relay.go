package controlbus

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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

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
	st, err := r.js.Stream(ctx, r.cfg.Names.EventsStream())
	if err != nil {
		return false, err
	}
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: message %d: %w", r.cfg.Names.EventsStream(), seq, err)
	}
	var body struct {
		Hash []byte `json:"hash"`
	}
	return json.Unmarshal(msg.Data, &body) == nil && bytes.Equal(body.Hash, rec.Hash), nil
}

func relayMessage(names wire.Names, rec *eventstore.Record, checkpoint string) (*nats.Msg, error) {
	body, err := wire.EncodeRelayedEvent(rec, checkpoint)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(wire.HeaderPosition, strconv.FormatUint(rec.Position, 10))
	h.Set(wire.HeaderType, rec.Type)
	h.Set(wire.HeaderStreamID, rec.StreamID)
	return &nats.Msg{Subject: names.EventSubject(rec.Type), Data: body, Header: h}, nil
}

// RelayConfig configures the control plane's Relay.
type RelayConfig struct {
	// Store is read from (Subscribe); the relay never writes to it.
	Store *eventstore.Store
	// Conn is the control plane's NATS connection; the relay never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// BatchSize is the most records published before waiting for their acknowledgements.
	// Default 256.
	BatchSize int
	// PublishTimeout bounds waiting for a batch's acknowledgements. Default 10s.
	PublishTimeout time.Duration
	// RetryInterval is the pause after a failure (NATS or the store away). Default 1s.
	RetryInterval time.Duration
	// Withhold picks the records sent withheld (ledger.WithheldCopy: no content, only what
	// places them in the log), each append batch's attested by the log key; nil sends all whole.
	// Records of the "$log" stream always go whole.
	Withhold func(rec *eventstore.Record) bool
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

	life lifecycle.Lifecycle

	position  prometheus.Gauge
	published prometheus.Counter

	// fresh holds the positions whose message id someone else took (run's goroutine only).
	fresh map[uint64]bool
	// withheld are the current append batch's records sent withheld so far, for its
	// attestation; origin names the log in it (run's goroutine only).
	withheld []ledger.WithheldEntry
	origin   string

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
	return r.life.Start(ctx, "relay", func(lctx context.Context) error {
		r.life.Go(func(context.Context) { r.run(lctx) })
		return nil
	})
}

// Stop ends the relay; records published but not yet acknowledged are found in the stream (or
// published again) by the next start. Safe to call twice, and before Start.
func (r *Relay) Stop() {
	r.life.Stop()
}

func (r *Relay) run(ctx context.Context) {
	for {
		next, lastSeq, err := r.resume(ctx)
		if err == nil {
			err = r.rewind(ctx, next)
		}
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
		if !lifecycle.Sleep(ctx, r.cfg.RetryInterval) {
			return
		}
	}
}

// resume finds where to go on: after the last message of TP_EVENTS that this log's relay
// published (next position), expecting the stream's last sequence as it is now. Messages after
// it were published by someone else (whoever may publish on events.> can); nodes verify every
// record and skip them.
func (r *Relay) resume(ctx context.Context) (next, lastSeq uint64, err error) {
	stream, err := r.js.Stream(ctx, r.cfg.Names.EventsStream())
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
			r.log.Error("the events stream holds messages this relay did not publish after its last one; nodes skip them (restrict who may publish on its subjects)",
				"stream", r.cfg.Names.EventsStream(), "last_relayed_seq", r.last.seq, "stream_seq", lastSeq)
		}
		return r.last.pos + 1, lastSeq, nil
	}
	t, err := lastGenuine(ctx, stream, r.cfg.Store, lastSeq)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("resume relay: %w", err)
	case t.found:
		if t.seq != lastSeq {
			r.log.Error("the events stream holds messages this relay did not publish after its last one; nodes skip them (restrict who may publish on its subjects)",
				"stream", r.cfg.Names.EventsStream(), "last_relayed_seq", t.seq, "stream_seq", lastSeq)
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
	r.log.Error("none of the last messages in the events stream was relayed from this log; relaying the log from its start (restrict who may publish on its subjects)", "stream", r.cfg.Names.EventsStream(),
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

// lastGenuine walks TP_EVENTS back from lastSeq to the last message this log's relay published:
// one whose Nats-Msg-Id is the event id the log holds at the position it names. oldStyle: that
// message carries no record proof (relayed by an older version; nodes cannot verify it).
func lastGenuine(ctx context.Context, st jetstream.Stream, store *eventstore.Store, lastSeq uint64) (tail, error) {
	var t tail
	for seq := lastSeq; seq >= 1 && lastSeq-seq < wire.GenuineLookback; seq-- {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return t, fmt.Errorf("%s: message %d: %w", st.CachedInfo().Config.Name, seq, err)
		}
		t.present++
		pos, err := strconv.ParseUint(msg.Header.Get(wire.HeaderPosition), 10, 64)
		if err != nil {
			continue
		}
		recs, err := store.ReadAll(ctx, pos, 1)
		if err != nil {
			return t, fmt.Errorf("%s against the log: %w", st.CachedInfo().Config.Name, err)
		}
		// Headers anyone could copy: the body must carry the record's hash as the log has it.
		var ev struct {
			Envelope []byte `json:"envelope"`
			Hash     []byte `json:"hash"`
		}
		_ = json.Unmarshal(msg.Data, &ev)
		if len(recs) == 1 && recs[0].Position == pos && recs[0].EventID.String() == wire.EventIDFromHeader(msg.Header) {
			if len(ev.Envelope) == 0 {
				return tail{found: true, pos: pos, seq: seq, id: recs[0].EventID.String(), present: t.present, oldStyle: true}, nil
			}
			if bytes.Equal(ev.Hash, recs[0].Hash) {
				return tail{found: true, pos: pos, seq: seq, id: recs[0].EventID.String(), present: t.present}, nil
			}
		}
		if t.seq == 0 {
			t.seq, t.pos, t.id = seq, pos, wire.EventIDFromHeader(msg.Header) // the last one, for the error
		}
	}
	return t, nil
}

// withholds tells whether rec goes withheld.
func (r *Relay) withholds(rec *eventstore.Record) bool {
	return r.cfg.Withhold != nil && rec.StreamID != eventstore.LogStream && r.cfg.Withhold(rec)
}

// shape is rec as relayed: withheld when Withhold says so, and, when it ends an append batch
// (checkpoint), carrying the log key's attestation of the batch's withheld records.
func (r *Relay) shape(rec *eventstore.Record, checkpoint string) eventstore.Record {
	out := *rec
	if r.withholds(rec) {
		out = ledger.WithheldCopy(rec)
		r.withheld = append(r.withheld, ledger.WithheldEntry{Position: out.Position, LeafHash: out.LeafHash, Type: out.Type})
	}
	if checkpoint != "" {
		if len(r.withheld) > 0 {
			out.WithheldAttestation = r.cfg.Store.SignWithLogKey(ledger.WithheldMessage(r.origin, r.withheld))
		}
		r.withheld = r.withheld[:0]
	}
	return out
}

// rewind rebuilds the withheld records of the append batch holding position next from its
// start, so that a relay resuming mid-batch attests all of them at the batch's end.
func (r *Relay) rewind(ctx context.Context, next uint64) error {
	r.withheld = r.withheld[:0]
	if r.cfg.Withhold == nil {
		return nil
	}
	if r.origin == "" {
		origin, err := r.cfg.Store.Origin(ctx)
		if err != nil {
			return err
		}
		r.origin = origin
	}
	if next == 0 {
		return nil
	}
	// The batch holding next began at the last checkpoint at or before it: when the record
	// before next ended a batch, that is next itself and there is nothing to rebuild.
	from, err := r.cfg.Store.BatchStart(ctx, next)
	if err != nil {
		return err
	}
	for from < next {
		recs, err := r.cfg.Store.ReadAll(ctx, from, int(min(next-from, 1000)))
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("relay: positions %d to %d are not in the log", from, next-1)
		}
		for i := range recs {
			if recs[i].Position < next && r.withholds(&recs[i]) {
				r.withheld = append(r.withheld, ledger.WithheldEntry{Position: recs[i].Position, LeafHash: ledger.LeafHashOf(&recs[i]), Type: recs[i].Type})
			}
		}
		from = recs[len(recs)-1].Position + 1
	}
	return nil
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
			out := r.shape(&chunk[i], cps[chunk[i].Position+1])
			msg, err := relayMessage(r.cfg.Names, &out, cps[chunk[i].Position+1])
			if err != nil {
				return err
			}
			f, err := r.js.PublishMsgAsync(msg,
				jetstream.WithMsgID(r.msgID(&chunk[i])),
				jetstream.WithExpectStream(r.cfg.Names.EventsStream()),
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

// CheckEventsStream makes sure TP_EVENTS holds this log: its last message must carry the event
// the log has at that position. An empty or absent stream passes. Otherwise the error wraps
// ErrForeignEvents: the stream was filled from another database (or by another control plane
// sharing the NATS server), and relaying this log after it would mix two logs, so nodes would
// fold records that are not this control plane's.
func CheckEventsStream(ctx context.Context, js jetstream.JetStream, names wire.Names, store *eventstore.Store) error {
	st, err := wire.LookupEventsStream(ctx, js, names)
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
	if err := js.DeleteStream(ctx, cfg.Names.EventsStream()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("reset %s: %w", cfg.Names.EventsStream(), err)
	}
	return EnsureStreams(ctx, js, cfg)
}

// LastRelayedPosition is the position of the last event TP_EVENTS holds: -1 when it holds none
// or does not exist yet.
func LastRelayedPosition(ctx context.Context, js jetstream.JetStream, names wire.Names) (int64, error) {
	st, err := wire.LookupEventsStream(ctx, js, names)
	if err != nil || st == nil {
		return -1, err
	}
	last := st.CachedInfo().State.LastSeq
	// Stream sequence = position + 1 (see wire.RelayedEvent), unless someone else published on
	// events.>: then the last message whose position header fits its place (a relayed record
	// is never at a sequence below its position + 1) tells.
	for seq := last; seq >= 1 && last-seq < wire.GenuineLookback; seq-- {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("%s: message %d: %w", names.EventsStream(), seq, err)
		}
		if pos, err := strconv.ParseUint(msg.Header.Get(wire.HeaderPosition), 10, 64); err == nil && pos < seq {
			return int64(pos), nil
		}
	}
	return int64(last) - 1, nil
}
