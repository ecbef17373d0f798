package wsconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// headroom in front of every chunk holds the frame header (2 + 8 length + 4 mask bytes), so a
	// frame that fits one chunk goes out with one plain write.
	headroom = 14
	// chunkSize is the payload of one pooled chunk: two maximum-size SSH packets.
	chunkSize = 64 << 10
	// DefaultMaxPending is how much Write queues before it waits for the flusher. It bounds both
	// the memory of a busy connection and the size of one frame.
	DefaultMaxPending = 256 << 10
	// ReadLimit bounds one incoming message. Frames are streamed, never held whole, so this only
	// rejects peers that do not follow the framing this package writes.
	ReadLimit = 16 << 20
	// ReadBufferSize is the gorilla read buffer the node and the agent use: small, because reads
	// of whole SSH packets bypass it and every idle connection keeps it.
	ReadBufferSize = 2048
	// closeGrace is how long Close lets queued data and the close frame reach a slow peer.
	closeGrace = 500 * time.Millisecond
	// inlineGap: a Write that comes this long after the previous one finds an idle connection
	// and sends its frame itself, saving the hand-off to a flusher goroutine (latency of a
	// lone request or a token stream). Writes closer together go through the flusher, which
	// lets them share frames and syscalls.
	inlineGap = 200 * time.Microsecond
)

// Sentinel errors; match with errors.Is.
var (
	// ErrClosed: the connection was closed locally (it also matches net.ErrClosed).
	ErrClosed = fmt.Errorf("wsconn: %w", net.ErrClosed)
	// ErrPeerClosed: the peer sent a close frame with a code other than normal closure.
	ErrPeerClosed = errors.New("wsconn: closed by peer")
	// ErrProtocol: the peer sent something other than binary messages.
	ErrProtocol = errors.New("wsconn: protocol violation")
)

// WriteBufferPool is handed to gorilla's Upgrader and Dialer. Data frames never use gorilla's
// write buffer (this package writes them), so with a pool set no idle connection holds one.
var WriteBufferPool websocket.BufferPool = &sync.Pool{}

type chunk struct {
	n   int // payload bytes after the headroom
	buf [headroom + chunkSize]byte
}

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

func getChunk() *chunk { c := chunkPool.Get().(*chunk); c.n = 0; return c }

// Options configure a Conn.
type Options struct {
	// Client is true on the side that dialled: RFC 6455 requires it to mask its frames.
	Client bool
	// MaxPending bytes are queued before Write blocks (default DefaultMaxPending).
	MaxPending int
}

// Conn is a net.Conn over a WebSocket connection. Read and Write are each safe for one goroutine
// at a time (as for any net.Conn used by one reader and one writer); Close and the deadline
// setters may be called from anywhere.
type Conn struct {
	ws         *websocket.Conn // client side only: gorilla reads there
	nc         net.Conn
	proto      string
	client     bool
	maxPending int

	// read side; rmu serializes Read.
	rmu  sync.Mutex
	fr   *frameReader // server side: frames parsed here
	r    io.Reader    // client side: gorilla's current message
	rerr error        // sticky: a failed read leaves the frame state unknown

	// write queue; mu guards the fields below.
	mu        sync.Mutex
	pending   []*chunk
	pendBytes int
	flushDone chan struct{} // non-nil while a flusher runs; closed when it exits
	werr      error         // sticky: a failed write may have sent part of a frame
	closed    bool
	waiters   int           // writers waiting for space
	space     chan struct{} // closed (and replaced) when the flusher takes the queue
	wdl       *deadline
	lastWrite time.Time
	inlining  bool      // a Write is sending its own frame
	inline    [1]*chunk // that frame

	// wmu serializes frame writes to nc: data frames from the flusher, and control frames
	// (pong, close). Over TLS a frame is several writes, which must not interleave.
	wmu sync.Mutex
	iov [][]byte // flusher only

	closeOnce     sync.Once
	peerCloseCode atomic.Int32
	peerCloseText atomic.Pointer[string]
	bytesRead     atomic.Int64
	bytesWritten  atomic.Int64
}

// New wraps ws. From here on only the Conn writes to the connection. On the server side
// (Options.Client false) it reads the socket itself, so ws must come straight from
// Upgrader.Upgrade with nothing read through gorilla yet; on the client side gorilla reads.
func New(ws *websocket.Conn, opts Options) *Conn {
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	c := &Conn{
		ws:         ws,
		nc:         ws.NetConn(),
		proto:      ws.Subprotocol(),
		client:     opts.Client,
		maxPending: opts.MaxPending,
		space:      make(chan struct{}),
		wdl:        newDeadline(),
	}
	if !opts.Client {
		// gorilla refuses clients that send before the handshake completes, so it has buffered
		// nothing: the frames can be read from the socket directly.
		c.fr = newFrameReader(c.nc, true)
		c.ws = nil // nothing of gorilla's is needed any more: let its buffers go
		c.fr.onPing = func(p []byte) { _ = c.writeControl(websocket.PongMessage, p) }
		c.fr.onClose = func(code int, text string) {
			c.peerCloseCode.Store(int32(code))
			c.peerCloseText.Store(&text)
		}
		return c
	}
	ws.SetReadLimit(ReadLimit)
	// gorilla's default handlers answer through WriteControl, which moves the connection's write
	// deadline as a side effect; answer through this Conn instead.
	ws.SetPingHandler(func(data string) error {
		_ = c.writeControl(websocket.PongMessage, []byte(data))
		return nil
	})
	ws.SetCloseHandler(func(code int, text string) error {
		c.peerCloseCode.Store(int32(code))
		c.peerCloseText.Store(&text)
		return nil
	})
	return c
}

// Subprotocol is the negotiated WebSocket subprotocol.
func (c *Conn) Subprotocol() string { return c.proto }

// PeerCloseReason is the code and text of the close frame the peer sent, if it sent one.
func (c *Conn) PeerCloseReason() (code int, text string, ok bool) {
	t := c.peerCloseText.Load()
	if t == nil {
		return 0, "", false
	}
	return int(c.peerCloseCode.Load()), *t, true
}

// BytesRead is the message payload received so far.
func (c *Conn) BytesRead() int64 { return c.bytesRead.Load() }

// BytesWritten is the message payload sent so far.
func (c *Conn) BytesWritten() int64 { return c.bytesWritten.Load() }

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Read implements net.Conn: the payloads of consecutive binary messages form the stream.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.fr != nil {
		if c.rerr != nil {
			return 0, c.rerr
		}
		n, err := c.fr.Read(p)
		c.bytesRead.Add(int64(n))
		if err != nil {
			c.fr.release()
			c.rerr = c.readError(err)
			return n, c.rerr
		}
		return n, nil
	}
	for {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				c.rerr = c.readError(err)
				return 0, c.rerr
			}
			if typ != websocket.BinaryMessage {
				c.rerr = fmt.Errorf("%w: message type %d, want binary", ErrProtocol, typ)
				return 0, c.rerr
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		c.bytesRead.Add(int64(n))
		switch {
		case err == io.EOF:
			c.r = nil
			if n > 0 {
				return n, nil
			}
		case err != nil:
			c.rerr = c.readError(err)
			return n, c.rerr
		default:
			return n, nil
		}
	}
}

func (c *Conn) readError(err error) error {
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce):
		if ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway {
			return io.EOF
		}
		return fmt.Errorf("%w: %d %s", ErrPeerClosed, ce.Code, ce.Text)
	case errors.Is(err, net.ErrClosed):
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return ErrClosed
		}
		return err
	case isTimeout(err):
		// gorilla rewraps timeouts; give callers the error os.IsTimeout and errors.Is know.
		return fmt.Errorf("wsconn read: %w", os.ErrDeadlineExceeded)
	case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrProtocol), errors.Is(err, ErrPeerClosed):
		return err
	default:
		return fmt.Errorf("wsconn read: %w", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Write implements net.Conn. It copies p into the queue and returns; it blocks only while
// MaxPending bytes are already queued.
func (c *Conn) Write(p []byte) (int, error) {
	n := 0
	c.mu.Lock()
	now := time.Now()
	idle := now.Sub(c.lastWrite) > inlineGap
	c.lastWrite = now
	if idle && len(p) > 0 && len(p) <= chunkSize && c.flushDone == nil && len(c.pending) == 0 && !c.inlining {
		return c.writeInline(p)
	}
	for len(p) > 0 {
		if err := c.writeErrLocked(); err != nil {
			c.mu.Unlock()
			return n, err
		}
		if c.pendBytes >= c.maxPending {
			space := c.space
			c.waiters++
			c.mu.Unlock()
			select {
			case <-space:
			case <-c.wdl.wait():
			}
			c.mu.Lock()
			c.waiters--
			continue
		}
		var ch *chunk
		if k := len(c.pending); k > 0 && c.pending[k-1].n < chunkSize {
			ch = c.pending[k-1]
		} else {
			ch = getChunk()
			c.pending = append(c.pending, ch)
		}
		m := copy(ch.buf[headroom+ch.n:], p)
		ch.n += m
		c.pendBytes += m
		n += m
		p = p[m:]
		if c.flushDone == nil {
			c.flushDone = make(chan struct{})
			go c.flush(c.flushDone)
		}
	}
	c.mu.Unlock()
	return n, nil
}

// writeInline sends p as one frame from the calling goroutine; c.mu is held on entry.
func (c *Conn) writeInline(p []byte) (int, error) {
	if err := c.writeErrLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	ch := getChunk()
	ch.n = copy(ch.buf[headroom:], p)
	c.inlining = true
	c.inline[0] = ch
	// Take the frame lock before letting go of the queue lock: a Write arriving meanwhile
	// queues and starts a flusher, which then writes after this frame, in order.
	c.wmu.Lock()
	c.mu.Unlock()
	err := c.writeFrameLocked(c.inline[:], ch.n)
	c.wmu.Unlock()
	c.mu.Lock()
	c.inline[0] = nil
	c.inlining = false
	if err != nil && c.werr == nil {
		c.werr = wrapWriteErr(err)
	}
	err = c.werr
	c.mu.Unlock()
	chunkPool.Put(ch)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func wrapWriteErr(err error) error {
	if isTimeout(err) {
		return fmt.Errorf("wsconn write: %w", os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("wsconn write: %w", err)
}

func (c *Conn) writeErrLocked() error {
	switch {
	case c.closed:
		return ErrClosed
	case c.werr != nil:
		return c.werr
	case c.wdl.expired():
		return os.ErrDeadlineExceeded
	}
	return nil
}

// flush sends the queue until it is empty, then exits: idle connections have no flusher.
func (c *Conn) flush(done chan struct{}) {
	var batch []*chunk
	for {
		// Let the goroutines that are ready to run go first: under load some of them are about
		// to write too, and their packets then share this frame and its syscall. With nothing
		// else runnable this returns at once, so a lone write is not delayed.
		c.yield()
		c.mu.Lock()
		if len(c.pending) == 0 || c.werr != nil {
			c.flushDone = nil
			c.mu.Unlock()
			close(done)
			return
		}
		batch = append(batch[:0], c.pending...)
		clear(c.pending)
		c.pending = c.pending[:0]
		total := c.pendBytes
		c.pendBytes = 0
		if c.waiters > 0 {
			close(c.space)
			c.space = make(chan struct{})
		}
		c.mu.Unlock()

		err := c.writeFrame(batch, total)
		for i, ch := range batch {
			chunkPool.Put(ch)
			batch[i] = nil
		}
		if err != nil {
			c.mu.Lock()
			if c.werr == nil {
				c.werr = wrapWriteErr(err)
			}
			for i, ch := range c.pending {
				chunkPool.Put(ch)
				c.pending[i] = nil
			}
			c.pending = c.pending[:0]
			c.pendBytes = 0
			if c.waiters > 0 {
				close(c.space)
				c.space = make(chan struct{})
			}
			c.mu.Unlock()
		}
	}
}

// yield lets the other runnable goroutines go first, as long as they keep adding to the queue
// (a few rounds at most).
func (c *Conn) yield() {
	c.mu.Lock()
	n := c.pendBytes
	c.mu.Unlock()
	for range 4 {
		runtime.Gosched()
		c.mu.Lock()
		m := c.pendBytes
		c.mu.Unlock()
		if m == n || m >= c.maxPending/2 {
			return
		}
		n = m
	}
}

// writeFrame sends the chunks as one final binary frame.
func (c *Conn) writeFrame(batch []*chunk, total int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(batch, total)
}

// writeFrameLocked is writeFrame with c.wmu already held.
func (c *Conn) writeFrameLocked(batch []*chunk, total int) error {
	first := batch[0]
	var hdr [headroom]byte
	h := appendHeader(hdr[:0], websocket.BinaryMessage, total, c.client)
	if c.client {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], rand.Uint32())
		h = append(h, key[:]...)
		pos := 0
		for _, ch := range batch {
			pos = mask(key, pos, ch.buf[headroom:headroom+ch.n])
		}
	}
	start := headroom - len(h)
	copy(first.buf[start:], h)
	return c.sendLocked(batch, start, total)
}

// sendLocked writes a prepared frame; c.wmu is held.
func (c *Conn) sendLocked(batch []*chunk, start, total int) error {
	first := batch[0]
	var err error
	if len(batch) == 1 {
		_, err = c.nc.Write(first.buf[start : headroom+first.n])
	} else {
		iov := append(c.iov[:0], first.buf[start:headroom+first.n])
		for _, ch := range batch[1:] {
			iov = append(iov, ch.buf[headroom:headroom+ch.n])
		}
		bufs := net.Buffers(iov)
		_, err = bufs.WriteTo(c.nc)
		clear(iov)
		c.iov = iov[:0]
	}
	if err == nil {
		c.bytesWritten.Add(int64(total))
	}
	return err
}

// appendHeader appends a final frame's header without the masking key.
func appendHeader(b []byte, opcode, length int, masked bool) []byte {
	b0 := byte(0x80 | opcode)
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case length < 126:
		return append(b, b0, m|byte(length))
	case length <= 0xffff:
		return append(b, b0, m|126, byte(length>>8), byte(length))
	default:
		b = append(b, b0, m|127)
		return binary.BigEndian.AppendUint64(b, uint64(length))
	}
}

// mask XORs b with the masking key starting at key offset pos and returns the next offset.
func mask(key [4]byte, pos int, b []byte) int {
	if len(b) >= 8 {
		var k8 [8]byte
		for i := range k8 {
			k8[i] = key[(pos+i)&3]
		}
		kw := binary.LittleEndian.Uint64(k8[:])
		i := 0
		for ; i+32 <= len(b); i += 32 {
			s := b[i : i+32 : i+32]
			binary.LittleEndian.PutUint64(s[0:], binary.LittleEndian.Uint64(s[0:])^kw)
			binary.LittleEndian.PutUint64(s[8:], binary.LittleEndian.Uint64(s[8:])^kw)
			binary.LittleEndian.PutUint64(s[16:], binary.LittleEndian.Uint64(s[16:])^kw)
			binary.LittleEndian.PutUint64(s[24:], binary.LittleEndian.Uint64(s[24:])^kw)
		}
		for ; i+8 <= len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^kw)
		}
		// i is a multiple of 8, so the key offset is unchanged for the tail.
		b = b[i:]
	}
	for i := range b {
		b[i] ^= key[pos&3]
		pos++
	}
	return pos & 3
}

// writeControl sends a control frame (at most 125 bytes of payload).
func (c *Conn) writeControl(opcode int, payload []byte) error {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	var buf [2 + 4 + 125]byte
	b := appendHeader(buf[:0], opcode, len(payload), c.client)
	if c.client {
		var key [4]byte
		binary.LittleEndian.PutUint32(key[:], rand.Uint32())
		b = append(b, key[:]...)
		start := len(b)
		b = append(b, payload...)
		mask(key, 0, b[start:])
	} else {
		b = append(b, payload...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// Close implements net.Conn: queued data gets a short grace period to go out, then a normal
// close frame, then the connection closes. Calling it again does nothing.
func (c *Conn) Close() error { return c.CloseWithReason(websocket.CloseNormalClosure, "") }

// CloseWithReason is Close with a close code and a reason the peer can show (at most 123 bytes).
func (c *Conn) CloseWithReason(code int, reason string) error {
	err := ErrClosed
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		if c.waiters > 0 {
			close(c.space)
			c.space = make(chan struct{})
		}
		done := c.flushDone
		c.mu.Unlock()
		// The deadline also ends a flusher stuck on a peer that stopped reading.
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
		if done != nil {
			<-done
		}
		if len(reason) > 123 {
			reason = reason[:123]
		}
		_ = c.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason))
		err = c.nc.Close()
	})
	return err
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn. As with TLS, a read that times out leaves the frame state
// unknown, so every later read fails too.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn: it bounds both a Write waiting for queue space and the
// flusher's write to the network.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wdl.set(t)
	return c.nc.SetWriteDeadline(t)
}

var _ net.Conn = (*Conn)(nil)
