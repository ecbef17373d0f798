package nodebus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Fact is one data-plane event a node reports. Its metadata is a domain.Metadata with actor
// "node:<id>", node_id, occurred_at and the correlation and causation ids.
type Fact struct {
	// Event is the payload; its EventType() names the stored type (schema version 1).
	Event domain.Event
	// ID is the event id; zero gets a fresh UUIDv7. A deterministic id makes a re-reported fact
	// (after a node restart, say) land in the log once.
	ID uuid.UUID
	// OccurredAt is when the node saw it. Default: now.
	OccurredAt time.Time
	// CorrelationID and CausationID link the fact to the request or command behind it.
	CorrelationID string
	CausationID   string
}

// PublisherConfig configures a node's Publisher.
type PublisherConfig struct {
	// NodeID is the node's id (a UUID); facts go to stream domain.NodeFactsStream(NodeID) and
	// subject Names.NodeFactsSubject(NodeID).
	NodeID string
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// Key is the node's event key, registered in the log for NodeID (PurposeNode).
	Key *ledger.SigningKey
	// Conn is the node's NATS connection. It should reconnect forever (see wire.Connect); the
	// publisher never closes it.
	Conn *nats.Conn
	// SpoolDir holds batches NATS has not acknowledged (created with mode 0700).
	SpoolDir string
	// MaxSpoolBytes bounds the spool; beyond it Publish fails with ErrSpoolFull. Default 1 GiB.
	MaxSpoolBytes int64
	// SegmentBytes is the size at which the spool starts a new segment file. Default 8 MiB.
	SegmentBytes int64
	// MaxMessageBytes bounds one batch message. Default: the server's max_payload when known,
	// else 1 MiB.
	MaxMessageBytes int
	// PublishTimeout bounds waiting for one JetStream acknowledgement. Default 5s.
	PublishTimeout time.Duration
	// RetryMin and RetryMax bound the resend loop's backoff while NATS is away. Defaults 100ms
	// and 2s.
	RetryMin, RetryMax time.Duration
	// Registerer receives the publisher's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock for OccurredAt. Default time.Now.
	Now func() time.Time
}

func (c PublisherConfig) withDefaults() PublisherConfig {
	if c.MaxSpoolBytes == 0 {
		c.MaxSpoolBytes = 1 << 30
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = defaultSegmentMax
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports every problem with the configuration.
func (c PublisherConfig) Validate() error {
	var errs []error
	if !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: publisher: NodeID %q is not a UUID", ErrInvalidConfig, c.NodeID))
	}
	if c.Key == nil {
		errs = append(errs, fmt.Errorf("%w: publisher: Key (the node's event key) is required", ErrInvalidConfig))
	}
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: publisher: Conn is required", ErrInvalidConfig))
	}
	if c.SpoolDir == "" {
		errs = append(errs, fmt.Errorf("%w: publisher: SpoolDir is required", ErrInvalidConfig))
	}
	if c.MaxSpoolBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: publisher: MaxSpoolBytes %d is negative", ErrInvalidConfig, c.MaxSpoolBytes))
	}
	if c.SegmentBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: publisher: SegmentBytes %d is negative", ErrInvalidConfig, c.SegmentBytes))
	}
	if c.MaxMessageBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: publisher: MaxMessageBytes %d is negative", ErrInvalidConfig, c.MaxMessageBytes))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: publisher: PublishTimeout %s is negative", ErrInvalidConfig, c.PublishTimeout))
	}
	if err := checkRetryRange("publisher", c.RetryMin, c.RetryMax); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Publisher turns a node's facts into signed batches on "nodefacts.<node-id>". A batch is either
// acknowledged by JetStream or fsync'd to the spool before Publish returns, and spooled batches
// are resent in order by the loop Start runs. While the spool holds anything, new batches queue
// behind it, so batches reach JetStream in the order they were published.
type Publisher struct {
	cfg     PublisherConfig
	js      jetstream.JetStream
	stream  string
	subject string
	log     *slog.Logger

	mu     sync.Mutex // orders direct publishes against the spool; guards spool and closed
	spool  *spool
	closed bool

	kick chan struct{}

	life lifecycle.Lifecycle

	depth     prometheus.Gauge
	spooled   prometheus.Counter
	published prometheus.Counter
}

// NewPublisher opens the spool (recovering what a previous process left) and prepares the
// publisher. Call Start to resend spooled batches.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	js, err := jetstream.New(c.Conn)
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	p := &Publisher{
		cfg:     c,
		js:      js,
		stream:  domain.NodeFactsStream(c.NodeID),
		subject: c.Names.NodeFactsSubject(c.NodeID),
		log:     c.Logger.With("component", "bus.publisher", "node_id", c.NodeID),
		kick:    make(chan struct{}, 1),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tunnelplane_event_spool_depth",
			Help: "Batches of node events spooled on disk, waiting for NATS to acknowledge them.",
		}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_event_spooled_batches_total",
			Help: "Batches of node events written to the spool because NATS did not acknowledge them.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_event_published_batches_total",
			Help: "Batches of node events acknowledged by JetStream (directly or from the spool).",
		}),
	}
	if c.Registerer != nil {
		var errs [3]error
		p.depth, errs[0] = register(c.Registerer, p.depth)
		p.spooled, errs[1] = register(c.Registerer, p.spooled)
		p.published, errs[2] = register(c.Registerer, p.published)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("new publisher: %w", err)
		}
	}
	sp, err := openSpool(c.SpoolDir, c.MaxSpoolBytes, c.SegmentBytes, p.log)
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	p.spool = sp
	p.depth.Set(float64(sp.Len()))
	if n := sp.Len(); n > 0 {
		p.log.Info("spooled batches found; they are resent once the publisher starts", "batches", n)
	}
	return p, nil
}

// Start launches the loop that resends spooled batches. Stop ends it.
func (p *Publisher) Start(ctx context.Context) error {
	return p.life.Start(ctx, "publisher", func(lctx context.Context) error {
		p.poke() // resend what an earlier process left in the spool
		p.life.Go(func(context.Context) { p.resendLoop(lctx) })
		return nil
	})
}

// Stop ends the resend loop and closes the spool; spooled batches stay on disk for the next
// process. Publish fails with ErrClosed afterwards. Safe to call twice, and before Start.
func (p *Publisher) Stop() {
	if !p.life.Stop() {
		return
	}
	p.mu.Lock()
	p.closed = true
	p.spool.close()
	p.mu.Unlock()
}

// SpoolDepth is the number of batches waiting in the spool.
func (p *Publisher) SpoolDepth() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.spool.Len()
}

// Publish signs facts as one batch and hands it to JetStream, or to the spool when NATS does not
// acknowledge it in time. It returns nil only once the batch is acknowledged or fsync'd: nothing
// it accepted is lost if the process dies. A nil error therefore means "will reach the control
// plane", not "is stored". Facts too many or too large for one NATS message (a node's usage
// windows of thousands of callers) go as consecutive batches, in order (encodeSplit).
func (p *Publisher) Publish(ctx context.Context, facts ...Fact) error {
	batches, err := p.encodeSplit(facts)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("publish: %w", ErrClosed)
	}
	for _, b := range batches {
		if err := p.publishLocked(ctx, b.body, b.msgID); err != nil {
			return err
		}
	}
	return nil
}

// publishLocked sends one batch, or spools it (under p.mu). Once one batch is spooled, the
// next ones follow it there, so that they leave in order.
func (p *Publisher) publishLocked(ctx context.Context, body []byte, msgID string) error {
	if p.spool.Len() == 0 && p.cfg.Conn.Status() == nats.CONNECTED {
		err := p.send(ctx, body, msgID)
		if err == nil {
			return nil
		}
		// Whether or not it landed, the batch goes to the spool: a repeat is dropped by the
		// duplicate window or the store's unique event ids, a loss would be silent.
		p.log.Debug("publish not acknowledged; spooling", "msg_id", msgID, "error", err)
	}
	if err := p.spool.Append(body); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	p.spooled.Inc()
	p.depth.Set(float64(p.spool.Len()))
	p.poke()
	return nil
}

type encodedBatch struct {
	body  []byte
	msgID string
}

// encodeSplit encodes facts as one batch or, when that is larger than a NATS message or
// ledger.MaxEventsPerCall allow, as the batches of its halves (recursively; a single fact too
// large is an error).
func (p *Publisher) encodeSplit(facts []Fact) ([]encodedBatch, error) {
	if len(facts) <= ledger.MaxEventsPerCall {
		body, msgID, err := p.encode(facts)
		if err == nil {
			return []encodedBatch{{body, msgID}}, nil
		}
		if !errors.Is(err, ErrTooLarge) || len(facts) == 1 {
			return nil, err
		}
	}
	h := len(facts) / 2
	first, err := p.encodeSplit(facts[:h])
	if err != nil {
		return nil, err
	}
	rest, err := p.encodeSplit(facts[h:])
	if err != nil {
		return nil, err
	}
	return append(first, rest...), nil
}

func (p *Publisher) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// encode builds, signs and frames one batch.
func (p *Publisher) encode(facts []Fact) (body []byte, msgID string, err error) {
	if len(facts) == 0 {
		return nil, "", fmt.Errorf("%w: no facts", ErrInvalidFact)
	}
	if len(facts) > ledger.MaxEventsPerCall {
		return nil, "", fmt.Errorf("%w: %d facts in one batch, at most %d", ErrTooLarge, len(facts), ledger.MaxEventsPerCall)
	}
	now := p.cfg.Now().UTC()
	envelopes := make([][]byte, len(facts))
	ids := make(map[uuid.UUID]struct{}, len(facts))
	var first uuid.UUID
	for i, f := range facts {
		if f.Event == nil {
			return nil, "", fmt.Errorf("%w: fact %d has no event", ErrInvalidFact, i)
		}
		typ := f.Event.EventType()
		if typ == "" {
			return nil, "", fmt.Errorf("%w: fact %d (%T) has no event type", ErrInvalidFact, i, f.Event)
		}
		payload, err := json.Marshal(f.Event)
		if err != nil {
			return nil, "", fmt.Errorf("%w: fact %d (%s): %w", ErrInvalidFact, i, typ, err)
		}
		at := f.OccurredAt
		if at.IsZero() {
			at = now
		}
		meta, err := json.Marshal(domain.Metadata{Actor: "node:" + p.cfg.NodeID, NodeID: p.cfg.NodeID, OccurredAt: at.UTC(),
			CorrelationID: f.CorrelationID, CausationID: f.CausationID})
		if err != nil {
			return nil, "", fmt.Errorf("%w: fact %d (%s) metadata: %w", ErrInvalidFact, i, typ, err)
		}
		if len(payload) > ledger.MaxPayloadBytes || len(meta) > ledger.MaxMetadataBytes {
			return nil, "", fmt.Errorf("%w: fact %d (%s): payload %d bytes, metadata %d bytes", ErrTooLarge, i, typ, len(payload), len(meta))
		}
		id := f.ID
		if id == uuid.Nil {
			if id, err = uuid.NewV7(); err != nil {
				return nil, "", fmt.Errorf("%w: event id: %w", ErrInvalidFact, err)
			}
		}
		if _, dup := ids[id]; dup {
			return nil, "", fmt.Errorf("%w: fact %d repeats event id %s", ErrInvalidFact, i, id)
		}
		ids[id] = struct{}{}
		if i == 0 {
			first = id
		}
		env := ledger.Envelope{EventID: id, StreamID: p.stream, Type: typ, SchemaVersion: domain.SchemaVersionOf(typ),
			KeyID: p.cfg.Key.ID(), Payload: payload, Metadata: meta}
		envelopes[i] = ledger.AppendEnvelope(make([]byte, 0, ledger.EnvelopeSize(&env)), &env)
	}
	signed := ledger.SignEnvelopes(p.cfg.Key, envelopes)
	body = wire.EncodeBatch(signed.Signature, envelopes, signed.Proofs)
	if limit := p.maxMessage(); len(body) > limit {
		return nil, "", fmt.Errorf("%w: %d bytes, NATS accepts %d; publish fewer facts at once", ErrTooLarge, len(body), limit)
	}
	return body, first.String(), nil
}

func (p *Publisher) maxMessage() int {
	if p.cfg.MaxMessageBytes > 0 {
		return p.cfg.MaxMessageBytes
	}
	if n := p.cfg.Conn.MaxPayload(); n > 0 {
		return int(n) - 1024 // headers share the limit
	}
	return 1<<20 - 1024
}

// send publishes one batch and waits for JetStream's acknowledgement.
func (p *Publisher) send(ctx context.Context, body []byte, msgID string) error {
	sctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: p.subject, Data: body, Header: nats.Header{}}
	_, err := p.js.PublishMsg(sctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(p.cfg.Names.NodeFactsStream()))
	if err != nil {
		return err
	}
	p.published.Inc()
	return nil
}

// resendLoop sends spooled batches oldest first, backing off while NATS is away.
func (p *Publisher) resendLoop(ctx context.Context) {
	backoff := p.cfg.RetryMin
	for {
		p.mu.Lock()
		body, ok, err := p.spool.Peek()
		p.mu.Unlock()
		if err != nil {
			if errors.Is(err, wire.ErrMalformed) {
				p.log.Error("spooled batch is damaged and is dropped", "error", err)
				p.ackSpooled()
				continue
			}
			p.log.Error("reading the spool failed", "error", err)
			if !lifecycle.Sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, p.cfg.RetryMax)
			continue
		}
		if !ok {
			select {
			case <-p.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		msgID, err := batchMsgID(body)
		if err != nil {
			p.log.Error("spooled batch cannot be decoded and is dropped", "error", err)
			p.ackSpooled()
			continue
		}
		if p.cfg.Conn.Status() == nats.CONNECTED {
			err = p.send(ctx, body, msgID)
		} else {
			err = nats.ErrConnectionReconnecting
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Debug("resending spooled batch failed; retrying", "msg_id", msgID, "error", err, "backoff", backoff)
			if !lifecycle.Sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, p.cfg.RetryMax)
			continue
		}
		backoff = p.cfg.RetryMin
		p.ackSpooled()
	}
}

func (p *Publisher) ackSpooled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.spool.Ack(); err != nil {
		p.log.Error("removing a sent spool segment failed", "error", err)
	}
	p.depth.Set(float64(p.spool.Len()))
	if p.spool.Len() == 0 {
		p.log.Debug("spool drained")
	}
}

// batchMsgID is the Nats-Msg-Id of a batch: its first event's id.
func batchMsgID(body []byte) (string, error) {
	events, err := wire.DecodeBatch(body)
	if err != nil {
		return "", err
	}
	env, err := ledger.DecodeEnvelope(events[0].Envelope)
	if err != nil {
		return "", fmt.Errorf("%w: %w", wire.ErrMalformed, err)
	}
	return env.EventID.String(), nil
}
