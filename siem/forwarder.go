package siem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// Transport delivers one batch of messages and returns nil only once the receiver acknowledged
// all of them (SyslogTLS is one).
type Transport interface {
	Deliver(ctx context.Context, msgs [][]byte) error
}

// ForwarderConfig describes one sink.
type ForwarderConfig struct {
	// SinkID names the sink's cursor.
	SinkID string
	// Store is the log; Pool holds the cursor (table siem_cursors).
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	// Format turns an entry into the message the transport sends (see SyslogFormat).
	Format func(Entry) ([]byte, error)
	// Filter, when set, says which records the sink forwards (SinkFilter.Match); the others
	// take no sequence number.
	Filter func(*eventstore.Record) bool
	// Redact, when set, hashes client addresses in every message.
	Redact    *Redactor
	Transport Transport
	// BatchSize is the most records per delivery (default 500).
	BatchSize int
	// MinBackoff and MaxBackoff bound the wait between failed deliveries, doubled each time,
	// with jitter (defaults 200ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Metrics, when set, receives the sink's delivered, failed, lag and refused figures.
	Metrics *Metrics
}

// Validate reports every problem at once.
func (c ForwarderConfig) Validate() error {
	var errs []error
	if c.SinkID == "" {
		errs = append(errs, errors.New("forwarder: a sink id is required"))
	}
	if c.Store == nil || c.Pool == nil {
		errs = append(errs, errors.New("forwarder: a store and a pool are required"))
	}
	if c.Format == nil || c.Transport == nil {
		errs = append(errs, errors.New("forwarder: a format and a transport are required"))
	}
	if c.BatchSize < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff) {
		errs = append(errs, errors.New("forwarder: batch size and backoffs must not be negative, and the minimum backoff not above the maximum"))
	}
	return errors.Join(errs...)
}

// SyslogFormat is the Format of a syslog sink: body (OCSF, CEF or raw) in an RFC 5424 message.
func SyslogFormat(c SyslogConfig, body func(Entry) ([]byte, error)) func(Entry) ([]byte, error) {
	return func(e Entry) ([]byte, error) {
		b, err := body(e)
		if err != nil {
			return nil, err
		}
		sev, err := SeverityID(e)
		if err != nil {
			return nil, err
		}
		return Syslog(c, e, sev, b)
	}
}

// ForwarderStatus is what a sink has done.
type ForwarderStatus struct {
	Position  uint64 // the next log position to forward
	Seq       uint64 // the last sequence number delivered
	Delivered uint64 // messages delivered since start
	Retries   uint64 // failed deliveries since start
	LastError string
	// Refused: the receiver refuses the current batch for good (ErrRefused); the sink retries
	// it, and someone must act.
	Refused bool
}

// Forwarder forwards the log to one sink, at least once: it reads from its cursor, delivers a
// batch, and moves the cursor only after the transport said the receiver acknowledged it. A
// failed delivery is retried (the same messages, the same sequence numbers) after a backoff
// with jitter; a record it cannot format stops it there, retried the same way, never skipped.
type Forwarder struct {
	cfg ForwarderConfig
	lc  lifecycle.Lifecycle

	mu     sync.Mutex
	status ForwarderStatus
}

// NewForwarder checks cfg and fills in the defaults.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = cfg.Logger.With("component", "siem", "sink_id", cfg.SinkID)
	return &Forwarder{cfg: cfg}, nil
}

// Start loads the cursor and starts forwarding.
func (f *Forwarder) Start(ctx context.Context) error {
	return f.lc.Start(ctx, "siem forwarder "+f.cfg.SinkID, func(runCtx context.Context) error {
		pos, seq, err := f.loadCursor(ctx)
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.status.Position, f.status.Seq = pos, seq
		f.mu.Unlock()
		f.lc.Go(func(ctx context.Context) { f.run(ctx, pos, seq) })
		return nil
	})
}

// Stop stops forwarding and waits for it; what was delivered but not yet recorded is sent
// again by the next start.
func (f *Forwarder) Stop() { f.lc.Stop() }

// Status is a snapshot of what the sink has done.
func (f *Forwarder) Status() ForwarderStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *Forwarder) loadCursor(ctx context.Context) (pos, seq uint64, err error) {
	var p, s int64
	err = f.cfg.Pool.QueryRow(ctx, `SELECT position, seq FROM siem_cursors WHERE sink_id = $1`, f.cfg.SinkID).Scan(&p, &s)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("siem sink %s: load cursor: %w", f.cfg.SinkID, err)
	}
	return uint64(p), uint64(s), nil
}

func (f *Forwarder) saveCursor(ctx context.Context, pos, seq uint64) error {
	_, err := f.cfg.Pool.Exec(ctx, `INSERT INTO siem_cursors (sink_id, position, seq) VALUES ($1, $2, $3)
		ON CONFLICT (sink_id) DO UPDATE SET position = excluded.position, seq = excluded.seq, updated_at = now()`,
		f.cfg.SinkID, int64(pos), int64(seq))
	if err != nil {
		return fmt.Errorf("siem sink %s: save cursor: %w", f.cfg.SinkID, err)
	}
	return nil
}

// batch is a run of formatted messages ready to deliver: the records up to (not including)
// position next, the last sequence number among them being last.
type batch struct {
	msgs       [][]byte
	next, last uint64
	oldest     time.Time // when its first record was recorded
}

// backoff is a failure counter's wait: doubling from MinBackoff to MaxBackoff, with jitter.
type backoff struct {
	f    *Forwarder
	wait time.Duration
}

// fail records err and waits; false when ctx ended meanwhile.
func (b *backoff) fail(ctx context.Context, pos uint64, err error) bool {
	f := b.f
	if b.wait == 0 {
		b.wait = f.cfg.MinBackoff
	}
	f.mu.Lock()
	f.status.Retries++
	f.status.LastError = err.Error()
	f.status.Refused = errors.Is(err, ErrRefused)
	f.mu.Unlock()
	f.cfg.Metrics.failed(f.cfg.SinkID, err)
	if errors.Is(err, ErrRefused) {
		f.cfg.Logger.Error("siem receiver refuses a batch; retrying it, never skipping it", "position", pos, "error", err, "retry_in", b.wait)
	} else {
		f.cfg.Logger.Warn("siem forwarding failed; retrying", "position", pos, "error", err, "retry_in", b.wait)
	}
	// Jitter over the upper half: sinks that failed together do not retry together.
	wait := b.wait/2 + rand.N(b.wait/2+1)
	b.wait = min(b.wait*2, f.cfg.MaxBackoff)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.wait = b.f.cfg.MinBackoff }

// run forwards from pos, the last sequence number delivered being seq. A producer reads and
// formats the next batch while the previous one is delivered.
func (f *Forwarder) run(ctx context.Context, pos, seq uint64) {
	ctx, cancel := context.WithCancel(ctx)
	batches := make(chan batch, 1)
	var wg sync.WaitGroup
	wg.Go(func() { f.produce(ctx, pos, seq, batches) })
	defer wg.Wait()
	defer cancel()
	b := backoff{f: f}
	for {
		var bt batch
		select {
		case <-ctx.Done():
			return
		case bt = <-batches:
		}
		f.cfg.Metrics.lag(f.cfg.SinkID, max(f.cfg.Store.KnownHead(), bt.next)-pos, max(time.Since(bt.oldest).Seconds(), 0))
		for len(bt.msgs) > 0 {
			err := f.cfg.Transport.Deliver(ctx, bt.msgs)
			if err == nil {
				break
			}
			if !b.fail(ctx, pos, err) {
				return
			}
		}
		// Recorded after the receiver acknowledged: a crash here repeats the batch, never skips it.
		for {
			err := f.saveCursor(ctx, bt.next, bt.last)
			if err == nil {
				break
			}
			if ctx.Err() != nil || !b.fail(ctx, pos, err) {
				return
			}
		}
		b.reset()
		pos = bt.next
		f.cfg.Metrics.progress(f.cfg.SinkID, len(bt.msgs))
		if f.cfg.Store.KnownHead() <= pos {
			f.cfg.Metrics.lag(f.cfg.SinkID, 0, 0)
		}
		f.mu.Lock()
		f.status.Position, f.status.Seq = bt.next, bt.last
		f.status.Delivered += uint64(len(bt.msgs))
		f.status.LastError, f.status.Refused = "", false
		f.mu.Unlock()
	}
}

// produce reads the log from pos and sends formatted batches, numbering from seq+1. A record it
// cannot format ends a batch before it and is tried again after a backoff, never skipped.
func (f *Forwarder) produce(ctx context.Context, pos, seq uint64, out chan<- batch) {
	b := backoff{f: f}
	for ctx.Err() == nil {
		recs, err := f.cfg.Store.ReadAll(ctx, pos, f.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil || !b.fail(ctx, pos, fmt.Errorf("read the log: %w", err)) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			if err := f.cfg.Store.WaitForPosition(ctx, pos); err != nil {
				return
			}
			continue
		}
		bt := batch{msgs: make([][]byte, 0, len(recs)), next: pos, last: seq, oldest: recs[0].RecordedAt}
		var ferr error
		for i := range recs {
			rec := &recs[i]
			if f.cfg.Filter == nil || f.cfg.Filter(rec) {
				m, err := f.cfg.Format(Entry{Record: rec, Seq: bt.last + 1, Redact: f.cfg.Redact})
				if err != nil {
					ferr = fmt.Errorf("format record %d: %w", rec.Position, err)
					break
				}
				bt.msgs = append(bt.msgs, m)
				bt.last++
			}
			bt.next = rec.Position + 1
		}
		if bt.next > pos {
			select {
			case out <- bt:
			case <-ctx.Done():
				return
			}
			pos, seq = bt.next, bt.last
		}
		if ferr != nil {
			// Stuck on this record: never skipped; an operator (or a newer build) moves it on.
			if !b.fail(ctx, pos, ferr) {
				return
			}
			continue
		}
		b.reset()
	}
}
