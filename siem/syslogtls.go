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
	d, err := s.Open(ctx)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Send(msgs); err != nil {
		return err
	}
	return d.Ack()
}

// Open connects for one batch (Deliver in steps, so that a forwarder connects for the next
// batch while the receiver confirms the last). ctx ends the delivery at once, wherever it is.
func (s *SyslogTLS) Open(ctx context.Context) (Delivery, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", ErrNotAcknowledged, s.cfg.Address, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return &syslogDelivery{s: s, ctx: ctx, conn: conn, stop: stop}, nil
}

// syslogDelivery is one delivery's connection: the batches it carries, then the close.
type syslogDelivery struct {
	s    *SyslogTLS
	ctx  context.Context // Open's, only to tell a cancelled delivery from a failed one
	conn *tls.Conn
	w    *bufio.Writer // from the first Send
	// started: something was written (begin).
	started bool
	stop    func() bool
	closed  bool
}

// errClosedBeforeSend: the receiver closed a connection opened ahead before a batch was sent
// on it. Its close would otherwise read as the acknowledgement of the batch: sent nowhere,
// taken as delivered.
var errClosedBeforeSend = errors.New("siem: the receiver closed the connection before the batch was sent")

// Send writes msgs, framed; Ack ends the delivery. Before the first batch, a connection the
// receiver already closed (opened ahead and left waiting) is refused (errClosedBeforeSend).
func (d *syslogDelivery) Send(msgs [][]byte) error {
	if err := d.begin(); err != nil {
		return err
	}
	if d.w == nil {
		d.w = bufio.NewWriterSize(d.conn, 64<<10)
	}
	w := d.w
	var frame [MaxFrame]byte
	for _, m := range msgs {
		// Frame(m), written in two parts rather than copied into a new slice.
		_, err := w.Write(d.s.AppendFrame(frame[:0], len(m)))
		if err == nil {
			_, err = w.Write(m)
		}
		if err != nil {
			return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, d.s.cfg.Address, err)
		}
	}
	return nil
}

// SendFramed writes spans of messages framed by AppendFrame as they are: TLS records are cut
// from them directly, with no write buffer between.
func (d *syslogDelivery) SendFramed(spans [][]byte) error {
	if err := d.begin(); err != nil {
		return err
	}
	if d.w != nil {
		if err := d.w.Flush(); err != nil {
			return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, d.s.cfg.Address, err)
		}
	}
	for _, span := range spans {
		if _, err := d.conn.Write(span); err != nil {
			return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, d.s.cfg.Address, err)
		}
	}
	return nil
}

// begin checks, before the first write, that the receiver has not closed the connection (one
// opened ahead may have idled out): nothing was sent on it, so another may be opened.
func (d *syslogDelivery) begin() error {
	if d.started {
		return nil
	}
	if peerClosed(d.conn.NetConn()) {
		return fmt.Errorf("%w: %s: %w", ErrNotAcknowledged, d.s.cfg.Address, errClosedBeforeSend)
	}
	d.started = true
	return nil
}

// AppendFrame appends RFC 6587's octet-counting frame of a message of n bytes: its length and a
// space.
func (s *SyslogTLS) AppendFrame(dst []byte, n int) []byte {
	return append(strconv.AppendInt(dst, int64(n), 10), ' ')
}

// Ack closes the sending side (close_notify) once all is written, waits for the receiver's
// close, the acknowledgement of everything Send wrote, and closes.
func (d *syslogDelivery) Ack() error {
	defer d.Close()
	addr := d.s.cfg.Address
	if d.w != nil {
		if err := d.w.Flush(); err != nil {
			return fmt.Errorf("%w: write to %s: %w", ErrNotAcknowledged, addr, err)
		}
	}
	if err := d.conn.CloseWrite(); err != nil {
		return fmt.Errorf("%w: close_notify to %s: %w", ErrNotAcknowledged, addr, err)
	}
	if err := d.conn.SetReadDeadline(time.Now().Add(d.s.cfg.AckTimeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAcknowledged, err)
	}
	// The receiver sends nothing but its own close; anything it does send is discarded.
	if _, err := io.Copy(io.Discard, d.conn); err != nil {
		if d.ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrNotAcknowledged, d.ctx.Err())
		}
		return fmt.Errorf("%w: waiting for %s to close: %w", ErrNotAcknowledged, d.s.cfg.Address, err)
	}
	return nil
}

// Close abandons the delivery (or ends it, after Ack); calling it again does nothing.
func (d *syslogDelivery) Close() {
	if !d.closed {
		d.closed = true
		d.stop()
		d.conn.Close()
	}
}
