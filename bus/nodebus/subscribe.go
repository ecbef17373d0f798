package nodebus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// RelayedEventID is the id of the event the events stream of names holds at pos; ok is false when
// it holds none there (not relayed yet, or no longer kept).
func RelayedEventID(ctx context.Context, js jetstream.JetStream, names wire.Names, pos uint64) (id string, ok bool, err error) {
	st, err := wire.LookupEventsStream(ctx, js, names)
	if err != nil || st == nil {
		return "", false, err
	}
	// At sequence pos + 1, or later when someone else published on events.> before it.
	last := st.CachedInfo().State.LastSeq
	for seq := pos + 1; seq <= last && seq-pos <= wire.GenuineLookback; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("%s: position %d: %w", names.EventsStream(), pos, err)
		}
		if msg.Header.Get(wire.HeaderPosition) == strconv.FormatUint(pos, 10) {
			return wire.EventIDFromHeader(msg.Header), true, nil
		}
	}
	return "", false, nil
}

// SubscribeEventsOptions selects how SubscribeEvents reads TP_EVENTS.
type SubscribeEventsOptions struct {
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// Durable names a durable consumer that remembers what was handled across restarts; a
	// handler error is retried (redelivered) after RetryDelay. Empty: an ordered ephemeral
	// consumer reading from FromPosition, for a node that rebuilds its view from scratch; a
	// handler error ends SubscribeEvents.
	Durable string
	// FromPosition is the first position wanted (ephemeral consumers only). Default 0.
	FromPosition uint64
	// FilterSubjects narrows the types read, e.g. Names.EventTypeSubjects("agent_token."). Default
	// every event. More than one filter needs NATS 2.10.
	// With a filter, positions are not contiguous, so gap detection is off.
	FilterSubjects []string
	// RetryDelay is the redelivery delay after a handler error (durable only). Default 1s.
	RetryDelay time.Duration
	// SkipBad, when set, is told of messages that do not decode or jump ahead of the next
	// position, and they are skipped instead of ending the subscription: a reader that verifies
	// every record (ledger.ChainVerifier) must not stall on what someone else published.
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
func SubscribeEvents(ctx context.Context, js jetstream.JetStream, opts SubscribeEventsOptions, handle func(ctx context.Context, ev wire.RelayedEvent) error) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	filters := opts.FilterSubjects
	if len(filters) == 0 {
		filters = []string{opts.Names.EventsSubjects()}
	}
	var cons jetstream.Consumer
	var err error
	if opts.Durable == "" {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy}
		if opts.FromPosition > 0 {
			// Stream sequence = position + 1 (see wire.RelayedEvent).
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, opts.FromPosition+1
		}
		cons, err = js.OrderedConsumer(ctx, opts.Names.EventsStream(), cfg)
	} else {
		cc := jetstream.ConsumerConfig{
			Durable: opts.Durable, FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1,
			MaxAckPending: 1, // strict order: the next event only after this one is handled
		}
		if len(filters) == 1 { // NATS before 2.10 knows one filter only
			cc.FilterSubject, cc.FilterSubjects = filters[0], nil
		}
		cons, err = js.CreateOrUpdateConsumer(ctx, opts.Names.EventsStream(), cc)
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
			if !lifecycle.Sleep(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		ev, err := wire.DecodeRelayedEvent(msg.Data())
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
