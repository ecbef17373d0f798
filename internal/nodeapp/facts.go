package nodeapp

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// maxQueuedFacts bounds the facts waiting for the publisher: a node whose publisher is stuck (the
// spool's disk full) must not grow without end while agents come and go. What is dropped is
// counted and logged; usage windows and sessions lose precision, nothing else.
const maxQueuedFacts = 100_000

// factQueue is the node's Sink: it must not block the data path, so facts are queued in memory
// and published (to NATS, or the disk spool while NATS is away) by one goroutine, in order.
type factQueue struct {
	publish func(ctx context.Context, facts ...nodebus.Fact) error
	log     *slog.Logger
	life    lifecycle.Lifecycle
	limit   int

	mu      sync.Mutex
	queue   []nodebus.Fact
	dropped int
	closed  bool
	wake    chan struct{}
}

func newFactQueue(publish func(ctx context.Context, facts ...nodebus.Fact) error, log *slog.Logger) *factQueue {
	return &factQueue{publish: publish, log: log, limit: maxQueuedFacts, wake: make(chan struct{}, 1)}
}

// Start publishes queued facts until Stop.
func (q *factQueue) Start(ctx context.Context) error {
	return q.life.Start(ctx, "fact queue", func(context.Context) error {
		q.life.Go(q.run)
		return nil
	})
}

func (q *factQueue) push(e domain.Event) { q.add(nodebus.Fact{Event: e}) }

func (q *factQueue) add(f nodebus.Fact) {
	f.OccurredAt = time.Now()
	q.mu.Lock()
	switch {
	case q.closed:
	case len(q.queue) >= q.limit:
		q.dropped++
	default:
		q.queue = append(q.queue, f)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *factQueue) AgentConnected(e domain.AgentConnected)       { q.push(e) }
func (q *factQueue) AgentDisconnected(e domain.AgentDisconnected) { q.push(e) }
func (q *factQueue) AgentReplaced(e domain.AgentReplaced)         { q.push(e) }
func (q *factQueue) UsageRecorded(e domain.UsageRecorded)         { q.push(e) }
func (q *factQueue) AgentReported(e domain.Event)                 { q.push(e) }

func (q *factQueue) run(ctx context.Context) {
	for {
		q.mu.Lock()
		batch, closed, dropped := q.queue, q.closed, q.dropped
		q.queue, q.dropped = nil, 0
		q.mu.Unlock()
		if dropped > 0 {
			q.log.Error("node facts dropped: the publisher could not keep up", "dropped", dropped, "limit", q.limit)
		}
		if len(batch) > 0 {
			// One Publish per flush (a signed batch, or several when one NATS message cannot hold
			// them); publish returns once NATS or the spool holds them.
			if err := q.publish(context.WithoutCancel(ctx), batch...); err != nil {
				q.log.Error("node facts not published", "facts", len(batch), "error", err)
			}
			continue
		}
		if closed {
			return
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			q.mu.Lock()
			q.closed = true
			q.mu.Unlock()
		}
	}
}

// Stop publishes what is queued and stops. Safe to call twice.
func (q *factQueue) Stop() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	q.life.Stop()
}

// Correlated implements node.CorrelatedSink: the fact carries the correlation id of its cause.
func (q *factQueue) Correlated(e domain.Event, correlationID string) {
	q.add(nodebus.Fact{Event: e, CorrelationID: correlationID})
}

// AccessCallsRecorded implements node.CallSink: a batch of call records is one fact.
func (q *factQueue) AccessCallsRecorded(e domain.AccessCallsRecorded) { q.push(e) }
