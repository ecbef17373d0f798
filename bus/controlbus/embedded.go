package controlbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process NATS server of `tunnelplane serve` (and of tests).
type EmbeddedConfig struct {
	// Dir holds the JetStream store. Required; a restarted server on the same Dir has every
	// stream, consumer and KV bucket back.
	Dir string
	// Host to listen on. Default 127.0.0.1: the all-in-one server talks to itself.
	Host string
	// Port to listen on; -1 picks a free port (tests), 0 means the NATS default 4222.
	Port int
	// ServerName names the server in logs and JetStream metadata. Default "tunnelplane".
	ServerName string
	// MaxMemory and MaxStore bound JetStream memory and disk use in bytes; 0 lets the server
	// choose (a share of the machine's memory and disk).
	MaxMemory int64
	MaxStore  int64
	// SyncAlways makes JetStream fsync every stored message before acknowledging it. Off by
	// default (JetStream then syncs every two minutes): an acknowledged message survives a
	// process crash either way, only an operating-system crash can lose the unsynced tail.
	SyncAlways bool
	// ReadyTimeout bounds the wait for the server to accept connections. Default 10s.
	ReadyTimeout time.Duration
	// Logger receives the server's log lines. Default slog.Default().
	Logger *slog.Logger
	// Debug passes the server's debug lines to Logger (at debug level).
	Debug bool
}

func (c EmbeddedConfig) withDefaults() EmbeddedConfig {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.ServerName == "" {
		c.ServerName = "tunnelplane"
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports every problem with the configuration.
func (c EmbeddedConfig) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, fmt.Errorf("%w: embedded NATS: Dir is required", ErrInvalidConfig))
	}
	if c.Port < -1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("%w: embedded NATS: Port %d is not -1 (random), 0 (default) or a port number", ErrInvalidConfig, c.Port))
	}
	if c.MaxMemory < 0 {
		errs = append(errs, fmt.Errorf("%w: embedded NATS: MaxMemory %d is negative", ErrInvalidConfig, c.MaxMemory))
	}
	if c.MaxStore < 0 {
		errs = append(errs, fmt.Errorf("%w: embedded NATS: MaxStore %d is negative", ErrInvalidConfig, c.MaxStore))
	}
	if c.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: embedded NATS: ReadyTimeout %s is negative", ErrInvalidConfig, c.ReadyTimeout))
	}
	return errors.Join(errs...)
}

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	srv  *server.Server
	once sync.Once
}

// StartEmbedded starts a NATS server with JetStream stored under cfg.Dir and waits until it
// accepts connections (bounded by ctx and cfg.ReadyTimeout).
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	// Fail fast on an unusable store: the server would otherwise run without JetStream and only
	// the readiness wait would notice.
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded NATS: %w: store directory: %w", ErrServer, err)
	}
	opts := &server.Options{
		ServerName:         c.ServerName,
		Host:               c.Host,
		Port:               c.Port,
		JetStream:          true,
		StoreDir:           c.Dir,
		JetStreamMaxMemory: c.MaxMemory,
		JetStreamMaxStore:  c.MaxStore,
		SyncAlways:         c.SyncAlways,
		// The process owns signal handling; the server must not exit it on SIGTERM.
		NoSigs: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded NATS: %w: %w", ErrServer, err)
	}
	logger := &serverLogger{log: c.Logger.With("component", "nats-server")}
	srv.SetLoggerV2(logger, c.Debug, false, false)
	srv.Start()
	wait := c.ReadyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("start embedded NATS: %w", err)
		}
		return nil, fmt.Errorf("start embedded NATS: %w: not ready for connections on %s:%d within %s", ErrServer, c.Host, c.Port, wait)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded NATS: %w: JetStream did not start (is %s writable?)", ErrServer, c.Dir)
	}
	logger.started.Store(true)
	c.Logger.Info("embedded NATS ready", "url", srv.ClientURL(), "store", c.Dir)
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients connect to ("nats://host:port").
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Port is the port the server listens on (the chosen one when the config said -1), so that a
// restarted server can take the same address.
func (e *Embedded) Port() int {
	if addr, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return addr.Port
	}
	_, p, err := net.SplitHostPort(e.srv.Addr().String())
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// Shutdown stops the server and waits until it has released its port and store. Safe to call
// twice.
func (e *Embedded) Shutdown() {
	e.once.Do(func() {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}

// serverLogger adapts slog to the server's printf-style logger. The server's start-up notices
// (a banner of some 25 lines) are debug output; once it is ready, its notices are info again
// (slow consumers, shutdown).
type serverLogger struct {
	log     *slog.Logger
	started atomic.Bool
}

func (l *serverLogger) Noticef(format string, v ...any) {
	level := slog.LevelDebug
	if l.started.Load() {
		level = slog.LevelInfo
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

func (l *serverLogger) Warnf(format string, v ...any) { l.log.Warn(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Fatalf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
