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

// FactLinger is how long the fact queue waits after a publication before the next, unless
// FactLingerFull facts are queued by then: facts that come together (agents returning after a
// node restart, a few a millisecond) go as a few large signed batches, not thousands of small
// ones that the control plane's ingester appends one transaction each (`bench sessions`: 10,000
// agents back over 8 s made 6,000 publications, listed at 520/s). A lone fact waits not at all.
const (
	FactLinger     = 50 * time.Millisecond
	FactLingerFull = 2000
)

// FactQueue is the node's Sink: it must not block the data path, so facts are queued in memory
// and published (to NATS, or the disk spool while NATS is away) by one goroutine, in order, at
// most one publication per FactLinger while fewer than FactLingerFull wait.
type FactQueue struct {
	publish func(ctx context.Context, facts ...nodebus.Fact) error
	log     *slog.Logger
	life    lifecycle.Lifecycle
	limit   int
	linger  time.Duration

	mu      sync.Mutex
	queue   []nodebus.Fact
	dropped int
	closed  bool
	wake    chan struct{}
}

// NewFactQueue makes a node's fact queue publishing through publish (a nodebus.Publisher's
// Publish); `bench sessions` publishes through it as a node does.
func NewFactQueue(publish func(ctx context.Context, facts ...nodebus.Fact) error, log *slog.Logger) *FactQueue {
	return &FactQueue{publish: publish, log: log, limit: maxQueuedFacts, linger: FactLinger, wake: make(chan struct{}, 1)}
}

// SetLinger sets the wait between publications (FactLinger; 0: none), before Start: `bench
// sessions` measures the queue without it as its baseline.
func (q *FactQueue) SetLinger(d time.Duration) { q.linger = d }

// Start publishes queued facts until Stop.
func (q *FactQueue) Start(ctx context.Context) error {
	return q.life.Start(ctx, "fact queue", func(context.Context) error {
		q.life.Go(q.run)
		return nil
	})
}

func (q *FactQueue) push(e domain.Event) { q.add(nodebus.Fact{Event: e}) }

func (q *FactQueue) add(f nodebus.Fact) {
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

func (q *FactQueue) AgentConnected(e domain.AgentConnected)       { q.push(e) }
func (q *FactQueue) AgentDisconnected(e domain.AgentDisconnected) { q.push(e) }
func (q *FactQueue) AgentReplaced(e domain.AgentReplaced)         { q.push(e) }
func (q *FactQueue) UsageRecorded(e domain.UsageRecorded)         { q.push(e) }
func (q *FactQueue) AgentReported(e domain.Event)                 { q.push(e) }

func (q *FactQueue) run(ctx context.Context) {
	var last time.Time // the last publication's start
	for {
		q.lingerAfter(ctx, last)
		q.mu.Lock()
		batch, closed, dropped := q.queue, q.closed, q.dropped
		q.queue, q.dropped = nil, 0
		q.mu.Unlock()
		if dropped > 0 {
			q.log.Error("node facts dropped: the publisher could not keep up", "dropped", dropped, "limit", q.limit)
		}
		if len(batch) > 0 {
			last = time.Now()
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

// lingerAfter waits out FactLinger from the publication at last, while fewer than
// FactLingerFull facts are queued, the queue is open and ctx lasts.
func (q *FactQueue) lingerAfter(ctx context.Context, last time.Time) {
	wait := q.linger - time.Since(last)
	if last.IsZero() || wait <= 0 {
		return
	}
	q.mu.Lock()
	busy := q.closed || len(q.queue) >= FactLingerFull
	q.mu.Unlock()
	if busy {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Stop publishes what is queued and stops. Safe to call twice.
func (q *FactQueue) Stop() {
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
func (q *FactQueue) Correlated(e domain.Event, correlationID string) {
	q.add(nodebus.Fact{Event: e, CorrelationID: correlationID})
}

// AccessCallsRecorded implements node.CallSink: a batch of call records is one fact.
func (q *FactQueue) AccessCallsRecorded(e domain.AccessCallsRecorded) { q.push(e) }
