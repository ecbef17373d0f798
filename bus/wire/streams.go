package wire

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Headers set on relayed events (besides Nats-Msg-Id).
const (
	// HeaderPosition carries the record's global position in decimal.
	HeaderPosition = "Tp-Position"
	// HeaderType carries the event type name.
	HeaderType = "Tp-Type"
	// HeaderStreamID carries the record's stream id.
	HeaderStreamID = "Tp-Stream-Id"
)

// ConnectConfig configures a client connection.
type ConnectConfig struct {
	// Name identifies the connection in the server's monitoring.
	Name string
	// Options are appended to the defaults (credentials, TLS …).
	Options []nats.Option
	// Logger receives connection state changes. Default slog.Default().
	Logger *slog.Logger
}

// Connect dials NATS the way every component here expects: it keeps reconnecting forever and
// succeeds even while the server is down (the Publisher spools meanwhile). Close the connection
// when done.
func Connect(url string, cfg ConnectConfig) (*nats.Conn, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	// The URL is checked first: the errors of both url.Parse and nats.Connect would quote it,
	// password and all.
	if err := CheckNATSURLs(url); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	nc, err := nats.Connect(url, append(opts, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", RedactNATSURLs(url), err)
	}
	return nc, nil
}
