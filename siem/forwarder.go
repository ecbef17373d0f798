package siem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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

// Sender is a Transport that also delivers in steps, so that the forwarder makes ready the
// next batch's delivery while the receiver confirms the last (SyslogTLS: connects and
// completes the handshake), then hands the receiver that batch as soon as it confirmed the
// last: batches still reach the receiver one after another, in order.
type Sender interface {
	Transport
	// Open makes ready to deliver one batch; ctx ends the delivery wherever it is.
	Open(ctx context.Context) (Delivery, error)
}

// Delivery is one batch's delivery, opened by a Sender: Send hands it the batch, Ack returns
// nil only once the receiver acknowledged all of it (for that batch alone) and ends the
// delivery. Close abandons it; it may follow Ack.
type Delivery interface {
	Send(msgs [][]byte) error
	Ack() error
	Close()
}

// A Framer is a Sender that frames each message on the wire with a prefix (octet counting),
// which a forwarder formatting into shared buffers (AppendFormat) writes for it before each
// message: a batch's framed messages then go out as they lie in those buffers (FramedDelivery),
// not copied once more into a write buffer.
type Framer interface {
	// AppendFrame appends the frame of a message of n bytes, at most MaxFrame bytes.
	AppendFrame(dst []byte, n int) []byte
}

// MaxFrame bounds a Framer's frame.
const MaxFrame = 16

// A FramedDelivery is a Delivery of a Framer that also takes spans of framed messages.
type FramedDelivery interface {
	// SendFramed writes spans, each of whole messages, each message after its frame.
	SendFramed(spans [][]byte) error
}

// DefaultBatchesPerDelivery is ForwarderConfig.BatchesPerDelivery's default.
const DefaultBatchesPerDelivery = 4

// ForwarderConfig describes one sink.
type ForwarderConfig struct {
	// SinkID names the sink's cursor.
	SinkID string
	// Store is the log; Pool holds the cursor (table siem_cursors).
	Store *eventstore.Store
	Pool  *pgxpool.Pool
	// Format turns an entry into the message the transport sends (see SyslogFormat).
	Format func(Entry) ([]byte, error)
	// AppendFormat, when set, is used instead of Format: it appends the message to dst, and a
	// batch's messages share a few large buffers (AppendSyslogOCSF).
	AppendFormat func(dst []byte, e Entry) ([]byte, error)
	// Filter, when set, says which records the sink forwards (SinkFilter.Match); the others
	// take no sequence number.
	Filter func(*eventstore.Record) bool
	// Redact, when set, hashes client addresses in every message.
	Redact    *Redactor
	Transport Transport
	// Unsigned: Format reads no PrevHash, Signature or SignatureProof (OCSF, CEF), so the sink
	// reads the log without them (eventstore.ReadAllUnsigned): fewer bytes from the database.
	Unsigned bool
	// BatchSize is the most records per batch (default 500): a page read, a cursor step, and
	// with a transport that is no Sender (HTTPS), a delivery.
	BatchSize int
	// BatchesPerDelivery is the most batches one delivery of a Sender (syslog) carries: the
	// batches formatted while the receiver reads go on the same connection, acknowledged
	// together (default 4).
	BatchesPerDelivery int
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
	if (c.Format == nil && c.AppendFormat == nil) || c.Transport == nil {
		errs = append(errs, errors.New("forwarder: a format and a transport are required"))
	}
	if c.BatchSize < 0 || c.BatchesPerDelivery < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff) {
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

// ForwarderStatus is what a sink has done. The forwarder also records it beside its cursor
// (siem_cursors), so that whoever reads the database sees it.
type ForwarderStatus struct {
	Position  uint64 // the next log position to forward
	Seq       uint64 // the last sequence number delivered
	Delivered uint64 // messages delivered, over the sink's life
	Retries   uint64 // failed deliveries, over the sink's life
	LastError string
	// Refused: the receiver refuses the current batch for good (ErrRefused); the sink retries
	// it, and someone must act.
	Refused bool
	// StuckPosition, when not 0, is the one record the receiver refuses: the sink delivers
	// every record before it, then retries it until it is accepted or an operator skips it.
	StuckPosition uint64
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
	// skipped is replaced whole by Skip, never changed in place: read without the lock, as
	// every record of every batch asks it.
	skipped atomic.Pointer[map[uint64]bool]
	// largest is the longest message yet (AppendFormat): a buffer with less room left is
	// replaced before a message is appended.
	largest atomic.Int64
	// framer, when the transport frames its messages and the format appends: format writes
	// each message's frame before it (batch.spans).
	framer Framer
}

// The memory a forwarder formats into and reads into is kept, once its batch is through
// (acknowledged, or given up with the run), for the next batch of any sink in the process: a
// sink that starts (or restarts with new settings) takes what others, or its own last run,
// left, rather than growing the heap by a batch's worth of fresh pages, each faulted in.
var (
	formatBuffers sync.Pool // *[]byte
	sliceSets     sync.Pool // *batchSlices
	readPages     sync.Pool // *eventstore.Page
)

// NewForwarder checks cfg and fills in the defaults.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 500
	}
	if cfg.BatchesPerDelivery == 0 {
		cfg.BatchesPerDelivery = DefaultBatchesPerDelivery
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
	f := &Forwarder{cfg: cfg}
	if cfg.AppendFormat != nil {
		f.framer, _ = cfg.Transport.(Framer)
	}
	f.largest.Store(1024)
	return f, nil
}

// Start loads the cursor and starts forwarding.
func (f *Forwarder) Start(ctx context.Context) error {
	return f.lc.Start(ctx, "siem forwarder "+f.cfg.SinkID, func(runCtx context.Context) error {
		st, err := f.loadCursor(ctx)
		if err != nil {
			return err
		}
		pos, seq := st.Position, st.Seq
		f.mu.Lock()
		f.status = st
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

// Skip sets the positions an operator skipped (siem.delivery_skipped): the forwarder gives up
// those records. Each keeps its sequence number, so the receiver sees the gap.
func (f *Forwarder) Skip(positions []uint64) {
	m := make(map[uint64]bool, len(positions))
	for _, p := range positions {
		m[p] = true
	}
	f.skipped.Store(&m)
}

func (f *Forwarder) isSkipped(pos uint64) bool {
	m := f.skipped.Load()
	return m != nil && (*m)[pos]
}

func (f *Forwarder) loadCursor(ctx context.Context) (ForwarderStatus, error) {
	var p, s, delivered, retries int64
	var stuck *int64
	var st ForwarderStatus
	err := f.cfg.Pool.QueryRow(ctx, `SELECT position, seq, delivered, retries, COALESCE(last_error, ''), refused, stuck_position
		FROM siem_cursors WHERE sink_id = $1`, f.cfg.SinkID).Scan(&p, &s, &delivered, &retries, &st.LastError, &st.Refused, &stuck)
	if errors.Is(err, pgx.ErrNoRows) {
		return ForwarderStatus{}, nil
	}
	if err != nil {
		return ForwarderStatus{}, fmt.Errorf("siem sink %s: load cursor: %w", f.cfg.SinkID, err)
	}
	st.Position, st.Seq, st.Delivered, st.Retries = uint64(p), uint64(s), uint64(delivered), uint64(retries)
	if stuck != nil {
		st.StuckPosition = uint64(*stuck)
	}
	return st, nil
}

// saveCursor records that everything before pos was delivered, seq being the last sequence
// number used, n messages more than before; the failure of the moment is over.
func (f *Forwarder) saveCursor(ctx context.Context, pos, seq uint64, n int) error {
	_, err := f.cfg.Pool.Exec(ctx, `INSERT INTO siem_cursors (sink_id, position, seq, delivered) VALUES ($1, $2, $3, $4)
		ON CONFLICT (sink_id) DO UPDATE SET position = excluded.position, seq = excluded.seq,
			delivered = siem_cursors.delivered + excluded.delivered, refused = false, stuck_position = NULL, updated_at = now()`,
		f.cfg.SinkID, int64(pos), int64(seq), int64(n))
	if err != nil {
		return fmt.Errorf("siem sink %s: save cursor: %w", f.cfg.SinkID, err)
	}
	f.cfg.Metrics.progress(f.cfg.SinkID, n)
	f.mu.Lock()
	f.status.Position, f.status.Seq = pos, seq
	f.status.Delivered += uint64(n)
	f.status.LastError, f.status.Refused, f.status.StuckPosition = "", false, 0
	f.mu.Unlock()
	return nil
}

// saveFailure records a failed delivery beside the cursor. Best effort: the database may be
// what failed.
func (f *Forwarder) saveFailure(ctx context.Context, st ForwarderStatus) {
	var stuck *int64
	if st.StuckPosition != 0 {
		p := int64(st.StuckPosition)
		stuck = &p
	}
	_, err := f.cfg.Pool.Exec(ctx, `INSERT INTO siem_cursors (sink_id, position, seq, retries, last_error, last_error_at, refused, stuck_position)
		VALUES ($1, $2, $3, 1, $4, now(), $5, $6)
		ON CONFLICT (sink_id) DO UPDATE SET retries = siem_cursors.retries + 1, last_error = excluded.last_error,
			last_error_at = excluded.last_error_at, refused = excluded.refused, stuck_position = excluded.stuck_position`,
		f.cfg.SinkID, int64(st.Position), int64(st.Seq), st.LastError, st.Refused, stuck)
	if err != nil && ctx.Err() == nil {
		f.cfg.Logger.Warn("siem sink: could not record the failure beside the cursor", "error", err)
	}
}

// batch is a run of formatted messages ready to deliver: the records from position from up to
// (not including) position next, the last sequence number among them being last. pos and seq
// are each message's record position and sequence number.
type batch struct {
	msgs [][]byte
	bufs [][]byte // the format buffers msgs are in (AppendFormat), for release
	// spans, with a Framer, are the messages framed, as they lie in the format buffers:
	// spanFrom is where the one still growing starts in the current buffer.
	spans            [][]byte
	spanFrom         int
	pos, seq         []uint64
	from, next, last uint64
	oldest           time.Time // when its first record was recorded
}

// backoff is a failure counter's wait: doubling from MinBackoff to MaxBackoff, with jitter.
type backoff struct {
	f    *Forwarder
	wait time.Duration
}

// fail records err and waits; false when ctx ended meanwhile. stuck, when not 0, is the one
// record the receiver refuses.
func (b *backoff) fail(ctx context.Context, pos uint64, err error, stuck uint64) bool {
	f := b.f
	if b.wait == 0 {
		b.wait = f.cfg.MinBackoff
	}
	f.mu.Lock()
	f.status.Retries++
	f.status.LastError = err.Error()
	f.status.Refused = errors.Is(err, ErrRefused)
	f.status.StuckPosition = stuck
	st := f.status
	f.mu.Unlock()
	f.saveFailure(ctx, st)
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

// run forwards from pos, the last sequence number delivered being seq, in four stages, each its
// own goroutine and each at most one batch ahead of the next: read reads pages of the log,
// produce formats them into batches, send delivers them, and run itself records the cursor
// after each batch the receiver acknowledged, in order, and retries a failed one. So while the
// receiver reads a batch, the database serves the next page, the batch after is formatted,
// the next delivery is opened (with a Sender) and the cursor of the batch before is recorded.
// Batches reach the receiver one after another, in order: the next is sent once the receiver
// confirmed the last, and after a failure once run has delivered the failed batch.
func (f *Forwarder) run(ctx context.Context, pos, seq uint64) {
	ctx, cancel := context.WithCancel(ctx)
	pages := make(chan *eventstore.Page, 1)
	batches := make(chan batch, 1)
	sent := make(chan sentBatch, 1)
	turn := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { f.read(ctx, pos, pages) })
	wg.Go(func() { f.produce(ctx, pos, seq, pages, batches) })
	wg.Go(func() { f.send(ctx, batches, turn, sent) })
	defer wg.Wait()
	defer cancel()
	b := backoff{f: f}
	for {
		var sb sentBatch
		select {
		case <-ctx.Done():
			return
		case sb = <-sent:
		}
		bt, err := sb.batch, sb.err
		delivered := len(bt.msgs)
		for err != nil {
			if errors.Is(err, ErrRefused) {
				// Which record does it refuse? One at a time from here, after the backoff.
				if !b.fail(ctx, pos, err, 0) || !f.deliverEach(ctx, &bt, &b) {
					return
				}
				delivered = 0
				break
			}
			if !b.fail(ctx, pos, err, 0) {
				return
			}
			// Each try, so that a sink stuck retrying shows its lag growing.
			f.cfg.Metrics.lag(f.cfg.SinkID, max(f.cfg.Store.KnownHead(), bt.next)-pos, max(time.Since(bt.oldest).Seconds(), 0))
			err = f.cfg.Transport.Deliver(ctx, bt.msgs)
		}
		if sb.err != nil {
			turn <- struct{}{} // the failed batch is through: send may go on
		}
		f.release(&bt)
		// Recorded after the receiver acknowledged: a crash here repeats the batch, never skips it.
		if !f.save(ctx, &b, pos, bt.next, bt.last, delivered) {
			return
		}
		b.reset()
		pos = bt.next
		if f.cfg.Store.KnownHead() <= pos {
			f.cfg.Metrics.lag(f.cfg.SinkID, 0, 0)
		}
	}
}

// sentBatch is a batch send tried to deliver: err is nil when the receiver acknowledged it.
type sentBatch struct {
	batch
	err error
}

// send delivers the batches, one after another, and passes each on with the outcome. After a
// failure it waits for the turn: run retries the batch, and the next follows it.
func (f *Forwarder) send(ctx context.Context, in <-chan batch, turn <-chan struct{}, out chan<- sentBatch) {
	sender, _ := f.cfg.Transport.(Sender)
	var next Delivery // opened ahead
	defer func() {
		if next != nil {
			next.Close()
		}
	}()
	for {
		var first batch
		select {
		case <-ctx.Done():
			return
		case first = <-in:
		}
		f.lagAt(first)
		group := []batch{first}
		var err error
		switch {
		case len(first.msgs) == 0:
			// Only skipped or filtered records: nothing to send, the cursor moves over them.
		case sender == nil:
			err = f.cfg.Transport.Deliver(ctx, first.msgs)
		default:
			group, err = f.deliverSteps(ctx, sender, &next, first, in)
		}
		for _, bt := range group {
			select {
			case out <- sentBatch{batch: bt, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				select {
				case <-turn:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// lagAt reports the sink's lag as of bt, the batch about to be delivered.
func (f *Forwarder) lagAt(bt batch) {
	f.cfg.Metrics.lag(f.cfg.SinkID, max(f.cfg.Store.KnownHead(), bt.next)-bt.from, max(time.Since(bt.oldest).Seconds(), 0))
}

// deliverSteps delivers first through sender with *next, the delivery opened ahead (or nil),
// and on the same delivery the batches that are ready in in as each is written, up to
// BatchesPerDelivery: the receiver reads on while they are formatted. It returns the batches
// delivered together and the outcome, theirs alike. While the receiver reads the last of them
// it opens the next delivery into *next, if more is waiting (a connection left idle might be
// closed by the receiver).
func (f *Forwarder) deliverSteps(ctx context.Context, sender Sender, next *Delivery, first batch, in <-chan batch) ([]batch, error) {
	group := []batch{first}
	d := *next
	*next = nil
	ahead := d != nil
	if d == nil {
		var err error
		if d, err = sender.Open(ctx); err != nil {
			return group, err
		}
	}
	err := sendBatch(d, first)
	if ahead && errors.Is(err, errClosedBeforeSend) {
		// The receiver closed the connection opened ahead before it was used: nothing was
		// sent on it, so a new one is opened for the batch.
		d.Close()
		if d, err = sender.Open(ctx); err == nil {
			err = sendBatch(d, first)
		}
	}
more:
	for err == nil && len(group) < f.cfg.BatchesPerDelivery {
		select {
		case bt := <-in:
			f.lagAt(bt)
			group = append(group, bt)
			err = sendBatch(d, bt)
		default:
			break more
		}
	}
	if err != nil {
		if d != nil {
			d.Close()
		}
		return group, err
	}
	if last := group[len(group)-1]; len(in) > 0 || f.cfg.Store.KnownHead() > last.next {
		*next, _ = sender.Open(ctx) // a failure shows when the next batch opens again
	}
	return group, d.Ack()
}

// sendBatch hands bt to d: its framed spans where d takes them, else its messages.
func sendBatch(d Delivery, bt batch) error {
	if fd, ok := d.(FramedDelivery); ok && bt.spans != nil {
		return fd.SendFramed(bt.spans)
	}
	return d.Send(bt.msgs)
}

// save records the cursor, retrying until it is stored; false when ctx ended.
func (f *Forwarder) save(ctx context.Context, b *backoff, from, pos, seq uint64, n int) bool {
	for {
		err := f.saveCursor(ctx, pos, seq, n)
		if err == nil {
			return true
		}
		if ctx.Err() != nil || !b.fail(ctx, from, err, 0) {
			return false
		}
	}
}

// deliverEach delivers a refused batch one message at a time, recording the cursor after each,
// so that the record the receiver refuses is found and every record before it delivered. That
// record is retried with backoff until the receiver takes it or an operator skips it
// (SkipSIEMDelivery); it is never dropped otherwise. False when ctx ended.
func (f *Forwarder) deliverEach(ctx context.Context, bt *batch, b *backoff) bool {
	for i := range bt.msgs {
		for {
			if f.isSkipped(bt.pos[i]) {
				f.cfg.Logger.Warn("siem sink skips a record, as an operator decided", "position", bt.pos[i], "seq", bt.seq[i])
				if !f.save(ctx, b, bt.pos[i], bt.pos[i]+1, bt.seq[i], 0) {
					return false
				}
				break
			}
			err := f.cfg.Transport.Deliver(ctx, bt.msgs[i:i+1])
			if err == nil {
				if !f.save(ctx, b, bt.pos[i], bt.pos[i]+1, bt.seq[i], 1) {
					return false
				}
				b.reset()
				break
			}
			stuck := uint64(0)
			if errors.Is(err, ErrRefused) {
				stuck = bt.pos[i]
			}
			if !b.fail(ctx, bt.pos[i], err, stuck) {
				return false
			}
		}
	}
	return true
}

// read reads the log from pos, a page of BatchSize records at a time, waiting at the head. With
// two pages or more behind the head it reads two pages at once (the log's positions have no
// gaps, so the second starts where the first ends): while this process scans one, the
// database serves the other. It reads into the pages produce gave back (readPages), when there
// are.
func (f *Forwarder) read(ctx context.Context, pos uint64, out chan<- *eventstore.Page) {
	b := backoff{f: f}
	read := f.cfg.Store.ReadAllInto
	if f.cfg.Unsigned {
		read = f.cfg.Store.ReadAllUnsignedInto
	}
	size := uint64(f.cfg.BatchSize)
	send := func(p *eventstore.Page) bool {
		select {
		case out <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	page := func() *eventstore.Page {
		if p, ok := readPages.Get().(*eventstore.Page); ok {
			return p
		}
		return new(eventstore.Page)
	}
	cur, next := page(), page()
	// What read holds when the run ends is not formatted yet: nothing refers to it.
	defer func() {
		readPages.Put(cur)
		readPages.Put(next)
	}()
	for ctx.Err() == nil {
		next.Records = next.Records[:0]
		var nextErr error
		var wg sync.WaitGroup
		if f.cfg.Store.KnownHead() >= pos+2*size {
			wg.Go(func() { nextErr = read(ctx, next, pos+size, f.cfg.BatchSize) })
		}
		err := read(ctx, cur, pos, f.cfg.BatchSize)
		wg.Wait()
		if err == nil {
			err = nextErr
		}
		if err != nil {
			if ctx.Err() != nil || !b.fail(ctx, pos, fmt.Errorf("read the log: %w", err), 0) {
				return
			}
			continue
		}
		b.reset()
		recs := cur.Records
		if len(recs) == 0 {
			if err := f.cfg.Store.WaitForPosition(ctx, pos); err != nil {
				return
			}
			continue
		}
		if !send(cur) {
			return
		}
		pos = recs[len(recs)-1].Position + 1
		cur = page()
		// The second page is taken only if it starts where the first ended.
		if len(next.Records) > 0 && next.Records[0].Position == pos {
			if !send(next) {
				return
			}
			pos = next.Records[len(next.Records)-1].Position + 1
			next = page()
		}
	}
}

// produce formats the pages read from pos into batches, numbering from seq+1. A record it cannot
// format ends a batch before it and is tried again after a backoff, never skipped. A page
// formatted goes back to read (readPages) when the format copies what it needs (AppendFormat).
func (f *Forwarder) produce(ctx context.Context, pos, seq uint64, in <-chan *eventstore.Page, out chan<- batch) {
	b := backoff{f: f}
	for {
		var page *eventstore.Page
		select {
		case <-ctx.Done():
			return
		case page = <-in:
		}
		recs := page.Records
		for len(recs) > 0 {
			bt, n, err := f.format(recs, pos, seq)
			if n > 0 {
				select {
				case out <- bt:
				case <-ctx.Done():
					return
				}
				pos, seq, recs = bt.next, bt.last, recs[n:]
			}
			if err != nil {
				// Stuck on this record: never skipped; an operator (or a newer build) moves it on.
				if !b.fail(ctx, pos, err, 0) {
					return
				}
				continue
			}
			b.reset()
		}
		if f.cfg.AppendFormat != nil {
			readPages.Put(page)
		}
	}
}

// format turns recs into a batch, the sink's sequence continuing from seq, and says how many
// records it covers: all of them, or those before the first it cannot format (err).
func (f *Forwarder) format(recs []eventstore.Record, pos, seq uint64) (batch, int, error) {
	sl, ok := sliceSets.Get().(*batchSlices)
	if !ok || cap(sl.msgs) < len(recs) || cap(sl.pos) < len(recs) || cap(sl.seq) < len(recs) {
		sl = &batchSlices{msgs: make([][]byte, 0, len(recs)), pos: make([]uint64, 0, len(recs)), seq: make([]uint64, 0, len(recs))}
	}
	bt := batch{msgs: sl.msgs[:0], pos: sl.pos[:0], seq: sl.seq[:0], from: pos, next: pos, last: seq, oldest: recs[0].RecordedAt}
	var buf []byte // AppendFormat's: the messages are its parts
	for i := range recs {
		rec := &recs[i]
		if f.cfg.Filter == nil || f.cfg.Filter(rec) {
			if f.isSkipped(rec.Position) {
				// An operator gave it up: it keeps its number, so the receiver sees the gap.
				bt.last++
				bt.next = rec.Position + 1
				continue
			}
			e := Entry{Record: rec, Seq: bt.last + 1, Redact: f.cfg.Redact}
			var m []byte
			var err error
			if f.cfg.AppendFormat != nil {
				m, buf, err = f.appendFormat(&bt, buf, e)
			} else {
				m, err = f.cfg.Format(e)
			}
			if err != nil {
				if f.framer != nil {
					bt.closeSpan(buf)
				}
				return bt, i, fmt.Errorf("format record %d: %w", rec.Position, err)
			}
			bt.last++
			bt.msgs, bt.pos, bt.seq = append(bt.msgs, m), append(bt.pos, rec.Position), append(bt.seq, bt.last)
		}
		bt.next = rec.Position + 1
	}
	if f.framer != nil {
		bt.closeSpan(buf)
	}
	return bt, len(recs), nil
}

// formatBuffer is the size of the buffers a batch's messages are appended to: the largest the
// allocator keeps in its size classes (larger ones come fresh from the heap, and writing into
// pages the runtime handed back to the system costs a page fault each).
const formatBuffer = 32 << 10

// appendFormat appends e's message to buf and returns it (capped: appending to it never writes
// into the next) and buf. A message that does not fit in what is left of buf starts a new one,
// taken from the released buffers when one is large enough and listed in bt.bufs; the
// messages before keep the old. With a Framer the message's frame goes before it in buf, and
// the framed messages of one buffer make one span.
func (f *Forwarder) appendFormat(bt *batch, buf []byte, e Entry) ([]byte, []byte, error) {
	reserve := 0
	if f.framer != nil {
		reserve = MaxFrame
	}
	if room := int64(cap(buf) - len(buf)); room < f.largest.Load()+int64(reserve) {
		if reserve > 0 {
			bt.closeSpan(buf)
		}
		size := max(formatBuffer, 4*int(f.largest.Load()))
		buf = nil
		if p, ok := formatBuffers.Get().(*[]byte); ok && cap(*p) >= size {
			buf = (*p)[:0]
		}
		if buf == nil {
			buf = make([]byte, 0, size)
		}
		bt.bufs = append(bt.bufs, buf)
	}
	start := len(buf)
	// The frame's room first: the message's length is known once it is written.
	out, err := f.cfg.AppendFormat(buf[:start+reserve], e)
	if err != nil {
		return nil, buf, err
	}
	body := start + reserve
	if reserve > 0 {
		var frame [MaxFrame]byte
		fr := f.framer.AppendFrame(frame[:0], len(out)-body)
		if len(fr) > MaxFrame {
			return nil, buf, fmt.Errorf("siem: a frame of %d bytes (at most %d)", len(fr), MaxFrame)
		}
		// The message moves up to its frame (it was just written: a copy within the cache).
		n := copy(out[start+len(fr):], out[body:])
		copy(out[start:], fr)
		out, body = out[:start+len(fr)+n], start+len(fr)
	}
	m := out[body:len(out):len(out)]
	if n := int64(len(m)); n > f.largest.Load() {
		f.largest.Store(n)
	}
	return m, out, nil
}

// closeSpan ends the span growing in buf (with a Framer), at buf's end.
func (bt *batch) closeSpan(buf []byte) {
	if len(buf) > bt.spanFrom {
		bt.spans = append(bt.spans, buf[bt.spanFrom:len(buf):len(buf)])
	}
	bt.spanFrom = 0
}

// release hands bt's format buffers back for later batches. Nothing may read bt's messages
// afterwards.
func (f *Forwarder) release(bt *batch) {
	for _, b := range bt.bufs {
		formatBuffers.Put(&b)
	}
	if cap(bt.msgs) > 0 {
		clear(bt.msgs[:cap(bt.msgs)])
		sliceSets.Put(&batchSlices{msgs: bt.msgs[:0], pos: bt.pos[:0], seq: bt.seq[:0]})
	}
	bt.bufs, bt.msgs, bt.spans, bt.pos, bt.seq = nil, nil, nil, nil, nil
}

// batchSlices are a batch's msgs, pos and seq, kept for a later batch once it is through:
// fresh, a batch of thousands of records takes them from pages the heap has to fault in.
type batchSlices struct {
	msgs     [][]byte
	pos, seq []uint64
}

// RecordSinkError records beside a sink's cursor why it is not forwarding (a sink that cannot
// start: a secret that cannot be read, a certificate that does not parse).
func RecordSinkError(ctx context.Context, pool *pgxpool.Pool, sinkID, msg string) error {
	_, err := pool.Exec(ctx, `INSERT INTO siem_cursors (sink_id, position, seq, last_error, last_error_at) VALUES ($1, 0, 0, $2, now())
		ON CONFLICT (sink_id) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at`, sinkID, msg)
	return err
}
