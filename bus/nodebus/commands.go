package nodebus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/lifecycle"
)

// watermillLogger routes watermill's logs to slog, its chatty info lines at debug.
func watermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
}

// commandNamespace derives outcome event ids: one outcome per node and command id, even if a node
// restarted and forgot it had executed the command.
var commandNamespace = uuid.MustParse("0b7f4d0e-3c55-4c8e-9a2e-7f1d62b4a0c3")

// CommandHandlersConfig configures a node's command handling.
type CommandHandlersConfig struct {
	// NodeID is this node's id; commands for other nodes are acknowledged and ignored.
	NodeID string
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
	// URL and NATSOptions dial the connections the handlers consume on. They are separate from
	// the node's main connection because watermill's subscriber drains its connection on close.
	URL         string
	NATSOptions []nats.Option
	// Publisher reports each outcome as a node.command_executed event.
	Publisher *Publisher
	// DisconnectAgent and wire.DrainNode execute the commands (at least one). A returned error is
	// reported as result "error" with its text; the command is not retried.
	DisconnectAgent func(ctx context.Context, cmd wire.DisconnectAgent) error
	DrainNode       func(ctx context.Context, cmd wire.DrainNode) error
	// Resolve stands between NATS and the commands (NATS lets whoever may publish on commands.*
	// send one): it returns the command to run in the place of cmd, built from the decision of
	// the log cmd's id names, so that what runs is what the control plane decided whatever the
	// message said; an error refuses cmd, which is logged and dropped, with no outcome and not
	// remembered. Nil runs every valid command as it came.
	Resolve func(ctx context.Context, cmd wire.Command) (wire.Command, error)
	// RememberCommands bounds the command ids remembered for idempotency. Default 10 000.
	RememberCommands int
	// AckWait is how long a command may take before JetStream redelivers it. Default 30s.
	AckWait time.Duration
	// RetryDelay is the redelivery delay when the outcome could not be reported. Default 1s.
	RetryDelay time.Duration
	// InactiveThreshold is how long the node's durable consumers survive while the node is away.
	// Default 24h; a node away longer receives only commands sent after it returns.
	InactiveThreshold time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c CommandHandlersConfig) withDefaults() CommandHandlersConfig {
	if c.RememberCommands == 0 {
		c.RememberCommands = 10_000
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.InactiveThreshold == 0 {
		c.InactiveThreshold = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with the configuration.
func (c CommandHandlersConfig) Validate() error {
	var errs []error
	if !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: command handlers: NodeID %q is not a UUID", ErrInvalidConfig, c.NodeID))
	}
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("%w: command handlers: URL is required", ErrInvalidConfig))
	}
	if c.Publisher == nil {
		errs = append(errs, fmt.Errorf("%w: command handlers: Publisher is required to report outcomes", ErrInvalidConfig))
	}
	if c.DisconnectAgent == nil && c.DrainNode == nil {
		errs = append(errs, fmt.Errorf("%w: command handlers: no handler funcs", ErrInvalidConfig))
	}
	if c.RememberCommands < 0 {
		errs = append(errs, fmt.Errorf("%w: command handlers: RememberCommands %d is negative", ErrInvalidConfig, c.RememberCommands))
	}
	if c.AckWait < 0 || c.RetryDelay < 0 || c.InactiveThreshold < 0 {
		errs = append(errs, fmt.Errorf("%w: command handlers: AckWait, RetryDelay and InactiveThreshold must not be negative", ErrInvalidConfig))
	}
	return errors.Join(errs...)
}

// CommandHandlers receives commands on a node through watermill's CQRS command processor, each
// command through the node's own durable consumer. Handling is idempotent: a command id is
// executed once per node while remembered (the newest RememberCommands ids), and every execution
// is reported once as a node.command_executed event through the node's Publisher (with a
// deterministic event id, so even a re-execution after a restart is stored once).
type CommandHandlers struct {
	cfg CommandHandlersConfig
	log *slog.Logger

	seenMu sync.Mutex
	seen   *seenSet

	life   lifecycle.Lifecycle
	router atomic.Pointer[message.Router]
	connMu sync.Mutex
	conns  []ownConn
}

// NewCommandHandlers prepares the handlers; Start subscribes.
func NewCommandHandlers(cfg CommandHandlersConfig) (*CommandHandlers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	return &CommandHandlers{
		cfg:  c,
		log:  c.Logger.With("component", "bus.commands", "node_id", c.NodeID),
		seen: newSeenSet(c.RememberCommands),
	}, nil
}

// durableName is the node's consumer of one command's subject.
func (h *CommandHandlers) durableName(command string) string {
	return h.cfg.Names.CommandConsumer(h.cfg.NodeID, command)
}

// Start creates the node's durable consumers (a node away for less than InactiveThreshold gets
// the commands sent meanwhile) and starts the command processor. NATS must be reachable; a
// failed Start cleans up after itself and may be retried.
func (h *CommandHandlers) Start(ctx context.Context) error {
	return h.life.Start(ctx, "command handlers", func(runCtx context.Context) error { return h.start(ctx, runCtx) })
}

func (h *CommandHandlers) start(ctx, runCtx context.Context) (err error) {
	defer func() {
		if err != nil {
			h.closeConns()
		}
	}()
	var handlers []cqrs.CommandHandler
	var names []string
	if h.cfg.DisconnectAgent != nil {
		names = append(names, wire.CommandDisconnectAgent)
		handlers = append(handlers, cqrs.NewCommandHandler("tp_node_"+wire.CommandDisconnectAgent, func(ctx context.Context, cmd *wire.DisconnectAgent) error {
			if cmd.NodeID != "" && cmd.NodeID != h.cfg.NodeID {
				return nil
			}
			return h.handle(ctx, *cmd, func(ctx context.Context, run wire.Command) error {
				c, ok := run.(wire.DisconnectAgent)
				if !ok {
					return fmt.Errorf("%s resolved to a %T", wire.CommandDisconnectAgent, run)
				}
				return h.cfg.DisconnectAgent(ctx, c)
			})
		}))
	}
	if h.cfg.DrainNode != nil {
		names = append(names, wire.CommandDrainNode)
		handlers = append(handlers, cqrs.NewCommandHandler("tp_node_"+wire.CommandDrainNode, func(ctx context.Context, cmd *wire.DrainNode) error {
			if cmd.NodeID != h.cfg.NodeID {
				return nil
			}
			return h.handle(ctx, *cmd, func(ctx context.Context, run wire.Command) error {
				c, ok := run.(wire.DrainNode)
				if !ok {
					return fmt.Errorf("%s resolved to a %T", wire.CommandDrainNode, run)
				}
				return h.cfg.DrainNode(ctx, c)
			})
		}))
	}

	mgmt, err := h.connect("commands")
	if err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	js, err := jetstream.New(mgmt)
	if err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	// The consumers exist before watermill subscribes: nats.go deletes a durable consumer it
	// created itself when the subscription ends, which would forget the node's place.
	for _, name := range names {
		_, err := js.CreateOrUpdatePushConsumer(ctx, h.cfg.Names.CommandsStream(), jetstream.ConsumerConfig{
			Durable:           h.durableName(name),
			Description:       "tunnelplane node " + h.cfg.NodeID + " " + name + " commands",
			DeliverSubject:    h.cfg.Names.CommandDeliverSubject(h.cfg.NodeID, name),
			FilterSubject:     h.cfg.Names.CommandTopic(name),
			DeliverPolicy:     jetstream.DeliverNewPolicy,
			AckPolicy:         jetstream.AckExplicitPolicy,
			AckWait:           h.cfg.AckWait,
			MaxDeliver:        -1,
			MaxAckPending:     1,
			InactiveThreshold: h.cfg.InactiveThreshold,
		})
		if err != nil {
			return fmt.Errorf("start command handlers: consumer for %s: %w", name, err)
		}
	}

	wlog := watermillLogger(h.log)
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, wlog)
	if err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	router.AddMiddleware(recoverer)
	processor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return h.cfg.Names.CommandTopic(p.CommandName), nil
		},
		SubscriberConstructor: func(p cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			conn, err := h.connect(p.CommandName)
			if err != nil {
				return nil, err
			}
			durable := h.durableName(p.CommandName)
			return wmnats.NewSubscriberWithNatsConn(conn, wmnats.SubscriberSubscriptionConfig{
				Unmarshaler:    &wmnats.NATSMarshaler{},
				AckWaitTimeout: h.cfg.AckWait,
				CloseTimeout:   10 * time.Second,
				NakDelay:       wmnats.NewStaticDelay(h.cfg.RetryDelay),
				JetStream: wmnats.JetStreamConfig{
					// Bind to the consumer created above (found by its durable name) and ack only
					// what the handler finished.
					SubscribeOptions:  []nats.SubOpt{nats.BindStream(h.cfg.Names.CommandsStream()), nats.ManualAck(), nats.AckExplicit()},
					DurableCalculator: func(string, string) string { return durable },
				},
			}, wlog)
		},
		Marshaler: wire.CommandMarshaler,
		Logger:    wlog,
	})
	if err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	if err := processor.AddHandlers(handlers...); err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	runErr := make(chan error, 1)
	running := router.Running()
	h.life.Go(func(ctx context.Context) { runErr <- router.Run(ctx) })
	select {
	case <-running:
	case err := <-runErr:
		return fmt.Errorf("start command handlers: %w", err)
	case <-ctx.Done():
		_ = router.Close()
		return fmt.Errorf("start command handlers: %w", ctx.Err())
	}
	h.router.Store(router)
	return nil
}

// Stop closes the processor (waiting for a command in hand) and its connections. Safe to call
// twice, and before Start.
func (h *CommandHandlers) Stop() {
	// Closed first, the router waits for a command in hand; the lifecycle then waits for it.
	if r := h.router.Load(); r != nil {
		if err := r.Close(); err != nil {
			h.log.Warn("closing the command processor", "error", err)
		}
	}
	h.life.Stop()
	h.closeConns()
}

// ownConn is a connection the handlers dialled; closed is closed once the client has let go of
// it (after a drain, every unsubscribe has reached the server).
type ownConn struct {
	conn   *nats.Conn
	closed chan struct{}
}

// connect dials a connection of the handlers' own, reconnecting forever like the node's main one.
func (h *CommandHandlers) connect(purpose string) (*nats.Conn, error) {
	closed := make(chan struct{})
	var once sync.Once
	opts := append([]nats.Option{}, h.cfg.NATSOptions...)
	opts = append(opts, nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) }))
	conn, err := wire.Connect(h.cfg.URL, wire.ConnectConfig{Name: "tunnelplane-node-" + h.cfg.NodeID + "-" + purpose, Options: opts, Logger: h.log})
	if err != nil {
		return nil, err
	}
	h.connMu.Lock()
	h.conns = append(h.conns, ownConn{conn: conn, closed: closed})
	h.connMu.Unlock()
	return conn, nil
}

// closeConns lets draining connections finish (so the server drops the node's interest before
// anyone sends the next command), then closes whatever is left.
func (h *CommandHandlers) closeConns() {
	h.connMu.Lock()
	conns := h.conns
	h.conns = nil
	h.connMu.Unlock()
	wait, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range conns {
		if c.conn.IsDraining() {
			select {
			case <-c.closed:
			case <-wait.Done():
			}
		}
		c.conn.Close()
	}
}

// handle runs a command once per command id and reports its outcome. An error return makes
// watermill negatively acknowledge the message, so the outcome is reported on redelivery.
func (h *CommandHandlers) handle(ctx context.Context, cmd wire.Command, exec func(ctx context.Context, run wire.Command) error) error {
	id := cmd.ID()
	log := h.log.With("command", cmd.CommandName(), "correlation_id", id)
	if id == "" {
		log.Warn("command without command_id ignored: it could not be executed exactly once")
		return nil
	}
	key := cmd.CommandName() + "/" + id
	h.seenMu.Lock()
	out, seen := h.seen.get(key)
	reported := seen && out.reported
	h.seenMu.Unlock()
	if reported {
		log.Debug("command already executed; redelivery ignored")
		return nil
	}
	run := cmd
	if !seen && h.cfg.Resolve != nil && cmd.Validate() == nil {
		resolved, err := h.cfg.Resolve(ctx, cmd)
		if err != nil {
			log.Error("command refused: the control plane did not send it", "error", err)
			return nil
		}
		run = resolved
	}
	if !seen {
		out = &outcome{result: "ok"}
		if err := cmd.Validate(); err != nil {
			out.result, out.detail = "error", err.Error()
			log.Warn("invalid command not executed", "error", err)
		} else if err := runCommand(ctx, func(ctx context.Context) error { return exec(ctx, run) }); err != nil {
			out.result, out.detail = "error", err.Error()
			log.Warn("command failed", "error", err)
		} else {
			log.Info("command executed")
		}
		h.seenMu.Lock()
		h.seen.put(key, out)
		h.seenMu.Unlock()
	}
	err := h.cfg.Publisher.Publish(ctx, Fact{
		ID: uuid.NewSHA1(commandNamespace, []byte(h.cfg.NodeID+"/"+key)),
		Event: domain.NodeCommandExecuted{CommandID: id, Command: cmd.CommandName(), NodeID: h.cfg.NodeID,
			Result: out.result, Detail: truncate(out.detail, 1000)},
		CorrelationID: id,
		CausationID:   id,
	})
	if err != nil {
		log.Warn("reporting the command outcome failed; it is reported on redelivery", "error", err)
		return fmt.Errorf("report outcome of %s: %w", id, err)
	}
	h.seenMu.Lock()
	out.reported = true
	h.seenMu.Unlock()
	return nil
}

// runCommand runs a command func, turning a panic into its error: a command that panics is
// reported as failed once rather than redelivered and re-run forever.
func runCommand(ctx context.Context, exec func(ctx context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("command panicked: %v", r)
		}
	}()
	return exec(ctx)
}

// recoverer turns any other panic in the processor (unmarshalling, reporting) into a negative
// acknowledgement instead of a crashed node. (watermill's own middleware package would pull in
// modules this one does not need.)
func recoverer(next message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("command handler panicked: %v", r)
			}
		}()
		return next(msg)
	}
}

type outcome struct {
	result, detail string
	reported       bool
}

// seenSet remembers the newest n commands by name and id (oldest evicted first).
type seenSet struct {
	byID  map[string]*outcome
	order []string // ring of ids in insertion order
	next  int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{byID: make(map[string]*outcome, n), order: make([]string, n)}
}

func (s *seenSet) get(id string) (*outcome, bool) {
	o, ok := s.byID[id]
	return o, ok
}

func (s *seenSet) put(id string, o *outcome) {
	if _, ok := s.byID[id]; ok {
		s.byID[id] = o
		return
	}
	if len(s.order) == 0 {
		return
	}
	if old := s.order[s.next]; old != "" {
		delete(s.byID, old)
	}
	s.order[s.next] = id
	s.next = (s.next + 1) % len(s.order)
	s.byID[id] = o
}

// truncate bounds a text that goes into a fact.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
