package serveapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/commands"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/controlapp"
	"github.com/tunnelplane/tunnelplane/internal/datadir"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
)

// Actor is who the all-in-one server acts as when it enrolls its own node and sets up the demo.
// It is a superadmin, granted through an event like any other role.
const Actor = "system:serve"

// Config configures serve. Control and Node are the control plane's and the node's own
// configurations; serve fills in what joins them (the NATS URL, the node's control plane, the
// data dir and logger).
type Config struct {
	Control controlapp.Config
	Node    nodeapp.Config
	// NATSHost and NATSPort are where the embedded NATS server listens (port -1: a free one).
	NATSHost string
	NATSPort int
	// Demo starts a demo upstream, tunnel "llm" of organization "demo" and an agent for it;
	// DemoDelay is the delay between the demo upstream's streamed tokens.
	Demo      bool
	DemoDelay time.Duration
	Version   string
	Logger    *slog.Logger
}

// App is everything serve runs.
type App struct {
	NATS *controlbus.Embedded
	CP   *controlapp.App
	Node *nodeapp.App
	Demo *Demo // with Config.Demo

	cfg  Config
	life lifecycle.Lifecycle
	stop []func(context.Context) // in order of start
}

// New checks cfg; Start runs it.
func New(cfg Config) (*App, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Control.Logger, cfg.Node.Logger = cfg.Logger, cfg.Logger
	cfg.Node.DataDir = cfg.Control.DataDir
	var errs []error
	if cfg.NATSPort < -1 || cfg.NATSPort > 65535 {
		errs = append(errs, fmt.Errorf("serve: NATS port %d out of range", cfg.NATSPort))
	}
	// The NATS URL and the node's control plane are serve's to fill in at Start.
	probe := cfg.Control
	probe.NATSURL = "nats://probe"
	errs = append(errs, probe.Validate())
	node := cfg.Node
	node.NATSURL, node.ControlPlane = "nats://probe", &controlapp.LocalControlPlane{}
	errs = append(errs, node.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &App{cfg: cfg}, nil
}

// Start starts the embedded NATS server, the control plane, the node and the demo, in that order.
// On an error what started is stopped. A second Start does nothing; after Stop it fails.
func (a *App) Start(ctx context.Context) error {
	return a.life.Start(ctx, "serve", func(context.Context) error {
		if err := a.start(ctx); err != nil {
			a.stopAll(context.WithoutCancel(ctx))
			return err
		}
		return nil
	})
}

func (a *App) start(ctx context.Context) (err error) {
	cfg := a.cfg
	// One serve per data dir: a second would share the embedded NATS store.
	lock, err := datadir.Acquire(cfg.Control.DataDir, "serve", "tunnelplane serve")
	if err != nil {
		return err
	}
	a.stop = append(a.stop, func(context.Context) { lock.Release() })
	if _, err := controlapp.InitLog(ctx, cfg.Control.DatabaseURL, cfg.Control.Keys()); err != nil {
		return err
	}
	port := cfg.NATSPort
	if port == 0 {
		port = -1 // pick a free one
	}
	if a.NATS, err = controlbus.StartEmbedded(ctx, controlbus.EmbeddedConfig{Dir: filepath.Join(cfg.Control.DataDir, "nats"), Host: cfg.NATSHost, Port: port, Logger: cfg.Logger}); err != nil {
		return err
	}
	a.stop = append(a.stop, func(context.Context) { a.NATS.Shutdown() })
	cc := cfg.Control
	cc.NATSURL, cc.OwnsNATS = a.NATS.ClientURL(), true
	if a.CP, err = controlapp.New(cc); err != nil {
		return err
	}
	a.stop = append(a.stop, a.CP.Stop)
	if err = a.CP.Start(ctx); err != nil {
		return err
	}
	sys := commands.WithActor(ctx, commands.Actor{ID: Actor})
	if _, err := a.CP.Service.GrantDirect(sys, commands.AssignRole{OrgID: domain.PlatformOrg, UserID: Actor, Role: domain.RoleSuperadmin}); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	nc := cfg.Node
	nc.NATSURL, nc.Version = a.NATS.ClientURL(), cfg.Version
	nc.Registerer, nc.Gatherer = a.CP.Registry, a.CP.Registry
	nc.ControlPlane = &controlapp.LocalControlPlane{Store: a.CP.Log.Store, Service: a.CP.Service, Actor: Actor}
	if a.Node, err = nodeapp.New(nc); err != nil {
		return err
	}
	a.stop = append(a.stop, a.Node.Stop)
	if err = a.Node.Start(ctx); err != nil {
		return err
	}
	if cfg.Demo {
		if a.Demo, err = startDemo(ctx, a, cfg.DemoDelay); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		a.stop = append(a.stop, a.Demo.Stop)
	}
	return nil
}

// Stop stops everything in reverse order of start. Safe to call twice.
func (a *App) Stop(ctx context.Context) {
	if a.life.Stop() {
		a.stopAll(ctx)
	}
}

func (a *App) stopAll(ctx context.Context) {
	for i := len(a.stop) - 1; i >= 0; i-- {
		a.stop[i](ctx)
	}
	a.stop = nil
}

// Close is Stop without a deadline of the caller's (tests' cleanups).
func (a *App) Close() { a.Stop(context.Background()) }
