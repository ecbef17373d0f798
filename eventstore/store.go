package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// AppRole is the database role the services run as: INSERT and SELECT on the log, nothing more.
const AppRole = "tunnelplane_app"

// notifyChannel carries the new head position after every commit.
const notifyChannel = "tunnelplane_events"

// Config configures a Store.
type Config struct {
	// Pool connects to the database. Use Connect to get one that runs as AppRole.
	Pool *pgxpool.Pool
	// Key signs appended records and checkpoints. Nil makes the store read-only.
	Key *SigningKey
	// KeySource loads the current log key by id after another process rotated it. Optional;
	// without it an append after a foreign rotation fails until the process is restarted.
	KeySource func(ctx context.Context, keyID string) (*SigningKey, error)
	// Registry is the set of accepted event types. Default: the store's own types only.
	Registry *Registry
	// MaxBatchEvents bounds the events committed in one transaction. Default 2048.
	MaxBatchEvents int
	// BatchTimeout bounds one commit. Default 30s.
	BatchTimeout time.Duration
	// PollInterval is how often subscribers re-check the log when no notification arrives
	// (notifications can be lost while the listening connection reconnects). Default 1s.
	PollInterval time.Duration
	// Logger receives operational messages. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for recorded_at. Default time.Now.
	Now func() time.Time
	// Seal, when set, replaces the personal data in an event's payload and metadata with
	// ciphertext (compliance/pii) before the event is checked, encoded, hashed and signed, so the
	// log holds and verifies only the ciphertext. Presigned records (node facts) pass unchanged.
	Seal func(ctx context.Context, eventType string, payload, metadata []byte) ([]byte, []byte, error)
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Registry == nil {
		out.Registry = MustRegistry()
	}
	if out.MaxBatchEvents == 0 {
		out.MaxBatchEvents = 2048
	}
	if out.BatchTimeout == 0 {
		out.BatchTimeout = 30 * time.Second
	}
	if out.PollInterval == 0 {
		out.PollInterval = time.Second
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Pool == nil {
		errs = append(errs, errors.New("eventstore config: Pool is required"))
	}
	if c.MaxBatchEvents < 0 {
		errs = append(errs, fmt.Errorf("eventstore config: MaxBatchEvents %d is negative", c.MaxBatchEvents))
	}
	if c.BatchTimeout < 0 {
		errs = append(errs, fmt.Errorf("eventstore config: BatchTimeout %s is negative", c.BatchTimeout))
	}
	if c.PollInterval < 0 {
		errs = append(errs, fmt.Errorf("eventstore config: PollInterval %s is negative", c.PollInterval))
	}
	return errors.Join(errs...)
}

// Store appends to and reads from the log. One Store per process: its single appender batches
// concurrent appends into one transaction each.
type Store struct {
	cfg      Config
	pool     *pgxpool.Pool
	registry *Registry
	log      *slog.Logger

	ringMu sync.Mutex
	ring   *cachedRing // key history for checking presigned events

	keyMu sync.RWMutex
	key   *SigningKey            // signs new appends
	keys  map[string]*SigningKey // every log key this process holds, by id

	reqs     chan *appendRequest
	notifier *notifier

	life     lifecycle.Lifecycle
	started  atomic.Bool
	stop     chan struct{} // closed at Stop: appends and readers give up
	stopOnce sync.Once
	doneOnce sync.Once

	appenderDone chan struct{} // closed when the appender has answered its last request

	// queuedHook, when set (only by tests, before the store is shared), is called each time a
	// request has entered the appender's queue.
	queuedHook func()
}

// New builds a Store. Call Start before appending or subscribing.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	s := &Store{
		cfg:      c,
		pool:     c.Pool,
		registry: c.Registry,
		log:      c.Logger,
		key:      c.Key,
		keys:     map[string]*SigningKey{},
		reqs:     make(chan *appendRequest, 1024),
		notifier: newNotifier(),
		stop:     make(chan struct{}),

		appenderDone: make(chan struct{}),
	}
	if c.Key != nil {
		s.keys[c.Key.ID()] = c.Key
	}
	return s, nil
}

// Registry returns the store's type registry.
func (s *Store) Registry() *Registry { return s.registry }

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Start launches the appender and the notification listener. They run until Stop. A failed
// Start (database unreachable) may be retried.
func (s *Store) Start(ctx context.Context) error {
	err := s.life.Start(ctx, "event store", func(context.Context) error {
		next, err := s.headPosition(ctx)
		if err != nil {
			return err
		}
		s.notifier.advance(next)
		s.started.Store(true)
		s.life.Go(func(context.Context) { s.appendLoop() })
		s.life.Go(s.listenLoop)
		return nil
	})
	if errors.Is(err, lifecycle.ErrStopped) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Stop ends the appender (pending appends fail with ErrClosed) and the listener. Safe to call
// twice, and before Start.
func (s *Store) Stop() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.life.Stop() // waits for a Start in progress, and for the loops
	s.doneOnce.Do(func() {
		if !s.started.Load() {
			close(s.appenderDone) // never started: nothing will ever answer
		}
	})
}

func (s *Store) headPosition(ctx context.Context) (uint64, error) {
	var next int64
	if err := s.pool.QueryRow(ctx, `SELECT next_position FROM log_head`).Scan(&next); err != nil {
		return 0, fmt.Errorf("eventstore: read head: %w", classify(err))
	}
	return uint64(next), nil
}

// Head returns the position the next record will get (the number of records in the log).
func (s *Store) Head(ctx context.Context) (uint64, error) { return s.headPosition(ctx) }

// SignWithLogKey signs msg with the log key in force (nil for a read-only store): what the
// relay's attestations of withheld records carry.
func (s *Store) SignWithLogKey(msg []byte) []byte {
	if k := s.currentKey(); k != nil {
		return k.Sign(msg)
	}
	return nil
}

// currentKey returns the signing key, or nil for a read-only store.
func (s *Store) currentKey() *SigningKey {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	return s.key
}

func (s *Store) setKey(k *SigningKey) {
	s.keyMu.Lock()
	s.key = k
	s.keys[k.ID()] = k
	s.keyMu.Unlock()
}

func (s *Store) knownKey(id string) *SigningKey {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	return s.keys[id]
}

// Append adds events to a stream if its version matches expected. It returns only after the
// events are committed (or definitely not written): acknowledged means durable.
func (s *Store) Append(ctx context.Context, streamID string, expected ExpectedVersion, events ...EventData) (AppendResult, error) {
	if err := ValidateStreamID(streamID); err != nil {
		return AppendResult{}, fmt.Errorf("append: %w", err)
	}
	return s.append(ctx, streamID, expected, events)
}

func (s *Store) append(ctx context.Context, streamID string, expected ExpectedVersion, events []EventData) (AppendResult, error) {
	key := s.currentKey()
	if key == nil {
		return AppendResult{}, fmt.Errorf("append: %w", ErrReadOnly)
	}
	if !s.started.Load() {
		return AppendResult{}, fmt.Errorf("append: %w (the store was not started)", ErrClosed)
	}
	pending, err := s.prepareEvents(ctx, streamID, events)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", streamID, err)
	}
	encodeAll(key, pending)
	req := &appendRequest{ctx: ctx, groups: []streamGroup{{stream: streamID, expected: expected, n: len(pending)}},
		events: pending, keyID: key.ID(), done: make(chan appendOutcome, 1)}
	res, err := s.submit(ctx, req, streamID)
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

// Statement is SQL run in the transaction that commits an append (Store.AppendMultiThen).
type Statement struct {
	SQL  string
	Args []any
}

// StreamAppend is one stream's part of an AppendMulti.
type StreamAppend struct {
	StreamID string
	Expected ExpectedVersion
	Events   []EventData
}

// AppendMulti appends to several streams atomically: either every stream is at its expected
// version and all events are written in one transaction, or nothing is. It is how a decision
// that spans aggregates (a tunnel and the reservation of its name) stays consistent.
func (s *Store) AppendMulti(ctx context.Context, appends ...StreamAppend) ([]AppendResult, error) {
	return s.AppendMultiThen(ctx, nil, appends...)
}

// AppendMultiThen is AppendMulti that also runs the statement then makes of the results in the
// transaction that commits the events: both are written or neither, so a caller that crashes
// after the commit has left its record of the outcome (the idempotency record of a command).
// The statement shares its transaction with other appends of the batch: it must not fail (an
// UPDATE of the caller's own row, say). then may be nil.
func (s *Store) AppendMultiThen(ctx context.Context, then func([]AppendResult) Statement, appends ...StreamAppend) ([]AppendResult, error) {
	key := s.currentKey()
	if key == nil {
		return nil, fmt.Errorf("append: %w", ErrReadOnly)
	}
	if !s.started.Load() {
		return nil, fmt.Errorf("append: %w (the store was not started)", ErrClosed)
	}
	if len(appends) == 0 {
		return nil, fmt.Errorf("append: %w: nothing to append", ErrInvalidEvent)
	}
	req := &appendRequest{ctx: ctx, keyID: key.ID(), then: then, done: make(chan appendOutcome, 1)}
	seen := map[string]bool{}
	var names []string
	for _, a := range appends {
		if err := ValidateStreamID(a.StreamID); err != nil {
			return nil, fmt.Errorf("append: %w", err)
		}
		if seen[a.StreamID] {
			return nil, fmt.Errorf("append: %w: stream %q appears twice", ErrInvalidEvent, a.StreamID)
		}
		seen[a.StreamID] = true
		pending, err := s.prepareEvents(ctx, a.StreamID, a.Events)
		if err != nil {
			return nil, fmt.Errorf("append to %s: %w", a.StreamID, err)
		}
		req.groups = append(req.groups, streamGroup{stream: a.StreamID, expected: a.Expected, n: len(pending)})
		req.events = append(req.events, pending...)
		names = append(names, a.StreamID)
	}
	if len(req.events) > MaxEventsPerCall {
		return nil, fmt.Errorf("append: %w: %d events in one append, at most %d", ErrTooLarge, len(req.events), MaxEventsPerCall)
	}
	encodeAll(key, req.events)
	return s.submit(ctx, req, strings.Join(names, ", "))
}

// submit hands a request to the appender and waits for its definite outcome.
func (s *Store) submit(ctx context.Context, req *appendRequest, what string) ([]AppendResult, error) {
	select {
	case <-s.stop:
		return nil, fmt.Errorf("append: %w", ErrClosed)
	default:
	}
	select {
	case s.reqs <- req:
		if s.queuedHook != nil {
			s.queuedHook()
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("append: %w", ctx.Err())
	case <-s.stop:
		return nil, fmt.Errorf("append: %w", ErrClosed)
	}
	// Once queued, wait for the outcome even if ctx ends: the appender skips requests whose
	// context is done before it takes them, and a taken request gets a definite answer. Every
	// request the appender took is answered before appenderDone closes.
	var out appendOutcome
	select {
	case out = <-req.done:
	case <-s.appenderDone:
		select {
		case out = <-req.done:
		default:
			out.err = ErrClosed
		}
	}
	if out.err != nil {
		return nil, fmt.Errorf("append to %s: %w", what, out.err)
	}
	return out.res, nil
}

type pendingEvent struct {
	env      Envelope
	envelope []byte
	sig      []byte
	proof    []byte
}

type appendRequest struct {
	ctx       context.Context
	groups    []streamGroup // consecutive runs of events per stream; nil for presigned requests
	events    []pendingEvent
	keyID     string                         // the key named in the envelopes
	signed    bool                           // sig and proof are set (the appender signs requests of a batch together)
	presigned bool                           // signed by its producer, each event naming its stream; never re-signed here
	then      func([]AppendResult) Statement // run in the commit's transaction; may be nil
	done      chan appendOutcome
}

// streamGroup is the next n events of a request, all for one stream at an expected version.
type streamGroup struct {
	stream   string
	expected ExpectedVersion
	n        int
}

type appendOutcome struct {
	res []AppendResult // one per group (one for a presigned request)
	err error
}

// encodeAll encodes every event's envelope naming key.
func encodeAll(key *SigningKey, events []pendingEvent) {
	for i := range events {
		e := &events[i]
		e.env.KeyID = key.ID()
		e.envelope = AppendEnvelope(make([]byte, 0, EnvelopeSize(&e.env)), &e.env)
	}
}

// signAll encodes every event and signs them as one batch.
func signAll(key *SigningKey, events []pendingEvent) {
	encodeAll(key, events)
	signGroups(key, events)
}

// signGroups signs the encoded events of all groups with one signature over the Merkle root of
// their envelopes, in order; each event gets its inclusion proof.
func signGroups(key *SigningKey, groups ...[]pendingEvent) {
	var envelopes [][]byte
	for _, g := range groups {
		for i := range g {
			envelopes = append(envelopes, g[i].envelope)
		}
	}
	signed := SignEnvelopes(key, envelopes)
	k := 0
	for _, g := range groups {
		for i := range g {
			g[i].sig, g[i].proof = signed.Signature, signed.Proofs[k]
			k++
		}
	}
}

// signTogether signs the events of all unsigned requests of a batch with one signature (per
// key; there is one unless the key rotated meanwhile). A record verifies on its own either way,
// and a request that then fails its version check only leaves an unused leaf under the root.
func (s *Store) signTogether(reqs []*appendRequest) {
	byKey := map[string][]*appendRequest{}
	for _, r := range reqs {
		if !r.presigned && !r.signed {
			byKey[r.keyID] = append(byKey[r.keyID], r)
		}
	}
	for id, rs := range byKey {
		key := s.knownKey(id)
		if key == nil {
			continue // cannot happen (keyID came from a key this store holds); tryCommit signs
		}
		groups := make([][]pendingEvent, len(rs))
		for i, r := range rs {
			groups[i] = r.events
			r.signed = true
		}
		signGroups(key, groups...)
	}
}

func (s *Store) appendLoop() {
	defer close(s.appenderDone)
	for {
		var first *appendRequest
		select {
		case first = <-s.reqs:
		case <-s.stop:
			s.failQueued()
			return
		}
		batch := []*appendRequest{first}
		n := len(first.events)
	drain:
		for n < s.cfg.MaxBatchEvents {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				n += len(r.events)
			default:
				break drain
			}
		}
		s.commit(batch)
	}
}

func (s *Store) failQueued() {
	for {
		select {
		case r := <-s.reqs:
			r.done <- appendOutcome{err: ErrClosed}
		default:
			return
		}
	}
}

// commit writes a batch in one transaction. If the database rejects the data of the batch (a
// duplicate event id, say), each request is retried alone so only the culprit fails.
func (s *Store) commit(batch []*appendRequest) {
	live := batch[:0]
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.done <- appendOutcome{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	s.signTogether(live)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BatchTimeout)
	defer cancel()
	results, accepted, err := s.tryCommit(ctx, live)
	if err == nil {
		for i, r := range accepted {
			r.done <- appendOutcome{res: results[i]}
		}
		return
	}
	if isDataError(err) && len(accepted) > 1 {
		for _, r := range accepted {
			s.commit([]*appendRequest{r})
		}
		return
	}
	if isDataError(err) {
		err = dataError(err)
	}
	for _, r := range accepted {
		r.done <- appendOutcome{err: err}
	}
}

type head struct {
	next     uint64
	hash     []byte
	frontier []byte
	keyID    string
	origin   string
}

func lockHead(ctx context.Context, tx pgx.Tx) (head, error) {
	var h head
	var next int64
	err := tx.QueryRow(ctx, lockHeadSQL).Scan(&next, &h.hash, &h.frontier, &h.keyID, &h.origin)
	h.next = uint64(next)
	return h, err
}

const lockHeadSQL = `SELECT next_position, head_hash, frontier, key_id, origin FROM log_head FOR UPDATE`

// versionsSQL finds each stream's version with one backward index probe per stream (max() over
// ANY($1) would scan whole streams).
const versionsSQL = `SELECT s.id, (SELECT e.stream_version FROM events e WHERE e.stream_id = s.id
	ORDER BY e.stream_version DESC LIMIT 1) FROM unnest($1::text[]) AS s(id)`

// tryCommit answers requests that fail their checks itself and returns the accepted ones with
// their results, which are valid only when err is nil. It takes two round trips: BEGIN, the head
// lock and the stream versions in one pipeline (beginBatch); the rows, checkpoint, head, NOTIFY
// and COMMIT in another (writeBatch). What is written is decided in between by planBatch.
func (s *Store) tryCommit(ctx context.Context, reqs []*appendRequest) ([][]AppendResult, []*appendRequest, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, reqs, classify(err)
	}
	defer conn.Release()
	committed := false // a transaction may be open on conn until then
	defer func() {
		if !committed {
			rollback(ctx, conn)
		}
	}()

	h, versions, err := beginBatch(ctx, conn, batchStreams(reqs))
	if err != nil {
		return nil, reqs, err
	}
	key, err := s.keyFor(ctx, h.keyID)
	if err != nil {
		return nil, reqs, err
	}
	for _, r := range reqs {
		if !r.presigned && (r.keyID != key.ID() || !r.signed) {
			signAll(key, r.events)
			r.keyID, r.signed = key.ID(), true
		}
	}
	var ring *KeyRing
	if slices.ContainsFunc(reqs, func(r *appendRequest) bool { return r.presigned }) {
		if ring, err = s.ringAt(ctx, conn, h.next, versions[LogStream]); err != nil {
			return nil, reqs, err
		}
	}

	p := planBatch(reqs, versions, h, s.cfg.Now().UTC().Truncate(time.Microsecond), ring)
	for _, r := range p.rejected {
		r.req.done <- appendOutcome{err: r.err}
	}
	if len(p.accepted) == 0 {
		return nil, nil, nil
	}
	if err := s.writeBatch(ctx, conn, p, key, h.origin); err != nil {
		return nil, p.accepted, pastHead(err, h.next)
	}
	committed = true
	s.notifier.advance(p.rows.next)
	return p.results, p.accepted, nil
}

// beginBatch opens a transaction on conn, locks the head and reads the current version of each
// stream (0 for one without events), in one round trip.
func beginBatch(ctx context.Context, conn *pgxpool.Conn, streams []string) (head, map[string]uint64, error) {
	versions := make(map[string]uint64, len(streams))
	for _, id := range streams {
		versions[id] = 0
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockHeadSQL)
	b.Queue(versionsSQL, streams)
	br := conn.SendBatch(ctx, b)
	h, err := readHeadAndVersions(br, versions)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return head{}, nil, classify(err)
	}
	if h.origin == "" {
		return head{}, nil, ErrNotInitialized
	}
	return h, versions, nil
}

// writeBatch writes the planned rows, the checkpoint signed by key and the new head, notifies
// and commits. When the acknowledgement of COMMIT is lost it asks, on another connection,
// whether the batch landed. A nil error means the batch is committed.
func (s *Store) writeBatch(ctx context.Context, conn *pgxpool.Conn, p batchPlan, key *SigningKey, origin string) error {
	b := &pgx.Batch{}
	if err := p.rows.queue(b, key, origin); err != nil {
		return err
	}
	for i, r := range p.accepted {
		if r.then != nil {
			st := r.then(p.results[i])
			b.Queue(st.SQL, st.Args...)
		}
	}
	b.Queue("COMMIT")
	err := conn.SendBatch(ctx, b).Close()
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classify(err) // the server answered: nothing committed
	}
	// No answer: the COMMIT may or may not have happened.
	if landed, perr := s.landed(ctx, p.accepted[0].events[0].env.EventID); perr != nil {
		return fmt.Errorf("%w: commit: %w (and the check failed: %w)", ErrOutcomeUnknown, err, perr)
	} else if landed {
		s.log.Warn("commit acknowledgement lost but the batch is in the log", "error", err)
		return nil
	}
	return fmt.Errorf("%w: commit: %w", ErrUnavailable, err)
}

// rollback ends whatever transaction is open on conn; a connection that cannot is closed, and the
// pool drops it.
func rollback(ctx context.Context, conn *pgxpool.Conn) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(rctx, "ROLLBACK"); err != nil {
		conn.Conn().Close(rctx)
	}
}

func readHeadAndVersions(br pgx.BatchResults, versions map[string]uint64) (head, error) {
	var h head
	if _, err := br.Exec(); err != nil {
		return h, err
	}
	var next int64
	if err := br.QueryRow().Scan(&next, &h.hash, &h.frontier, &h.keyID, &h.origin); err != nil {
		return h, err
	}
	h.next = uint64(next)
	rows, err := br.Query()
	if err != nil {
		return h, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var v *int64
		if err := rows.Scan(&id, &v); err != nil {
			return h, err
		}
		if v != nil {
			versions[id] = uint64(*v)
		}
	}
	return h, rows.Err()
}

// landed asks, on another connection, whether the event with this id is in the log.
func (s *Store) landed(ctx context.Context, id [16]byte) (bool, error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var found bool
	err := s.pool.QueryRow(pctx, `SELECT EXISTS (SELECT 1 FROM events WHERE event_id = $1)`, pgtype.UUID{Bytes: id, Valid: true}).Scan(&found)
	return found, err
}

// keyFor returns the key that must sign now: the log key recorded in the head.
func (s *Store) keyFor(ctx context.Context, headKeyID string) (*SigningKey, error) {
	if key := s.knownKey(headKeyID); key != nil {
		if s.currentKey() != key {
			s.setKey(key)
		}
		return key, nil
	}
	key := s.currentKey()
	if s.cfg.KeySource == nil {
		return nil, fmt.Errorf("%w: the log key is now %s but this process holds %s (restart it after a rotation)",
			ErrKeyMismatch, headKeyID, key.ID())
	}
	next, err := s.cfg.KeySource(ctx, headKeyID)
	if err != nil {
		return nil, fmt.Errorf("%w: load rotated log key %s: %w", ErrKeyMismatch, headKeyID, err)
	}
	if next.ID() != headKeyID {
		return nil, fmt.Errorf("%w: key source returned %s for %s", ErrKeyMismatch, next.ID(), headKeyID)
	}
	s.log.Info("log key changed by another process", "key_id", headKeyID)
	s.setKey(next)
	return next, nil
}

// classify maps database failures onto the store's sentinels.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57", "58":
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Anything else without a server answer is a broken connection.
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// ErrSeal: the personal data of an event could not be sealed (Config.Seal), so it was not
// appended.
var ErrSeal = errors.New("personal data could not be sealed")

// ErrRecordPastHead: a record (or checkpoint) already occupies the position the head says is
// next, written around the appender. Every append fails until an operator removes it; `tunnelplane
// verify` names it.
var ErrRecordPastHead = errors.New("the log has a record past its head")

// pastHead turns the duplicate key an append meets on a position (or checkpoint size) past the
// head into ErrRecordPastHead; other errors pass unchanged. The result is not a data error, so the
// batch is not retried request by request: every request would meet the same row.
func pastHead(err error, next uint64) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		return err
	}
	switch pgErr.ConstraintName {
	case "events_pkey":
		return fmt.Errorf("%w: a record lies at position %d, which the head says is the next free one; "+
			"run `tunnelplane verify` (database: %s)", ErrRecordPastHead, next, pgErr.Detail)
	case "checkpoints_pkey":
		return fmt.Errorf("%w: a checkpoint for a size past the head's %d records already exists; "+
			"run `tunnelplane verify` (database: %s)", ErrRecordPastHead, next, pgErr.Detail)
	}
	return err
}

func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code[:2] == "22" || pgErr.Code[:2] == "23"
}

func dataError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "events_event_id_key" {
		return fmt.Errorf("%w: %s", ErrDuplicateEventID, pgErr.Detail)
	}
	return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
}

func formatPosition(p uint64) string { return strconv.FormatUint(p, 10) }
