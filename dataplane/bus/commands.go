package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tunnelplane/tunnelplane/domain"
)

// Command names. A command travels as JSON on "commands.<name>" in TP_COMMANDS with the watermill
// metadata header "name" = the command name and Nats-Msg-Id = the command id (so a command sent
// twice within the duplicate window is stored once). Never rename one.
const (
	CommandDisconnectAgent = "disconnect_agent"
	CommandDrainNode       = "drain_node"
)

// Command is a control → node command.
type Command interface {
	// CommandName is the constant wire name (never derived from the Go type name).
	CommandName() string
	// ID is the command id; a node executes a command id at most once while it remembers it.
	ID() string
	// Validate reports what is missing.
	Validate() error
}

// DisconnectAgent drops the agents of a tunnel, or those using a token, on one node or on all.
//
//	{"command_id":"…","node_id":"…","tunnel_id":"…","token_id":"…","reason":"…"}
type DisconnectAgent struct {
	CommandID string `json:"command_id"`
	// NodeID targets one node; empty targets every node.
	NodeID string `json:"node_id,omitempty"`
	// TunnelID or TokenID (at least one) selects the agents.
	TunnelID string `json:"tunnel_id,omitempty"`
	TokenID  string `json:"token_id,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// DrainNode asks one node to stop taking agents and let its connections go.
//
//	{"command_id":"…","node_id":"…"}
type DrainNode struct {
	CommandID string `json:"command_id"`
	NodeID    string `json:"node_id"`
}

func (DisconnectAgent) CommandName() string { return CommandDisconnectAgent }
func (c DisconnectAgent) ID() string        { return c.CommandID }
func (DrainNode) CommandName() string       { return CommandDrainNode }
func (c DrainNode) ID() string              { return c.CommandID }

// Validate reports every problem with the command.
func (c DisconnectAgent) Validate() error {
	var errs []error
	errs = append(errs, checkCommandID(c.CommandID))
	if c.NodeID != "" && !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: node_id %q is not a UUID", ErrInvalidCommand, c.NodeID))
	}
	if c.TunnelID == "" && c.TokenID == "" {
		errs = append(errs, fmt.Errorf("%w: %s needs a tunnel_id or a token_id", ErrInvalidCommand, CommandDisconnectAgent))
	}
	return errors.Join(errs...)
}

// Validate reports every problem with the command.
func (c DrainNode) Validate() error {
	var errs []error
	errs = append(errs, checkCommandID(c.CommandID))
	if !domain.ValidID(c.NodeID) {
		errs = append(errs, fmt.Errorf("%w: %s needs the node_id of one node, got %q", ErrInvalidCommand, CommandDrainNode, c.NodeID))
	}
	return errors.Join(errs...)
}

func checkCommandID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("%w: command_id must have 1 to 128 bytes, has %d", ErrInvalidCommand, len(id))
	}
	return nil
}

// commandName names commands for watermill's marshaler from CommandName, never from Go types.
func commandName(v any) string {
	if c, ok := v.(Command); ok {
		return c.CommandName()
	}
	return ""
}

var commandMarshaler = cqrs.JSONMarshaler{GenerateName: commandName}

// watermillLogger routes watermill's logs to slog, its chatty info lines at debug.
func watermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
}

// CommandSenderConfig configures the control plane's CommandSender.
type CommandSenderConfig struct {
	// Conn is the control plane's NATS connection; the sender never closes it.
	Conn *nats.Conn
	// Timeout bounds waiting for JetStream to store a command. Default 5s.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Validate reports every problem with the configuration.
func (c CommandSenderConfig) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, fmt.Errorf("%w: command sender: Conn is required", ErrInvalidConfig))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("%w: command sender: Timeout %s is negative", ErrInvalidConfig, c.Timeout))
	}
	return errors.Join(errs...)
}

// CommandSender sends commands to nodes over watermill's CQRS command bus on JetStream.
type CommandSender struct {
	bus *cqrs.CommandBus
}

// NewCommandSender builds a sender on cfg.Conn.
func NewCommandSender(cfg CommandSenderConfig) (*CommandSender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	wlog := watermillLogger(cfg.Logger.With("component", "bus.commands"))
	// The publisher would close the connection on Close; it is never closed here, the caller
	// owns the connection.
	pub, err := wmnats.NewPublisherWithNatsConn(cfg.Conn, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream: wmnats.JetStreamConfig{
			ConnectOptions: []nats.JSOpt{nats.MaxWait(cfg.Timeout)},
			PublishOptions: []nats.PubOpt{nats.ExpectStream(CommandsStream)},
			TrackMsgId:     true, // Nats-Msg-Id = watermill UUID = command id
		},
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("new command sender: %w", err)
	}
	bus, err := cqrs.NewCommandBusWithConfig(pub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			if p.CommandName == "" {
				return "", fmt.Errorf("%w: %T has no command name", ErrInvalidCommand, p.Command)
			}
			return CommandTopic(p.CommandName), nil
		},
		OnSend: func(p cqrs.CommandBusOnSendParams) error {
			p.Message.UUID = p.Command.(Command).ID()
			return nil
		},
		Marshaler: commandMarshaler,
		Logger:    wlog,
	})
	if err != nil {
		return nil, fmt.Errorf("new command sender: %w", err)
	}
	return &CommandSender{bus: bus}, nil
}

// Send validates cmd and returns once JetStream has stored it. Sending the same command id again
// within the duplicate window stores nothing new; after it, nodes still execute it once (they
// remember command ids).
func (s *CommandSender) Send(ctx context.Context, cmd Command) error {
	if err := cmd.Validate(); err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("send %s: %w", cmd.CommandName(), err)
	}
	if err := s.bus.Send(ctx, cmd); err != nil {
		return fmt.Errorf("send %s %s: %w", cmd.CommandName(), cmd.ID(), err)
	}
	return nil
}

// commandNamespace derives outcome event ids: one outcome per node and command id, even if a node
// restarted and forgot it had executed the command.
var commandNamespace = uuid.MustParse("0b7f4d0e-3c55-4c8e-9a2e-7f1d62b4a0c3")

// CommandHandlersConfig configures a node's command handling.
type CommandHandlersConfig struct {
	// NodeID is this node's id; commands for other nodes are acknowledged and ignored.
	NodeID string
	// URL and NATSOptions dial the connections the handlers consume on. They are separate from
	// the node's main connection because watermill's subscriber drains its connection on close.
	URL         string
	NATSOptions []nats.Option
	// Publisher reports each outcome as a node.command_executed event.
	Publisher *Publisher
	// DisconnectAgent and DrainNode execute the commands (at least one). A returned error is
	// reported as result "error" with its text; the command is not retried.
	DisconnectAgent func(ctx context.Context, cmd DisconnectAgent) error
	DrainNode       func(ctx context.Context, cmd DrainNode) error
	// Resolve stands between NATS and the commands (NATS lets whoever may publish on commands.*
	// send one): it returns the command to run in the place of cmd, built from the decision of
	// the log cmd's id names, so that what runs is what the control plane decided whatever the
	// message said; an error refuses cmd, which is logged and dropped, with no outcome and not
	// remembered. Nil runs every valid command as it came.
	Resolve func(ctx context.Context, cmd Command) (Command, error)
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

	lifeMu  sync.Mutex
	started bool
	stopped bool
	router  *message.Router
	conns   []ownConn
	done    chan struct{}
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
	return "tp_node_" + h.cfg.NodeID + "_" + command
}

// Start creates the node's durable consumers (a node away for less than InactiveThreshold gets
// the commands sent meanwhile) and starts the command processor. NATS must be reachable; a
// failed Start cleans up after itself and may be retried.
func (h *CommandHandlers) Start(ctx context.Context) (err error) {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	if h.stopped {
		return fmt.Errorf("start command handlers: %w", ErrClosed)
	}
	if h.started {
		return nil
	}
	defer func() {
		if err != nil {
			h.closeConns()
		}
	}()
	var handlers []cqrs.CommandHandler
	var names []string
	if h.cfg.DisconnectAgent != nil {
		names = append(names, CommandDisconnectAgent)
		handlers = append(handlers, cqrs.NewCommandHandler("tp_node_"+CommandDisconnectAgent, func(ctx context.Context, cmd *DisconnectAgent) error {
			if cmd.NodeID != "" && cmd.NodeID != h.cfg.NodeID {
				return nil
			}
			return h.handle(ctx, *cmd, func(ctx context.Context, run Command) error {
				c, ok := run.(DisconnectAgent)
				if !ok {
					return fmt.Errorf("%s resolved to a %T", CommandDisconnectAgent, run)
				}
				return h.cfg.DisconnectAgent(ctx, c)
			})
		}))
	}
	if h.cfg.DrainNode != nil {
		names = append(names, CommandDrainNode)
		handlers = append(handlers, cqrs.NewCommandHandler("tp_node_"+CommandDrainNode, func(ctx context.Context, cmd *DrainNode) error {
			if cmd.NodeID != h.cfg.NodeID {
				return nil
			}
			return h.handle(ctx, *cmd, func(ctx context.Context, run Command) error {
				c, ok := run.(DrainNode)
				if !ok {
					return fmt.Errorf("%s resolved to a %T", CommandDrainNode, run)
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
		_, err := js.CreateOrUpdatePushConsumer(ctx, CommandsStream, jetstream.ConsumerConfig{
			Durable:           h.durableName(name),
			Description:       "tunnelplane node " + h.cfg.NodeID + " " + name + " commands",
			DeliverSubject:    "_tp.cmd." + h.cfg.NodeID + "." + name,
			FilterSubject:     CommandTopic(name),
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
			return CommandTopic(p.CommandName), nil
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
					SubscribeOptions:  []nats.SubOpt{nats.BindStream(CommandsStream), nats.ManualAck(), nats.AckExplicit()},
					DurableCalculator: func(string, string) string { return durable },
				},
			}, wlog)
		},
		Marshaler: commandMarshaler,
		Logger:    wlog,
	})
	if err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	if err := processor.AddHandlers(handlers...); err != nil {
		return fmt.Errorf("start command handlers: %w", err)
	}
	runErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr <- router.Run(context.WithoutCancel(ctx))
	}()
	select {
	case <-router.Running():
	case err := <-runErr:
		<-done
		return fmt.Errorf("start command handlers: %w", err)
	case <-ctx.Done():
		_ = router.Close()
		<-done
		return fmt.Errorf("start command handlers: %w", ctx.Err())
	}
	h.router, h.done, h.started = router, done, true
	return nil
}

// Stop closes the processor (waiting for a command in hand) and its connections. Safe to call
// twice, and before Start.
func (h *CommandHandlers) Stop() {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	if h.stopped {
		return
	}
	h.stopped = true
	if h.started {
		if err := h.router.Close(); err != nil {
			h.log.Warn("closing the command processor", "error", err)
		}
		<-h.done
	}
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
	conn, err := Connect(h.cfg.URL, ConnectConfig{Name: "tunnelplane-node-" + h.cfg.NodeID + "-" + purpose, Options: opts, Logger: h.log})
	if err != nil {
		return nil, err
	}
	h.conns = append(h.conns, ownConn{conn: conn, closed: closed})
	return conn, nil
}

// closeConns lets draining connections finish (so the server drops the node's interest before
// anyone sends the next command), then closes whatever is left.
func (h *CommandHandlers) closeConns() {
	wait, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range h.conns {
		if c.conn.IsDraining() {
			select {
			case <-c.closed:
			case <-wait.Done():
			}
		}
		c.conn.Close()
	}
	h.conns = nil
}

// handle runs a command once per command id and reports its outcome. An error return makes
// watermill negatively acknowledge the message, so the outcome is reported on redelivery.
func (h *CommandHandlers) handle(ctx context.Context, cmd Command, exec func(ctx context.Context, run Command) error) error {
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
