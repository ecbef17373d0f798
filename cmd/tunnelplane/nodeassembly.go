package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/api"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/commands/token"
	"github.com/tunnelplane/tunnelplane/dataplane/bus"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// nodeIdentity is what a node keeps in <data-dir>/node: its id and two keys, one purpose each —
// the SSH host key agents pin, and the event key that signs its facts.
type nodeIdentity struct {
	ID       string
	HostKey  *eventstore.SigningKey
	EventKey *eventstore.SigningKey
	Signer   ssh.Signer
}

// Fingerprint is the host key fingerprint agents pin.
func (n *nodeIdentity) Fingerprint() string { return ssh.FingerprintSHA256(n.Signer.PublicKey()) }

func loadNodeIdentity(dataDir string) (*nodeIdentity, error) {
	dir := filepath.Join(dataDir, "node")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	idPath := filepath.Join(dir, "id")
	raw, err := os.ReadFile(idPath)
	if errors.Is(err, fs.ErrNotExist) {
		raw = []byte(uuid.Must(uuid.NewV7()).String())
		if err := os.WriteFile(idPath, raw, 0o600); err != nil {
			return nil, fmt.Errorf("node identity: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	id := strings.TrimSpace(string(raw))
	if !domain.ValidID(id) {
		return nil, fmt.Errorf("node identity: %s holds %q, not a UUID", idPath, id)
	}
	host, _, err := eventstore.LoadOrCreateKeyFile(filepath.Join(dir, "host_key.pem"))
	if err != nil {
		return nil, fmt.Errorf("node host key: %w", err)
	}
	ev, _, err := eventstore.LoadOrCreateKeyFile(filepath.Join(dir, "event_key.pem"))
	if err != nil {
		return nil, fmt.Errorf("node event key: %w", err)
	}
	signer, err := ssh.NewSignerFromSigner(host.CryptoSigner())
	if err != nil {
		return nil, fmt.Errorf("node host key: %w", err)
	}
	return &nodeIdentity{ID: id, HostKey: host, EventKey: ev, Signer: signer}, nil
}

// enrollment is the EnrollNode command for this node, given the log's origin (the proof of
// possession of the event key names it).
func (n *nodeIdentity) enrollment(origin, name, agentURL, ingressURL string) commands.EnrollNode {
	return commands.EnrollNode{
		NodeID: n.ID, Name: name,
		HostKey:            strings.TrimSpace(string(ssh.MarshalAuthorizedKey(n.Signer.PublicKey()))),
		HostKeyFingerprint: n.Fingerprint(),
		EventKey:           eventstore.NewKeyAdded(origin, eventstore.PurposeNode, n.ID, n.EventKey),
		AgentURL:           agentURL, IngressURL: ingressURL,
	}
}

// nodeOptions configures a running node.
type nodeOptions struct {
	Name       string
	ListenAddr string // agents and ingress on one listener
	Listener   net.Listener
	BaseDomain string
	NATSURL    string
	Issuer     string
	// PublicURL is how agents and callers reach the node (default http://<listen address>).
	PublicURL  string
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Enroll registers the node (EnrollNode) if it is not yet; ErrConflict means already done.
	Enroll func(ctx context.Context, cmd commands.EnrollNode) error
	// Log returns, from the control plane, the log's origin (for the enrollment proof and the
	// view), its genesis hash (the view's trust anchor) and its size now (the view must hold that
	// much before the node serves). Never from TP_EVENTS, where anyone who may publish can write.
	Log     func(ctx context.Context) (LogInfo, error)
	Version string
	Limits  nodeLimits
}

// nodeLimits bound what one tunnel, agent or client address may hold of a node (zero: the node's
// defaults).
type nodeLimits struct {
	MaxCallsPerTunnel  int
	ChannelOpenTimeout time.Duration
	MaxConnsPerSource  int
}

func nodeLimitFlags(fs *pflag.FlagSet, l *nodeLimits, envErrs *[]error) {
	fs.IntVar(&l.MaxCallsPerTunnel, "max-calls-per-tunnel", envInt("MAX_CALLS_PER_TUNNEL", 512, envErrs),
		"calls in flight per tunnel on the node, streams and WebSockets included; beyond it callers get 503 (env TUNNELPLANE_MAX_CALLS_PER_TUNNEL)")
	fs.DurationVar(&l.ChannelOpenTimeout, "channel-open-timeout", envDuration("CHANNEL_OPEN_TIMEOUT", 15*time.Second, envErrs),
		"how long a call waits for the agent to accept its connection; then 504 (env TUNNELPLANE_CHANNEL_OPEN_TIMEOUT)")
	fs.IntVar(&l.MaxConnsPerSource, "max-conns-per-source", envInt("MAX_CONNS_PER_SOURCE", 256, envErrs),
		"open ingress connections per client IP address; beyond it 429 (env TUNNELPLANE_MAX_CONNS_PER_SOURCE)")
}

// LogInfo is what a node learns of the log from the control plane (GET /api/v1/log).
type LogInfo = api.LogInfo

// runningNode is a data-plane node with its view, event publisher, command handlers and heartbeat.
type runningNode struct {
	ID          *nodeIdentity
	Node        *node.Node
	View        *view.View
	URL         string // http://host:port of the listener
	Fingerprint string

	nc        *nats.Conn
	publisher *bus.Publisher
	sink      *factQueue
	handlers  *bus.CommandHandlers
	heartbeat *bus.Heartbeater
	server    *node.Server
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopOnce  sync.Once
	log       *slog.Logger

	issuer       string       // of control-plane tokens
	origin       string       // the log's origin, which the view's snapshot names
	genesis      []byte       // the hash of the log's first record, from the control plane
	snapshotPath string       // <data-dir>/node/view.json
	saveMu       sync.Mutex   // one snapshot write at a time
	savedAt      int64        // position of the last snapshot written or loaded (-1: none)
	restoredAt   int64        // position the view was restored at (-1: it replayed from the start)
	skipped      atomic.Int64 // relayed messages that did not verify
	skipLogged   atomic.Int64 // when skippedEvent last logged (Unix ns)
}

func startNode(ctx context.Context, g *globals, opts nodeOptions) (_ *runningNode, err error) {
	if opts.Name == "" {
		opts.Name = "node-1"
	}
	if !domain.ValidName(opts.Name) {
		return nil, fmt.Errorf("node name %q: use lower-case letters, digits and inner hyphens", opts.Name)
	}
	if opts.Issuer == "" {
		opts.Issuer = token.DefaultIssuer
	}
	id, err := loadNodeIdentity(g.dataDir)
	if err != nil {
		return nil, err
	}
	log := g.log.With("node_id", id.ID)
	rn := &runningNode{ID: id, Fingerprint: id.Fingerprint(), log: log, savedAt: -1, restoredAt: -1}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rn.cancel = cancel
	defer func() {
		if err != nil {
			rn.Stop()
		}
	}()

	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", opts.ListenAddr); err != nil {
			return nil, fmt.Errorf("node listen %s: %w", opts.ListenAddr, err)
		}
	}
	rn.URL = "http://" + ln.Addr().String()
	public := opts.PublicURL
	if public == "" {
		public = rn.URL
	}

	if rn.nc, err = bus.Connect(opts.NATSURL, bus.ConnectConfig{Name: "tunnelplane-node-" + opts.Name, Logger: log}); err != nil {
		return nil, err
	}
	js, err := jetstream.New(rn.nc)
	if err != nil {
		return nil, fmt.Errorf("node: jetstream: %w", err)
	}

	logInfo, err := opts.Log(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: log origin: %w", err)
	}
	origin, logSize := logInfo.Origin, logInfo.Size
	agentURL := strings.Replace(public, "http", "ws", 1) + "/v1/agent"
	if err := opts.Enroll(ctx, id.enrollment(origin, opts.Name, agentURL, public)); err != nil && !errors.Is(err, domain.ErrConflict) {
		return nil, fmt.Errorf("node: enroll: %w", err)
	}

	if rn.publisher, err = bus.NewPublisher(bus.PublisherConfig{NodeID: id.ID, Key: id.EventKey, Conn: rn.nc,
		SpoolDir: filepath.Join(g.dataDir, "node", "spool"), Registerer: opts.Registerer, Logger: g.log}); err != nil { // it names the node itself
		return nil, err
	}
	if err = rn.publisher.Start(runCtx); err != nil {
		return nil, err
	}
	// Sessions this node reported before belong to its previous process (which may have been
	// killed before it could report their ends): say so before any session of this one.
	if err := rn.publisher.Publish(ctx, bus.Fact{Event: domain.NodeStarted{NodeID: id.ID, Version: opts.Version}}); err != nil {
		return nil, fmt.Errorf("node: report the start: %w", err)
	}
	rn.sink = newFactQueue(runCtx, rn.publisher, log)

	rn.issuer = opts.Issuer
	rn.origin, rn.genesis, rn.snapshotPath = origin, logInfo.GenesisHash, filepath.Join(g.dataDir, "node", "view.json")
	rn.View = rn.newView()
	// The view starts from its last snapshot (or empty) and replays the relayed log from there.
	// Until it holds what the log holds now, a revocation or deletion may still be ahead, so
	// agents and callers are answered 503.
	if err := rn.restoreView(ctx, js); err != nil {
		return nil, err
	}
	rn.View.ReadyAt(int64(logSize) - 1)
	if opts.Registerer != nil {
		if err := rn.registerViewMetrics(opts.Registerer); err != nil {
			return nil, fmt.Errorf("node: metrics: %w", err)
		}
	}
	if rn.Node, err = node.New(node.Config{NodeID: id.ID, HostKey: id.Signer, Authenticator: rn.View, Router: rn.View, Authorizer: rn.View,
		Ready: rn.View.Ready, Sink: rn.sink, BaseDomain: opts.BaseDomain, Logger: g.log, Registerer: opts.Registerer,
		MaxCallsPerTunnel: opts.Limits.MaxCallsPerTunnel, ChannelOpenTimeout: opts.Limits.ChannelOpenTimeout,
		MaxConnsPerSource: opts.Limits.MaxConnsPerSource}); err != nil {
		return nil, err
	}
	// Drained once, a node stays draining (the control plane's state for it), across restarts:
	// replaying an old drain command changes nothing.
	if rn.View.DrainRequested(id.ID) {
		log.Warn("the control plane asked this node to drain; it takes no agents")
		rn.Node.Drain(ctx)
	}
	rn.wg.Add(3)
	go rn.followEvents(runCtx, js)
	go rn.snapshotLoop(runCtx)
	go rn.watchLag(runCtx, opts.Log, lagSample, staleAfter)
	if rn.handlers, err = bus.NewCommandHandlers(bus.CommandHandlersConfig{NodeID: id.ID, URL: opts.NATSURL, Publisher: rn.publisher,
		Resolve: rn.resolveCommand,
		DisconnectAgent: func(_ context.Context, c bus.DisconnectAgent) error {
			if c.TunnelID != "" {
				rn.Node.DisconnectTunnel(c.TunnelID, reasonOr(c.Reason, "disconnected by the control plane"))
			}
			if c.TokenID != "" {
				rn.Node.DisconnectToken(c.TokenID, reasonOr(c.Reason, "disconnected by the control plane"))
			}
			return nil
		},
		DrainNode: func(ctx context.Context, c bus.DrainNode) error {
			n := rn.Node.Drain(ctx)
			return rn.publisher.Publish(ctx, bus.Fact{Event: domain.NodeDrained{NodeID: id.ID, AgentsDisconnected: n}, CausationID: c.CommandID})
		},
		Logger: g.log}); err != nil { // the handlers name the node themselves
		return nil, err
	}
	if err = rn.handlers.Start(runCtx); err != nil {
		return nil, err
	}
	if rn.heartbeat, err = bus.NewHeartbeater(bus.HeartbeaterConfig{Conn: rn.nc, Logger: log,
		Info:   bus.Heartbeat{NodeID: id.ID, Name: opts.Name, AgentURL: agentURL, IngressURL: public, Version: opts.Version, StartedAt: time.Now().UTC()},
		Agents: func() int { return len(rn.Node.Sessions()) }}); err != nil {
		return nil, err
	}
	if err = rn.heartbeat.Start(runCtx); err != nil {
		return nil, err
	}

	routes := map[string]http.Handler{"/v1/agent": rn.Node.AgentHandler()}
	if opts.Gatherer != nil {
		routes["/metrics"] = promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{})
	}
	rn.server = rn.Node.NewServer(routes)
	rn.wg.Add(1)
	go func() {
		defer rn.wg.Done()
		if err := rn.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("node listener failed", "error", err)
		}
	}()
	rn.awaitView(ctx, runCtx, int64(logSize)-1, viewWait)
	log.Info("node running", "url", rn.URL, "host_key_fingerprint", rn.Fingerprint)
	return rn, nil
}

// viewWait is how long startNode waits for the view to catch up before it returns anyway (the
// node then answers 503 until the view has).
const viewWait = 5 * time.Second

// awaitView waits up to wait for the view to reach target, the log's last position at start; the
// replay is logged every 2 s until it has.
func (rn *runningNode) awaitView(ctx, runCtx context.Context, target int64, wait time.Duration) {
	start := time.Now()
	done := make(chan struct{})
	rn.wg.Add(1)
	go func() {
		defer rn.wg.Done()
		defer close(done)
		for target >= 0 {
			wctx, cancel := context.WithTimeout(runCtx, 2*time.Second)
			err := rn.View.WaitFor(wctx, uint64(target))
			cancel()
			if err == nil {
				break
			}
			if runCtx.Err() != nil {
				return
			}
			rn.log.Info("node view catching up", "applied", rn.View.Position()+1, "events", target+1)
		}
		rn.log.Info("node view caught up", "events", target+1, "took", time.Since(start).Round(time.Millisecond))
		rn.saveView()
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		rn.log.Warn("node view still catching up; agents and callers get 503 until it has", "applied", rn.View.Position()+1, "events", target+1)
	case <-ctx.Done():
	}
}

// newView is an empty view whose hooks act on the node.
// newView is an empty view of the log rn.origin names; it takes only records that log's keys
// signed, in the log's order.
func (rn *runningNode) newView() *view.View {
	return view.NewVerified(rn.issuer, rn.origin, rn.genesis, view.Hooks{
		TokenRevoked: func(id, reason string) {
			rn.disconnect(func(n *node.Node) int { return n.DisconnectToken(id, reason) })
		},
		TunnelDeleted: func(id, reason string) {
			rn.disconnect(func(n *node.Node) int { return n.DisconnectTunnel(id, reason) })
		},
		AccessWithdrawn: func() {
			rn.disconnect(func(n *node.Node) int { n.ForgetAuthorizations(); return 0 })
		},
		DrainRequested: func(nodeID string) {
			if rn.ID != nil && nodeID == rn.ID.ID {
				go rn.disconnect(func(n *node.Node) int { return n.Drain(context.Background()) }) // waits for requests in flight
			}
		},
	})
}

// restoreView loads the view's snapshot, if there is one that fits this log: taken of the same
// log origin and, where TP_EVENTS still holds the snapshot's last event, naming the same event
// there (a log restored from a backup reuses positions). Otherwise the view stays empty and the
// log is replayed from its start.
func (rn *runningNode) restoreView(ctx context.Context, js jetstream.JetStream) error {
	err := rn.View.LoadFile(rn.snapshotPath, rn.origin)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		pos, id := rn.View.Last()
		if pos < 0 {
			return nil
		}
		relayed, ok, lerr := bus.RelayedEventID(ctx, js, uint64(pos))
		if lerr != nil {
			return fmt.Errorf("node: %w", lerr)
		}
		if !ok || relayed == id {
			rn.savedAt, rn.restoredAt = pos, pos
			rn.log.Info("node view restored from its snapshot", "position", pos)
			return nil
		}
		err = fmt.Errorf("%w: the log holds event %s at position %d, the snapshot %s", view.ErrSnapshotMismatch, relayed, pos, id)
		rn.View = rn.newView() // start over from an empty view
	}
	rn.log.Warn("node view snapshot not used; replaying the log from its start", "path", rn.snapshotPath, "error", err)
	return nil
}

// registerViewMetrics exports how far the view is: SREs alert on a node that stays unready or
// whose position lags the relay's (tunnelplane_relay_next_position - 1). A node started again in
// the same process replaces the previous node's gauges.
func (rn *runningNode) registerViewMetrics(reg prometheus.Registerer) error {
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_position",
			Help: "The last log position the node's view has applied (-1: none)."},
			func() float64 { return float64(rn.View.Position()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_ready",
			Help: "1 once the node's view holds what the relayed log held when the node started; until then agents and callers get 503."},
			func() float64 {
				if rn.View.Ready() == nil {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tunnelplane_node_view_snapshot_position",
			Help: "The log position of the node's last saved or loaded view snapshot (-1: none)."},
			func() float64 {
				rn.saveMu.Lock()
				defer rn.saveMu.Unlock()
				return float64(rn.savedAt)
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tunnelplane_node_relayed_skipped_total",
			Help: "Relayed messages the node's view skipped because they do not verify against the log (someone else published them, or they were changed)."},
			func() float64 { return float64(rn.skipped.Load()) }),
	}
	for _, g := range gauges {
		err := reg.Register(g)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			reg.Unregister(are.ExistingCollector)
			err = reg.Register(g)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// snapshotEvery is how often the node saves its view when it has changed.
const snapshotEvery = time.Minute

// snapshotLoop saves the view every snapshotEvery while it changes, so a restarted node replays
// at most that much of the log (Stop saves it once more).
func (rn *runningNode) snapshotLoop(ctx context.Context) {
	defer rn.wg.Done()
	t := time.NewTicker(snapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			rn.saveView()
		case <-ctx.Done():
			return
		}
	}
}

// saveView writes the view's snapshot if the view moved since the last one.
func (rn *runningNode) saveView() {
	if rn.View == nil || rn.snapshotPath == "" {
		return
	}
	rn.saveMu.Lock()
	defer rn.saveMu.Unlock()
	if rn.View.Position() <= rn.savedAt {
		return
	}
	start := time.Now()
	pos, err := rn.View.SaveFile(rn.snapshotPath, rn.origin)
	if err != nil {
		rn.log.Error("node view snapshot not saved", "error", err)
		return
	}
	rn.savedAt = pos
	rn.log.Debug("node view snapshot saved", "position", pos, "took", time.Since(start).Round(time.Microsecond))
}

// followEvents folds the relayed log into the view for the node's life. A subscription that
// ends (a gap, an unreadable record, the consumer lost) is logged and started again where the
// view stands, with a backoff of 1 s doubling to 30 s.
func (rn *runningNode) followEvents(ctx context.Context, js jetstream.JetStream) {
	defer rn.wg.Done()
	apply := func(_ context.Context, ev bus.RelayedEvent) error {
		rec, err := ev.Record()
		if err == nil {
			err = rn.View.Apply(view.Event{Position: ev.Position, Record: &rec, Checkpoint: ev.Checkpoint})
		}
		switch {
		case err == nil:
		case errors.Is(err, eventstore.ErrTooManyPending):
			return err // read again from where the view stands
		case errors.Is(err, eventstore.ErrUnverified), errors.Is(err, bus.ErrMalformed):
			// Not the log's (someone else published it), or not as the log signed it: skipped;
			// the genuine record for this position may still follow.
			rn.skippedEvent(ev.Position, err)
			return bus.ErrSkipEvent
		default:
			// The view cannot fold an event in: keep serving with what it has, loudly.
			rn.log.Error("node view: event not applied", "position", ev.Position, "type", ev.Type, "error", err)
		}
		return nil
	}
	skipBad := func(seq uint64, err error) { rn.skippedEvent(int64(seq)-1, err) }
	delay := time.Second
	for {
		started := time.Now()
		err := bus.SubscribeEvents(ctx, js, bus.SubscribeEventsOptions{Logger: rn.log, FromPosition: rn.View.Next(), SkipBad: skipBad,
			Next: rn.View.Next}, apply)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			delay = time.Second
		}
		rn.log.Error("node view: event subscription ended; subscribing again", "error", err, "position", rn.View.Position(), "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// skippedEvent counts a relayed message the view did not take, and says so (at most every 10 s,
// with how many since: whoever floods TP_EVENTS must not flood the log too).
func (rn *runningNode) skippedEvent(pos any, err error) {
	rn.skipped.Add(1)
	now := time.Now().UnixNano()
	last := rn.skipLogged.Load()
	if now-last < int64(10*time.Second) || !rn.skipLogged.CompareAndSwap(last, now) {
		return
	}
	rn.log.Error("node view: a relayed message does not verify against the log and was skipped (someone other than the control plane can publish on events.>?)",
		"position", pos, "error", err, "skipped_so_far", rn.skipped.Load())
}

func (rn *runningNode) disconnect(f func(*node.Node) int) {
	if rn.Node != nil {
		f(rn.Node)
	}
}

// Stop shuts the node down: no new agents or requests, sessions closed, facts flushed to NATS or
// the spool. Safe to call twice.
func (rn *runningNode) Stop() {
	rn.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if rn.server != nil {
			_ = rn.server.Shutdown(ctx)
		}
		if rn.Node != nil {
			rn.Node.Stop()
		}
		if rn.heartbeat != nil {
			rn.heartbeat.Stop()
		}
		if rn.handlers != nil {
			rn.handlers.Stop()
		}
		if rn.sink != nil {
			rn.sink.Close()
		}
		if rn.publisher != nil {
			rn.publisher.Stop()
		}
		if rn.cancel != nil {
			rn.cancel()
		}
		rn.wg.Wait()
		rn.saveView()
		if rn.nc != nil {
			rn.nc.Close()
		}
	})
}

// factQueue is the node's Sink: it must not block the data path, so facts are queued in memory
// and published (to NATS, or the disk spool while NATS is away) by one goroutine, in order.
type factQueue struct {
	pub    *bus.Publisher
	log    *slog.Logger
	mu     sync.Mutex
	queue  []bus.Fact
	wake   chan struct{}
	closed bool
	done   chan struct{}
}

func newFactQueue(ctx context.Context, pub *bus.Publisher, log *slog.Logger) *factQueue {
	q := &factQueue{pub: pub, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run(ctx)
	return q
}

func (q *factQueue) push(e domain.Event) {
	q.mu.Lock()
	if !q.closed {
		q.queue = append(q.queue, bus.Fact{Event: e, OccurredAt: time.Now()})
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

func (q *factQueue) run(ctx context.Context) {
	defer close(q.done)
	for {
		q.mu.Lock()
		batch, closed := q.queue, q.closed
		q.queue = nil
		q.mu.Unlock()
		if len(batch) > 0 {
			// One signed batch per flush; Publish returns once NATS or the spool holds it.
			if err := q.pub.Publish(context.WithoutCancel(ctx), batch...); err != nil {
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

// Close publishes what is queued and stops.
func (q *factQueue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	<-q.done
}

func reasonOr(reason, def string) string {
	if reason == "" {
		return def
	}
	return reason
}

// commandDecisionWait bounds how long a command waits for the decision it names to reach the
// view (the command and the relayed log travel separately).
const commandDecisionWait = 15 * time.Second

// resolveCommand returns the command to run for one that came over NATS: the one the log's
// decision under its id implies (the control plane's reactor sends one command per decision,
// with the decision's event id), whatever else the message says. A command whose id names no
// decision for this kind of command, or for another node, is refused.
func (rn *runningNode) resolveCommand(ctx context.Context, cmd bus.Command) (bus.Command, error) {
	ctx, cancel := context.WithTimeout(ctx, commandDecisionWait)
	defer cancel()
	d, err := rn.View.Decided(ctx, cmd.ID())
	if err != nil {
		return nil, err
	}
	switch cmd.(type) {
	case bus.DisconnectAgent:
		switch d.Type {
		case domain.TypeTunnelDeleted:
			return bus.DisconnectAgent{CommandID: cmd.ID(), TunnelID: d.TunnelID, Reason: "tunnel deleted"}, nil
		case domain.TypeAgentTokenRevoked:
			return bus.DisconnectAgent{CommandID: cmd.ID(), TokenID: d.TokenID, Reason: "agent token revoked"}, nil
		}
	case bus.DrainNode:
		if d.Type == domain.TypeNodeDrainRequested && d.NodeID == rn.ID.ID {
			return bus.DrainNode{CommandID: cmd.ID(), NodeID: d.NodeID}, nil
		}
	}
	return nil, fmt.Errorf("the log's decision %s is a %s (%+v), not what %s carries out", cmd.ID(), d.Type, d, cmd.CommandName())
}

// A node whose view has not taken in what the control plane's log held staleAfter ago stops
// deciding on it (503 node-starting, as while it starts): a relay that stopped, a NATS that
// stalls delivery or someone flooding TP_EVENTS must not leave a node admitting agents and
// callers a revocation or deletion since then shuts out. lagSample is how often it asks.
const (
	staleAfter = 30 * time.Second
	lagSample  = 5 * time.Second
)

// watchLag asks the control plane for the log's size every sample and raises the view's
// readiness target to the size it heard at least staleAfter ago. While the control plane cannot
// be asked, the target stays (the node goes on with what it has).
func (rn *runningNode) watchLag(ctx context.Context, logInfo func(context.Context) (LogInfo, error), sample, stale time.Duration) {
	defer rn.wg.Done()
	type seen struct {
		at   time.Time
		size uint64
	}
	var samples []seen
	t := time.NewTicker(sample)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, sample)
		info, err := logInfo(actx)
		cancel()
		if err != nil {
			rn.log.Debug("node view: the control plane's log size is unknown", "error", err)
			continue
		}
		now := time.Now()
		samples = append(samples, seen{now, info.Size})
		due := -1
		for i, sm := range samples {
			if now.Sub(sm.at) >= stale {
				due = i
			}
		}
		if due < 0 {
			continue
		}
		target := int64(samples[due].size) - 1
		samples = samples[due+1:]
		if target > rn.View.Target() {
			rn.View.ReadyAt(target)
			if rn.View.Ready() != nil {
				rn.log.Error("node view: behind the control plane's log for longer than allowed; refusing agents and callers until it catches up",
					"view_next", rn.View.Next(), "log_size_then", target+1, "allowed", stale)
			}
		}
	}
}
