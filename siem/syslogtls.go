package siem

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// ErrNotAcknowledged: the receiver did not confirm that it read a whole batch; send it again.
var ErrNotAcknowledged = errors.New("siem: the receiver did not acknowledge the batch")

// SyslogTLSConfig says where and how to deliver RFC 5425 syslog over TLS.
type SyslogTLSConfig struct {
	// Address is the receiver, host:port.
	Address string
	// TLS verifies the receiver (RootCAs, ServerName) and may present a client certificate.
	TLS *tls.Config
	// DialTimeout bounds connecting and the handshake (default 10s); AckTimeout bounds waiting
	// for the receiver to close its side once the batch is written (default 30s).
	DialTimeout, AckTimeout time.Duration
	// Dial, when set, makes the TCP connection (through a proxy, say); the default dials
	// Address directly.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Validate reports every problem at once.
func (c SyslogTLSConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("syslog address %q: want host:port", c.Address))
	}
	if c.TLS == nil {
		errs = append(errs, errors.New("syslog over TLS needs a TLS configuration"))
	} else if c.TLS.InsecureSkipVerify {
		errs = append(errs, errors.New("syslog over TLS must verify the receiver's certificate"))
	}
	if c.DialTimeout < 0 || c.AckTimeout < 0 {
		errs = append(errs, errors.New("syslog timeouts must not be negative"))
	}
	return errors.Join(errs...)
}

// SyslogTLS delivers batches of syslog messages to one receiver.
type SyslogTLS struct{ cfg SyslogTLSConfig }

// NewSyslogTLS checks cfg and fills in the defaults.
func NewSyslogTLS(cfg SyslogTLSConfig) (*SyslogTLS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 30 * time.Second
	}
	return &SyslogTLS{cfg: cfg}, nil
}

// dial connects and completes the TLS handshake within DialTimeout.
func (s *SyslogTLS) dial(ctx context.Context) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	dial := s.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return nil, err
	}
	cfg := s.cfg.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(s.cfg.Address)
		cfg.ServerName = host
	}
	conn := tls.Client(nc, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return conn, nil
}

// Deliver sends msgs (RFC 5424 messages, framed here by octet counting) over one TLS
// connection, and returns nil only when the receiver has read all of them. Syslog has no
// acknowledgements, so the close is the acknowledgement: once the batch is written the sender
// closes its side with a TLS close_notify, and the batch counts as delivered only when the
// receiver, having read up to that alert, closes its own side. Any other ending is
// ErrNotAcknowledged (wrapped with the cause): the caller sends the batch again, and the
// receiver recognises what it already has by the event ids.
func (s *SyslogTLS) Deliver(ctx context.Context, msgs [][]byte) error {
	ack, err := s.Send(ctx, msgs)
	if err != nil {
		return err
	}
	return ack()
}

// Send is Deliver in two halves, so that the next batch can be written while the receiver
// confirms this one: Send connects, writes msgs and closes the sending side (close_notify);
// ack waits for the receiver's close, the acknowledgement, and releases the connection. Each
// batch has its own connection, so one acknowledgement never covers another batch. ack must be
// called exactly once, also to abandon the batch (with ctx ended it returns at once). An error
// from Send has released the connection already.
func (s *SyslogTLS) Send(ctx context.Context, msgs [][]byte) (ack func() error, err error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrNotAcknowledged, s.cfg.Address, err)
	}
	// The context ends the delivery at once, wherever it is.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	release := func() {
		stop()
		conn.Close()
	}
	if err := s.write(conn, msgs); err != nil {
		release()
		return nil, err
	}
	return func() error {
		defer release()
		// The receiver sends nothing but its own close; anything it does send is discarded.
		if _, err := io.Copy(io.Discard, conn); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", ErrNotAcknowledged, ctx.Err())
			}
			return fmt.Errorf("%w: waiting for %s to close: %w", ErrNotAcknowledged, s.cfg.Address, err)
		}
		return nil
	}, nil
}

// write frames and writes msgs, then closes the sending side and sets the deadline of the wait
// for the receiver's close.
func (s *SyslogTLS) write(conn *tls.Conn, msgs [][]byte) error {
	w := bufio.NewWriterSize(conn, 64<<10)
	var prefix [24]byte
	for _, m := range msgs {
		// Frame(m), written in two parts rather than copied into a new slice.
		_, err := w.Write(append(strconv.AppendInt(prefix[:0], int64(len(m)), 10), ' '))
		if err == nil {
			_, err = w.Write(m)
		}
		if err != nil {
			return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, s.cfg.Address, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, s.cfg.Address, err)
	}
	if err := conn.CloseWrite(); err != nil {
		return fmt.Errorf("%w: close_notify to %s: %w", ErrNotAcknowledged, s.cfg.Address, err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(s.cfg.AckTimeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAcknowledged, err)
	}
	return nil
}
