package controlbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/nats-io/nats.go"
	"github.com/tunnelplane/tunnelplane/bus/wire"
)

// watermillLogger routes watermill's logs to slog, its chatty info lines at debug.
func watermillLogger(log *slog.Logger) watermill.LoggerAdapter {
	return watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
}

// CommandSenderConfig configures the control plane's CommandSender.
type CommandSenderConfig struct {
	// Conn is the control plane's NATS connection; the sender never closes it.
	Conn *nats.Conn
	// Names are the installation's NATS names (its cluster name); the zero value is the default.
	Names wire.Names
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
			PublishOptions: []nats.PubOpt{nats.ExpectStream(cfg.Names.CommandsStream())},
			TrackMsgId:     true, // Nats-Msg-Id = watermill UUID = command id
		},
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("new command sender: %w", err)
	}
	bus, err := cqrs.NewCommandBusWithConfig(pub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			if p.CommandName == "" {
				return "", fmt.Errorf("%w: %T has no command name", wire.ErrInvalidCommand, p.Command)
			}
			return cfg.Names.CommandTopic(p.CommandName), nil
		},
		OnSend: func(p cqrs.CommandBusOnSendParams) error {
			p.Message.UUID = p.Command.(wire.Command).ID()
			return nil
		},
		Marshaler: wire.CommandMarshaler,
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
func (s *CommandSender) Send(ctx context.Context, cmd wire.Command) error {
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
