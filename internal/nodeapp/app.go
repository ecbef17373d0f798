package nodeapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ssh"

	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/dataplane/node"
	"github.com/tunnelplane/tunnelplane/dataplane/view"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/datadir"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// App is a data-plane node process: the node with its view, event publisher, command handlers
// and heartbeat, serving agents and callers on one listener.
type App struct {
	ID          *Identity
	Node        *node.Node // set by Start
	View        *view.View // set by Start
	URL         string     // http://host:port of the listener
	HealthURL   string     // http://host:port of the health listener ("" without one)
	Fingerprint string

	cfg      Config
	log      *slog.Logger
	life     lifecycle.Lifecycle
	stopOnce sync.Once
	ln       net.Listener
	lock     *datadir.Lock // on <DataDir>/node, from New to Stop

	nc        *nats.Conn
	names     wire.Names
	publisher *nodebus.Publisher
	sink      *FactQueue
	handlers  *nodebus.CommandHandlers
	heartbeat *nodebus.Heartbeater
	routes    *nodebus.Routes
	server    *node.Server
	snaps     *snapshots

	healthLn  net.Listener // nil: no health listener
	healthSrv *http.Server
	serving   atomic.Bool // start finished: Node, View and nc are set for good
	stopping  atomic.Bool
	drainOnce sync.Once
	drainDone chan struct{} // closed when the drain ended; drained and drainErr are then set
	drained   DrainResult
	drainErr  error

	skipped    atomic.Int64 // relayed messages that did not verify
	skipLogged atomic.Int64 // when skippedEvent last logged (Unix ns)
}

// New validates cfg, loads (or creates) the node's identity and opens its listener.
func New(cfg Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	lock, err := datadir.Acquire(filepath.Join(cfg.DataDir, "node"), "node", "tunnelplane node")
	if err != nil {
		return nil, err
	}
	id, err := LoadIdentity(cfg.DataDir, cfg.NodeID)
	if err != nil {
		lock.Release()
		return nil, err
	}
	a := &App{ID: id, Fingerprint: id.Fingerprint(), cfg: cfg, log: cfg.Logger.With("node_id", id.ID), ln: cfg.Listener, lock: lock}
	if a.ln == nil {
		if a.ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			lock.Release()
			return nil, fmt.Errorf("node listen %s: %w", cfg.ListenAddr, err)
		}
	}
	a.URL = "http://" + a.ln.Addr().String()
	if a.healthLn = cfg.HealthListener; a.healthLn == nil && cfg.HealthAddr != "" {
		if a.healthLn, err = net.Listen("tcp", cfg.HealthAddr); err != nil {
			if cfg.Listener == nil {
				_ = a.ln.Close()
			}
			lock.Release()
			return nil, fmt.Errorf("node health listen %s: %w", cfg.HealthAddr, err)
		}
	}
	if a.healthLn != nil {
		a.HealthURL = "http://" + a.healthLn.Addr().String()
	}
	return a, nil
}

// Start enrolls the node, restores its view and serves agents and callers. It returns once the
// view holds the log as large as it was at the start, or after viewWait (the node answers 503
// until it does). On an error everything it started is stopped.
func (a *App) Start(ctx context.Context) error {
	return a.life.Start(ctx, "node", func(runCtx context.Context) error {
		if err := a.start(ctx, runCtx); err != nil {
			a.stopParts(context.WithoutCancel(ctx))
			return err
		}
		return nil
	})
}

func (a *App) start(ctx, runCtx context.Context) (err error) {
	cfg, id, log := a.cfg, a.ID, a.log
	if a.healthLn != nil {
		// Up from the start: liveness holds while the node enrolls and replays; readiness waits.
		a.healthSrv = &http.Server{Handler: a.HealthHandler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
		hln, srv := a.healthLn, a.healthSrv
		a.life.Go(func(context.Context) {
			if err := srv.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("node health listener failed", "error", err)
			}
		})
	}
	public := cfg.PublicURL
	if public == "" {
		public = a.URL
	}
	if a.nc, err = wire.Connect(cfg.NATSURL, wire.ConnectConfig{Name: "tunnelplane-node-" + cfg.Name, Logger: log}); err != nil {
		return err
	}
	js, err := jetstream.New(a.nc)
	if err != nil {
		return fmt.Errorf("node: jetstream: %w", err)
	}
	logInfo, err := cfg.ControlPlane.Log(ctx)
	if err != nil {
		return fmt.Errorf("node: log origin: %w", err)
	}
	if a.names, err = wire.NewNames(cfg.Cluster); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := a.checkStreams(ctx, js, logInfo.Origin); err != nil {
		return err
	}
	agentURL := wsURL(public, "/v1/agent")
	if err := a.enroll(ctx, logInfo.Origin, id.Enrollment(logInfo.Origin, cfg.Name, agentURL, public)); err != nil {
		return err
	}

	if a.publisher, err = nodebus.NewPublisher(nodebus.PublisherConfig{NodeID: id.ID, Names: a.names, Key: id.EventKey, Conn: a.nc,
		SpoolDir: filepath.Join(cfg.DataDir, "node", "spool"), Registerer: cfg.Registerer, Logger: cfg.Logger}); err != nil { // it names the node itself
		return err
	}
	if err = a.publisher.Start(runCtx); err != nil {
		return err
	}
	// Sessions this node reported before belong to its previous process (which may have been
	// killed before it could report their ends): say so before any session of this one.
	if err := a.publisher.Publish(ctx, nodebus.Fact{Event: domain.NodeStarted{NodeID: id.ID, Version: cfg.Version}}); err != nil {
		return fmt.Errorf("node: report the start: %w", err)
	}
	a.sink = NewFactQueue(a.publisher.Publish, log)
	if err = a.sink.Start(runCtx); err != nil {
		return err
	}

	// The view starts from its last snapshot (or empty) and replays the relayed log from there.
	// Until it holds what the log holds now, a revocation or deletion may still be ahead, so
	// agents and callers are answered 503.
	a.snaps = &snapshots{path: filepath.Join(cfg.DataDir, "node", "view.json"), origin: logInfo.Origin, log: log, savedAt: -1, restoredAt: -1}
	a.View = a.newView(logInfo)
	restored, err := a.snaps.restore(ctx, a.View, func(ctx context.Context, pos uint64) (string, bool, error) {
		return nodebus.RelayedEventID(ctx, js, a.names, pos)
	})
	if err != nil {
		return err
	}
	if !restored {
		a.View = a.newView(logInfo) // nothing of a snapshot that did not fit
	}
	a.View.ReadyAt(int64(logInfo.Size) - 1)
	if cfg.Registerer != nil {
		if err := a.registerViewMetrics(cfg.Registerer); err != nil {
			return fmt.Errorf("node: metrics: %w", err)
		}
	}
	// Nodes forward calls to each other, authenticated by their enrolled event keys (the view's
	// key history says which are in force).
	peerKey, err := ssh.NewSignerFromSigner(id.EventKey.CryptoSigner())
	if err != nil {
		return fmt.Errorf("node: peer key: %w", err)
	}
	nc := node.Config{NodeID: id.ID, HostKey: id.Signer, Authenticator: a.View, Router: a.View, Authorizer: a.View,
		Ready: a.View.Ready, Sink: a.sink, BaseDomain: cfg.BaseDomain, LoginURL: cfg.LoginURL, Logger: cfg.Logger, Registerer: cfg.Registerer,
		UsageWindow: cfg.UsageWindow, Peers: a.View, PeerKey: peerKey}
	cfg.Limits.apply(&nc)
	if a.Node, err = node.New(nc); err != nil {
		return err
	}
	// Drained once, a node stays draining (the control plane's state for it), across restarts:
	// replaying an old drain command changes nothing.
	if a.View.DrainRequested(id.ID) {
		log.Warn("the control plane asked this node to drain; it takes no agents")
		a.Node.Drain(ctx)
	}
	a.life.Go(func(ctx context.Context) { a.followEvents(ctx, js) })
	a.life.Go(func(ctx context.Context) { a.snaps.loop(ctx, func() *view.View { return a.View }) })
	lag := &lagWatch{view: a.View, stale: cfg.MaxViewLag, log: log}
	a.life.Go(func(ctx context.Context) { lag.run(ctx, cfg.ControlPlane, cfg.LagSample) })
	if a.handlers, err = nodebus.NewCommandHandlers(nodebus.CommandHandlersConfig{NodeID: id.ID, Names: a.names, URL: cfg.NATSURL, Publisher: a.publisher,
		Resolve: func(ctx context.Context, cmd wire.Command) (wire.Command, error) {
			return resolveCommand(ctx, a.View, id.ID, cmd)
		},
		DisconnectAgent: func(_ context.Context, c wire.DisconnectAgent) error {
			if c.TunnelID != "" {
				a.Node.DisconnectTunnel(c.TunnelID, reasonOr(c.Reason, "disconnected by the control plane"))
			}
			if c.TokenID != "" {
				a.Node.DisconnectToken(c.TokenID, reasonOr(c.Reason, "disconnected by the control plane"))
			}
			return nil
		},
		DrainNode: func(ctx context.Context, c wire.DrainNode) error {
			n := a.Node.Drain(ctx)
			return a.publisher.Publish(ctx, nodebus.Fact{Event: domain.NodeDrained{NodeID: id.ID, AgentsDisconnected: n}, CausationID: c.CommandID})
		},
		Logger: cfg.Logger}); err != nil { // the handlers name the node themselves
		return err
	}
	if err = a.handlers.Start(runCtx); err != nil {
		return err
	}
	if a.heartbeat, err = nodebus.NewHeartbeater(nodebus.HeartbeaterConfig{Conn: a.nc, Names: a.names, Logger: log,
		Info:   wire.Heartbeat{NodeID: id.ID, Name: cfg.Name, AgentURL: agentURL, IngressURL: public, Version: cfg.Version, StartedAt: time.Now().UTC()},
		Agents: func() int { return len(a.Node.Sessions()) }}); err != nil {
		return err
	}
	if err = a.heartbeat.Start(runCtx); err != nil {
		return err
	}
	peerURL := cfg.PeerURL
	if peerURL == "" {
		peerURL = wsURL(public, "/v1/peer")
	}
	if a.routes, err = nodebus.NewRoutes(nodebus.RoutesConfig{Conn: a.nc, Names: a.names, NodeID: id.ID,
		PeerURL: peerURL, Table: a.Node, Logger: log}); err != nil {
		return err
	}
	if err = a.routes.Start(runCtx); err != nil {
		return err
	}

	routes := map[string]http.Handler{"/v1/agent": a.Node.AgentHandler(), "/v1/peer": a.Node.PeerHandler()}
	if cfg.Gatherer != nil {
		routes["/metrics"] = promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})
	}
	a.server = a.Node.NewServer(routes)
	ln := a.ln
	a.life.Go(func(context.Context) {
		if err := a.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("node listener failed", "error", err)
		}
	})
	a.awaitView(ctx, int64(logInfo.Size)-1, viewWait)
	a.serving.Store(true)
	log.Info("node running", "url", a.URL, "host_key_fingerprint", a.Fingerprint)
	return nil
}

// newView is an empty view of the log info names; it takes only records that log's keys signed,
// in the log's order, and its hooks act on the node.
func (a *App) newView(info LogInfo) *view.View {
	v := view.NewVerified(a.cfg.Issuer, info.Origin, info.GenesisHash, view.Hooks{
		TokenRevoked: func(id, reason string) {
			a.onNode(func(n *node.Node) { n.DisconnectToken(id, reason) })
		},
		TunnelDeleted: func(id, reason string) {
			a.onNode(func(n *node.Node) { n.DisconnectTunnel(id, reason) })
		},
		AccessWithdrawn: func() {
			// Next calls are decided afresh, and calls in flight again: those now refused are cut.
			a.onNode(func(n *node.Node) { n.ForgetAuthorizations(); n.Reauthorize(false) })
		},
		CredentialsRevoked: func() {
			a.onNode(func(n *node.Node) { n.Reauthorize(true); n.RecheckPeers() })
		},
		DrainRequested: func(nodeID string) {
			if nodeID == a.ID.ID {
				// Drain waits for requests in flight: not on the view's goroutine.
				a.life.Go(func(ctx context.Context) { a.onNode(func(n *node.Node) { n.Drain(ctx) }) })
			}
		},
	})
	if a.cfg.TokenLeeway > 0 {
		v.SetTokenLeeway(a.cfg.TokenLeeway)
	}
	return v
}

func (a *App) onNode(f func(*node.Node)) {
	if a.Node != nil {
		f(a.Node)
	}
}

func reasonOr(reason, def string) string {
	if reason == "" {
		return def
	}
	return reason
}

// Stop shuts the node down: no new agents or requests (those in flight may finish until ctx
// ends), sessions closed, facts flushed to NATS or the spool, the view saved. Safe to call twice,
// and after a Start that failed.
func (a *App) Stop(ctx context.Context) {
	a.stopOnce.Do(func() {
		a.stopping.Store(true)
		a.stopParts(ctx)
		a.life.Stop()
		a.snaps.save(a.View)
		if a.nc != nil {
			a.nc.Close()
		}
		if a.server == nil && a.cfg.Listener == nil {
			_ = a.ln.Close() // opened by New, never served
		}
		if a.healthSrv == nil && a.healthLn != nil && a.cfg.HealthListener == nil {
			_ = a.healthLn.Close()
		}
		a.lock.Release()
	})
}

// stopParts stops what start started, in reverse order, bounded by ctx.
func (a *App) stopParts(ctx context.Context) {
	if a.routes != nil {
		a.routes.Stop() // this node's entries go first: peers stop forwarding calls here
	}
	if a.Node != nil {
		a.Node.EndWaits() // calls waiting for an agent would hold the server's shutdown
	}
	if a.server != nil {
		_ = a.server.Shutdown(ctx)
	}
	if a.Node != nil {
		a.Node.Stop()
	}
	if a.heartbeat != nil {
		a.heartbeat.Stop()
	}
	if a.handlers != nil {
		a.handlers.Stop()
	}
	if a.sink != nil {
		a.sink.Stop()
	}
	if a.publisher != nil {
		a.publisher.Stop()
	}
	if a.healthSrv != nil {
		_ = a.healthSrv.Close() // the last to go: liveness holds while the rest stops
	}
}

// Resolve returns the command the node runs for cmd, which came over NATS: the one the log's
// decision under cmd's id implies, or an error refusing it (see resolveCommand).
func (a *App) Resolve(ctx context.Context, cmd wire.Command) (wire.Command, error) {
	return resolveCommand(ctx, a.View, a.ID.ID, cmd)
}

// RestoredAt is the log position the view was restored at from its snapshot (-1: it replayed the
// log from its start).
func (a *App) RestoredAt() int64 {
	if a.snaps == nil {
		return -1
	}
	a.snaps.mu.Lock()
	defer a.snaps.mu.Unlock()
	return a.snaps.restoredAt
}

// SkippedRelayed counts the relayed messages the view skipped because they do not verify.
func (a *App) SkippedRelayed() int64 { return a.skipped.Load() }

// Close is Stop without a deadline of the caller's.
func (a *App) Close() { a.Stop(context.Background()) }

// checkStreams refuses a NATS whose streams under this cluster name belong to another log (the
// control plane stamps them with its log's origin): the node would follow, and report into,
// another installation. When NATS does not answer within a few seconds the node starts anyway
// (its facts wait in the spool) and the check is skipped, with a warning.
func (a *App) checkStreams(ctx context.Context, js jetstream.JetStream, origin string) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	other, err := wire.EventsStreamOrigin(cctx, js, a.names)
	if err != nil {
		a.log.Warn("could not check the NATS streams belong to this log; starting anyway", "stream", a.names.EventsStream(), "error", err)
		return nil
	}
	if other != "" && other != origin {
		return fmt.Errorf("node: %w: NATS stream %s belongs to log %s, not to this control plane's %s: give the node the control plane's --cluster",
			ErrInvalidConfig, a.names.EventsStream(), other, origin)
	}
	return nil
}

// enroll registers the node with the control plane, once per log: <data-dir>/node/enrolled keeps
// the origin of the log it enrolled in, so that a restart needs no credential (a node enrollment
// token is typically used up or expired by then). Enrolled before by a process that did not keep
// the mark, the control plane answers that nothing changed.
func (a *App) enroll(ctx context.Context, origin string, e Enrollment) error {
	mark := filepath.Join(a.cfg.DataDir, "node", "enrolled")
	if b, err := os.ReadFile(mark); err == nil && string(b) == origin {
		return nil
	}
	if err := a.cfg.ControlPlane.Enroll(ctx, e); err != nil {
		if errors.Is(err, domain.ErrConflict) {
			return nil // enrolled with other keys, or removed: its facts are refused, as before
		}
		return fmt.Errorf("node: enroll: %w", err)
	}
	if err := os.WriteFile(mark, []byte(origin), 0o600); err != nil {
		return fmt.Errorf("node: remember the enrollment: %w", err)
	}
	return nil
}
