package controlbus

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
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
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Reasons a batch is rejected (the first word of IngestRejected.Reason and the label of the
// rejected counter).
const (
	RejectBadSubject       = "bad_subject"        // not "nodefacts.<node-id>"
	RejectMalformed        = "malformed"          // not a batch, or an envelope that does not decode
	RejectWrongStream      = "wrong_stream"       // an event outside the publishing node's stream
	RejectNotNodeKey       = "not_node_key"       // signed by a key that is not this node's event key
	RejectBadSignature     = "bad_signature"      // signature does not verify, or the key is unknown or not in force
	RejectUnknownType      = "unknown_type"       // an event type this control plane does not know
	RejectForbiddenType    = "forbidden_type"     // a type only the control plane records (domain.NodeReportable)
	RejectBadMetadata      = "bad_metadata"       // metadata speaking for someone else (actor, org, client) or not JSON
	RejectIDTaken          = "id_taken"           // an event id the log holds in another stream
	RejectInvalidEvent     = "invalid_event"      // bad JSON, schema version, size …
	RejectDuplicateInBatch = "duplicate_in_batch" // one event id twice in a batch
	RejectInvalidFact      = "invalid_fact"       // a fact that breaks its type's rules (domain.UsageRecorded.Validate)
)

// ingestNamespace derives audit event ids, so a rejection redelivered before its message was
// termed is audited once.
var ingestNamespace = uuid.MustParse("5f0c8a52-8b0e-4d55-9c43-0e6f7f3c2a19")

// IngesterConfig configures the control plane's Ingester.
type IngesterConfig struct {
	// Store appends the batches. Its registry must know the node event types and
	// domain.TypeIngestRejected; its signing key signs the audit events.
	Store *eventstore.Store
	// Conn is the control plane's NATS connection; the ingester never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// Durable names the durable consumer on the node-facts stream. Default
	// Names.IngesterConsumer(). Every control
	// plane replica uses the same one, so each batch goes to one of them.
	Durable string
	// AckWait is how long a batch may take before JetStream redelivers it. Default 30s.
	AckWait time.Duration
	// MaxAckPending bounds batches delivered but not yet acknowledged. Default 64.
	MaxAckPending int
	// RetryMin and RetryMax bound the redelivery delay after a transient failure (the store is
	// unavailable). Defaults 1s and 1m; the delay doubles per delivery.
	RetryMin, RetryMax time.Duration
	// Registerer receives the ingester's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c IngesterConfig) withDefaults() IngesterConfig {
	if c.Durable == "" {
		c.Durable = c.Names.IngesterConsumer()
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = 64
	}
	if c.RetryMin == 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with the configuration.
func (c IngesterConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, fmt.Errorf("%w: ingester: Store is required", ErrInvalidConfig))
	} else if _, ok := c.Store.Registry().Lookup(domain.TypeIngestRejected); !ok {
		errs = append(errs, fmt.Errorf("%w: ingester: the store's registry lacks %s, so rejections could not be audited", ErrInvalidConfig, domain.TypeIngestRejected))
	}
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: ingester: Conn is required", ErrInvalidConfig))
	}
	if c.AckWait < 0 {
		errs = append(errs, fmt.Errorf("%w: ingester: AckWait %s is negative", ErrInvalidConfig, c.AckWait))
	}
	if c.MaxAckPending < 0 {
		errs = append(errs, fmt.Errorf("%w: ingester: MaxAckPending %d is negative", ErrInvalidConfig, c.MaxAckPending))
	}
	if err := checkRetryRange("ingester", c.RetryMin, c.RetryMax); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Ingester consumes TP_NODEFACTS and appends each batch to the event store with the node's own
// signatures. Outcomes per batch:
//
//   - stored, or already stored (eventstore.ErrDuplicateEventID: a redelivery) → acknowledged;
//   - refused for good (bad signature, unknown key or type, malformed, another node's stream or
//     key) → an audit.ingest_rejected event is appended to the audit stream, then the message is
//     terminated so it is never redelivered. If the audit append fails, the batch is retried
//     instead: a rejection is never dropped unrecorded;
//   - anything else (the store is unavailable, the outcome of a commit is unknown) → negative
//     acknowledgement with a growing delay, so it is retried until the store is back.
type Ingester struct {
	cfg   IngesterConfig
	store *eventstore.Store
	log   *slog.Logger
	keys  *keyOwners

	life lifecycle.Lifecycle

	ingested prometheus.Counter
	batches  *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

// NewIngester prepares an ingester; Start begins consuming.
func NewIngester(cfg IngesterConfig) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	in := &Ingester{
		cfg:   c,
		store: c.Store,
		log:   c.Logger.With("component", "bus.ingester"),
		keys:  &keyOwners{store: c.Store},
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tunnelplane_ingest_events_total",
			Help: "Node events appended to the event store by the ingester.",
		}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_ingest_batches_total",
			Help: "Node batches handled by the ingester, by result (stored, duplicate, rejected, retried).",
		}, []string{"result"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tunnelplane_ingest_rejected_batches_total",
			Help: "Node batches refused for good and audited, by reason.",
		}, []string{"reason"}),
	}
	if c.Registerer != nil {
		var errs [3]error
		in.ingested, errs[0] = register(c.Registerer, in.ingested)
		in.batches, errs[1] = register(c.Registerer, in.batches)
		in.rejected, errs[2] = register(c.Registerer, in.rejected)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("new ingester: %w", err)
		}
	}
	return in, nil
}

// Start creates (or updates) the durable consumer and begins consuming. NATS must be reachable;
// a failed Start may be retried.
func (in *Ingester) Start(ctx context.Context) error {
	return in.life.Start(ctx, "ingester", func(lctx context.Context) error {
		it, err := in.consume(ctx)
		if err != nil {
			return err
		}
		in.life.Go(func(context.Context) { in.run(lctx, it) })
		return nil
	})
}

// consume creates (or updates) the durable consumer and opens its message iterator.
func (in *Ingester) consume(ctx context.Context) (jetstream.MessagesContext, error) {
	js, err := jetstream.New(in.cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("start ingester: %w", err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, in.cfg.Names.NodeFactsStream(), jetstream.ConsumerConfig{
		Durable:       in.cfg.Durable,
		Description:   "tunnelplane ingester: node batches into the event store",
		FilterSubject: in.cfg.Names.NodeFactsSubjects(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxDeliver:    -1, // transient failures retry until the store is back; bad batches are termed
		MaxAckPending: in.cfg.MaxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("start ingester: consumer %s: %w", in.cfg.Durable, err)
	}
	// Prefetch little: batches waiting in the client count against AckWait.
	it, err := cons.Messages(jetstream.PullMaxMessages(min(in.cfg.MaxAckPending, 32)))
	if err != nil {
		return nil, fmt.Errorf("start ingester: %w", err)
	}
	return it, nil
}

// Stop ends consumption after the batch in hand (its outcome is settled or left for
// redelivery). Safe to call twice, and before Start.
func (in *Ingester) Stop() { in.life.Stop() }

func (in *Ingester) run(ctx context.Context, it jetstream.MessagesContext) {
	defer it.Stop()
	failing := false
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				in.log.Error("the ingester's consumer closed; node batches are no longer ingested", "error", err)
				return
			}
			// Missed heartbeats and reconnects: the iterator keeps pulling after them.
			if !failing {
				in.log.Warn("waiting for node batches", "error", err)
				failing = true
			}
			if !lifecycle.Sleep(ctx, 100*time.Millisecond) {
				return
			}
			continue
		}
		if failing {
			in.log.Info("receiving node batches again")
			failing = false
		}
		in.handle(ctx, msg)
	}
}

// rejection is a permanent refusal of one batch.
type rejection struct {
	reason string
	detail string
	nodeID string
	keyID  string
	events int
}

func (in *Ingester) handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		in.log.Error("node batch without JetStream metadata; terminating it", "subject", msg.Subject(), "error", err)
		_ = msg.Term()
		return
	}
	log := in.log.With("subject", msg.Subject(), "stream_seq", meta.Sequence.Stream, "delivery", meta.NumDelivered,
		"correlation_id", msg.Headers().Get(jetstream.MsgIDHeader))
	events, rej, err := in.check(ctx, msg)
	if err != nil {
		in.retry(ctx, msg, meta, log, err)
		return
	}
	if rej != nil {
		in.reject(ctx, msg, meta, log, rej)
		return
	}
	stored, err := in.appendBatch(ctx, domain.NodeFactsStream(in.mustNodeID(msg.Subject())), events)
	in.ingested.Add(float64(stored))
	switch {
	case err == nil && stored > 0:
		in.batches.WithLabelValues("stored").Inc()
		in.settle(ctx, msg, log)
	case err == nil:
		in.batches.WithLabelValues("duplicate").Inc()
		log.Debug("node batch already stored")
		in.settle(ctx, msg, log)
	case permanentStoreError(err) != "":
		rej := &rejection{reason: permanentStoreError(err), detail: err.Error(), nodeID: in.mustNodeID(msg.Subject()), events: len(events)}
		rej.keyID = firstKeyID(events)
		in.reject(ctx, msg, meta, log, rej)
	default:
		in.retry(ctx, msg, meta, log, err)
	}
}

// appendBatch appends a batch atomically. When some of its events are in the log already (a
// redelivered batch, or a fact re-reported under its deterministic id next to new ones), it
// appends the others one by one: every event carries its own inclusion proof, so each verifies
// alone. It returns how many events it stored.
//
// An event counts as in the log only when the log holds its id in the same stream: a node that
// knows another node's deterministic outcome id must not suppress that node's report with it.
func (in *Ingester) appendBatch(ctx context.Context, stream string, events []eventstore.PresignedEvent) (int, error) {
	_, err := in.store.AppendPresigned(ctx, events)
	if err == nil {
		return len(events), nil
	}
	if !errors.Is(err, eventstore.ErrDuplicateEventID) {
		return 0, err
	}
	stored := 0
	for i := range events {
		_, err := in.store.AppendPresigned(ctx, events[i:i+1])
		switch {
		case err == nil:
			stored++
		case errors.Is(err, eventstore.ErrDuplicateEventID):
			if err := in.sameStream(ctx, events[i], stream); err != nil {
				return stored, err
			}
		default:
			return stored, err
		}
	}
	return stored, nil
}

// sameStream checks that the log holds e's id in stream.
func (in *Ingester) sameStream(ctx context.Context, e eventstore.PresignedEvent, stream string) error {
	env, err := eventstore.DecodeEnvelope(e.Envelope)
	if err != nil {
		return fmt.Errorf("%w: %w", eventstore.ErrMalformed, err)
	}
	var held string
	if err := in.store.Pool().QueryRow(ctx, `SELECT stream_id FROM events WHERE event_id = $1`, env.EventID).Scan(&held); err != nil {
		return fmt.Errorf("%w: look up event %s: %w", eventstore.ErrUnavailable, env.EventID, err)
	}
	if held != stream {
		return fmt.Errorf("%w: %s is an event of stream %q, not of %q", errIDTaken, env.EventID, held, stream)
	}
	return nil
}

// check decodes a batch and enforces that a node writes only its own stream with its own key.
// A non-nil error is transient (the key list could not be read).
func (in *Ingester) check(ctx context.Context, msg jetstream.Msg) ([]eventstore.PresignedEvent, *rejection, error) {
	nodeID, ok := in.cfg.Names.NodeIDFromSubject(msg.Subject())
	if !ok {
		return nil, &rejection{reason: RejectBadSubject, detail: "subject is not nodefacts.<node-id>"}, nil
	}
	events, err := wire.DecodeBatch(msg.Data())
	if err != nil {
		return nil, &rejection{reason: RejectMalformed, detail: err.Error(), nodeID: nodeID}, nil
	}
	want := domain.NodeFactsStream(nodeID)
	keyID := ""
	ids := make(map[uuid.UUID]struct{}, len(events))
	for i := range events {
		env, err := eventstore.DecodeEnvelope(events[i].Envelope)
		if err != nil {
			return nil, &rejection{reason: RejectMalformed, detail: fmt.Sprintf("event %d: %v", i, err), nodeID: nodeID, events: len(events)}, nil
		}
		// The store reports an id repeated inside a batch as a duplicate, which would read as
		// "already stored": refuse it here instead.
		if _, dup := ids[env.EventID]; dup {
			return nil, &rejection{reason: RejectDuplicateInBatch, detail: fmt.Sprintf("event id %s appears twice", env.EventID),
				nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
		ids[env.EventID] = struct{}{}
		if keyID == "" {
			keyID = env.KeyID
		}
		if env.StreamID != want {
			return nil, &rejection{reason: RejectWrongStream, detail: fmt.Sprintf("event %d is for stream %q, node %s may only write %q", i, env.StreamID, nodeID, want),
				nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
		if n := len(env.Payload) + len(env.Metadata); n > wire.MaxNodeFactBytes {
			return nil, &rejection{reason: RejectInvalidEvent, detail: fmt.Sprintf("event %d has %d bytes of payload and metadata, at most %d", i, n, wire.MaxNodeFactBytes),
				nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
		if detail := nodeMetadataProblem(env.Metadata, nodeID); detail != "" {
			return nil, &rejection{reason: RejectBadMetadata, detail: fmt.Sprintf("event %d: %s", i, detail),
				nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
		if !domain.NodeReportable(env.Type) {
			return nil, &rejection{reason: RejectForbiddenType, detail: fmt.Sprintf("event %d is a %s: nodes may not report that", i, env.Type),
				nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
		if env.KeyID != keyID {
			return nil, &rejection{reason: RejectBadSignature, detail: fmt.Sprintf("event %d names key %s, event 0 names %s", i, env.KeyID, keyID),
				nodeID: nodeID, keyID: keyID, events: len(events)}, nil
		}
		if err := in.factProblem(&env); err != nil {
			reason := permanentStoreError(err)
			if reason == "" {
				reason = RejectInvalidFact
			}
			return nil, &rejection{reason: reason, detail: fmt.Sprintf("event %d: %v", i, err), nodeID: nodeID, keyID: env.KeyID, events: len(events)}, nil
		}
	}
	info, known, err := in.keys.lookup(ctx, keyID)
	if err != nil {
		return nil, nil, err
	}
	// An unknown key is left to the store, which refuses it with ErrBadSignature.
	if known && (info.Purpose != eventstore.PurposeNode || info.Owner != nodeID) {
		return nil, &rejection{reason: RejectNotNodeKey, detail: fmt.Sprintf("key %s is a %s key of %q, not node %s's event key", keyID, info.Purpose, info.Owner, nodeID),
			nodeID: nodeID, keyID: keyID, events: len(events)}, nil
	}
	return events, nil, nil
}

// factProblem checks a fact of a type with rules of its own (usage.recorded, access.calls_recorded:
// their Validate)
// against them, at the type's current schema version (an older one is upcast first, as readers
// will see it): a window no node could have counted must not reach the projections.
func (in *Ingester) factProblem(env *eventstore.Envelope) error {
	if env.Type != domain.TypeUsageRecorded && env.Type != domain.TypeAccessCallsRecorded {
		return nil
	}
	_, payload, err := in.cfg.Store.Registry().Upcast(env.Type, env.SchemaVersion, env.Payload)
	if err != nil {
		return err
	}
	ev, err := domain.Decode(env.Type, payload)
	if err != nil {
		return fmt.Errorf("%w: %w", domain.ErrInvalidFact, err)
	}
	if v, ok := ev.(interface{ Validate() error }); ok {
		return v.Validate()
	}
	return nil
}

// nodeMetadataProblem says what is wrong with a node's event metadata ("" nothing): it must name
// the node as actor and node_id, and may not speak for an organization, a user's request or a
// client (the audit index shows those).
func nodeMetadataProblem(raw []byte, nodeID string) string {
	var m domain.Metadata
	if err := json.Unmarshal(raw, &m); err != nil {
		return "metadata is not a JSON object: " + err.Error()
	}
	switch {
	case m.Actor != "node:"+nodeID || m.NodeID != nodeID:
		return fmt.Sprintf("metadata names actor %q and node %q, not node:%s", m.Actor, m.NodeID, nodeID)
	case m.OrgID != "" || m.ClientIP != "" || m.UserAgent != "" || m.RequestID != "" || m.Command != "":
		return "metadata may carry only actor, node_id, occurred_at, correlation_id and causation_id"
	}
	return ""
}

// errIDTaken: a node's event reuses the id of an event the log holds in another stream.
var errIDTaken = errors.New("event id taken")

// permanentStoreError names the rejection reason of a store error that retrying cannot cure.
func permanentStoreError(err error) string {
	switch {
	case errors.Is(err, errIDTaken):
		return RejectIDTaken
	case errors.Is(err, eventstore.ErrBadSignature):
		return RejectBadSignature
	case errors.Is(err, eventstore.ErrUnknownEventType):
		return RejectUnknownType
	case errors.Is(err, eventstore.ErrInvalidEvent), errors.Is(err, eventstore.ErrTooLarge),
		errors.Is(err, eventstore.ErrInvalidStreamID), errors.Is(err, eventstore.ErrReservedStream),
		errors.Is(err, eventstore.ErrMalformed):
		return RejectInvalidEvent
	}
	return ""
}

func (in *Ingester) settle(ctx context.Context, msg jetstream.Msg, log *slog.Logger) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Wait for the server to confirm: an ack lost here means a redelivery, which the store
	// recognises, but a confirmed ack keeps the work queue short.
	if err := msg.DoubleAck(actx); err != nil {
		log.Warn("acknowledging a stored node batch failed; it will be redelivered and recognised", "error", err)
	}
}

func (in *Ingester) retry(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, log *slog.Logger, cause error) {
	if ctx.Err() != nil {
		// Stopping: hand the batch back at once for the next ingester (or this one restarted).
		_ = msg.Nak()
		return
	}
	in.batches.WithLabelValues("retried").Inc()
	delay := in.cfg.RetryMin
	for i := uint64(1); i < meta.NumDelivered && delay < in.cfg.RetryMax; i++ {
		delay *= 2
	}
	delay = min(delay, in.cfg.RetryMax)
	log.Warn("node batch not stored; retrying later", "error", cause, "delay", delay)
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("negative acknowledgement failed; the batch is redelivered after the ack wait", "error", err)
	}
}

// reject audits a refused batch, then terminates its message.
func (in *Ingester) reject(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, log *slog.Logger, rej *rejection) {
	reason := rej.reason
	if rej.detail != "" {
		reason += ": " + truncate(rej.detail, 1000)
	}
	payload, err := json.Marshal(domain.IngestRejected{Subject: msg.Subject(), NodeID: rej.nodeID, KeyID: rej.keyID, Reason: reason, Events: rej.events})
	if err != nil {
		in.retry(ctx, msg, meta, log, err)
		return
	}
	// The correlation id ties the audit event to the batch (its Nats-Msg-Id, the first event id).
	metadata, _ := json.Marshal(domain.Metadata{Actor: "system:ingester", NodeID: rej.nodeID,
		CorrelationID: msg.Headers().Get(jetstream.MsgIDHeader), OccurredAt: time.Now().UTC()})
	_, err = in.store.Append(ctx, domain.AuditStream, eventstore.AnyVersion, eventstore.EventData{
		ID: auditID(msg, meta), Type: domain.TypeIngestRejected, Payload: payload, Metadata: metadata,
	})
	if err != nil && !errors.Is(err, eventstore.ErrDuplicateEventID) {
		log.Error("auditing a rejected node batch failed; retrying the batch", "reason", rej.reason, "error", err)
		in.retry(ctx, msg, meta, log, err)
		return
	}
	in.batches.WithLabelValues("rejected").Inc()
	in.rejected.WithLabelValues(rej.reason).Inc()
	log.Warn("node batch rejected", "reason", reason, "node_id", rej.nodeID, "key_id", rej.keyID, "events", rej.events)
	term := msg.Term
	if versionAtLeast(in.cfg.Conn.ConnectedServerVersion(), "2.10.0") { // a reason in "+TERM" is new in 2.10
		term = func() error { return msg.TermWithReason(rej.reason) }
	}
	if err := term(); err != nil {
		log.Warn("terminating a rejected node batch failed; a redelivery is audited once and terminated again", "error", err)
	}
}

// auditID is stable across redeliveries of one message (same stream sequence, same bytes).
func auditID(msg jetstream.Msg, meta *jetstream.MsgMetadata) uuid.UUID {
	h := sha256.New()
	h.Write([]byte(msg.Subject()))
	h.Write(binary.BigEndian.AppendUint64(nil, meta.Sequence.Stream))
	h.Write(msg.Data())
	return uuid.NewSHA1(ingestNamespace, h.Sum(nil))
}

func (in *Ingester) mustNodeID(subject string) string {
	id, _ := in.cfg.Names.NodeIDFromSubject(subject)
	return id
}

func firstKeyID(events []eventstore.PresignedEvent) string {
	if len(events) == 0 {
		return ""
	}
	env, err := eventstore.DecodeEnvelope(events[0].Envelope)
	if err != nil {
		return ""
	}
	return env.KeyID
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// keyOwners caches the log's key history (who owns which key), reloading on a miss at most once a
// second so a flood of batches with unknown keys does not become a flood of queries.
type keyOwners struct {
	store *eventstore.Store

	mu       sync.Mutex
	byID     map[string]eventstore.KeyInfo
	loadedAt time.Time
}

func (k *keyOwners) lookup(ctx context.Context, id string) (eventstore.KeyInfo, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if info, ok := k.byID[id]; ok {
		return info, true, nil
	}
	if k.byID != nil && time.Since(k.loadedAt) < time.Second {
		return eventstore.KeyInfo{}, false, nil
	}
	infos, err := k.store.Keys(ctx)
	if err != nil {
		return eventstore.KeyInfo{}, false, fmt.Errorf("load key history: %w", err)
	}
	k.byID = make(map[string]eventstore.KeyInfo, len(infos))
	for _, info := range infos {
		k.byID[info.KeyID] = info
	}
	k.loadedAt = time.Now()
	info, ok := k.byID[id]
	return info, ok, nil
}
