package wsconn

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"unicode/utf8"
)

// frameReader turns the frames arriving on the server side of a connection into a stream. The
// server is where the heavy direction (agent to node) arrives, so it parses frames itself: it
// unmasks eight bytes at a time and reads in large pieces while data keeps coming, yet an idle
// connection holds only a small inline buffer. (The client side reads through gorilla: there,
// gorilla's buffered reader may already hold bytes that followed the handshake response.)
//
// It accepts what RFC 6455 allows a client to send: binary messages, fragmented or not,
// control frames between fragments, and nothing else (no text, no extensions).
type frameReader struct {
	nc         net.Conn
	wantMasked bool
	onPing     func([]byte)
	onClose    func(code int, text string)

	small    [smallReadSize]byte
	big      *[]byte // pooled while data flows, nil when idle
	buf      []byte  // small[:] or *big
	r, w     int     // unread bytes are buf[r:w]
	lastFull bool    // the last read filled the buffer: more is waiting

	remain int64 // payload left in the current data frame
	masked bool
	key    [4]byte
	keyPos int
	inMsg  bool // a fragmented message is open
}

const (
	smallReadSize = 2048
	bigReadSize   = 64 << 10
	// maxFrame bounds a frame's declared length. The writer here sends at most MaxPending per
	// frame; larger frames are legal WebSocket but not what our peers send.
	maxFrame = 64 << 20
)

var bigReadPool = sync.Pool{New: func() any { b := make([]byte, bigReadSize); return &b }}

func newFrameReader(nc net.Conn, wantMasked bool) *frameReader {
	fr := &frameReader{nc: nc, wantMasked: wantMasked}
	fr.buf = fr.small[:]
	return fr
}

// errFrame marks a peer that broke the framing rules.
func errFrame(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Read returns stream bytes. Errors are final: the caller keeps them.
func (fr *frameReader) Read(p []byte) (int, error) {
	for {
		if fr.remain > 0 {
			if fr.r == fr.w {
				if err := fr.fill(1, false); err != nil {
					return 0, err
				}
			}
			n := min(len(p), fr.w-fr.r)
			if int64(n) > fr.remain {
				n = int(fr.remain)
			}
			copy(p[:n], fr.buf[fr.r:fr.r+n])
			if fr.masked {
				fr.keyPos = mask(fr.key, fr.keyPos, p[:n])
			}
			fr.r += n
			fr.remain -= int64(n)
			return n, nil
		}
		if err := fr.nextFrame(); err != nil {
			return 0, err
		}
	}
}

// fill reads until at least k bytes are unread. An idle connection blocks reading into the
// small inline buffer; a read that fills it means data is streaming in, and reading switches to
// a big pooled buffer until a read no longer fills that one.
//
// io.EOF is returned only at a frame boundary outside a fragmented message (atBoundary); an
// end anywhere else is io.ErrUnexpectedEOF.
func (fr *frameReader) fill(k int, atBoundary bool) error {
	for fr.w-fr.r < k {
		switch {
		case fr.r == fr.w:
			fr.r, fr.w = 0, 0
			if fr.big != nil && !fr.lastFull {
				bigReadPool.Put(fr.big)
				fr.big, fr.buf = nil, fr.small[:]
			}
		case len(fr.buf)-fr.w < k-(fr.w-fr.r):
			fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
			fr.r = 0
		}
		n, err := fr.nc.Read(fr.buf[fr.w:])
		fr.w += n
		fr.lastFull = fr.w == len(fr.buf)
		if err != nil {
			if fr.w-fr.r >= k {
				return nil // usable; the error comes back on the next read
			}
			if err == io.EOF && (fr.w > fr.r || !atBoundary || fr.inMsg) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if fr.big == nil && fr.lastFull {
			b := bigReadPool.Get().(*[]byte)
			fr.w = copy(*b, fr.buf[fr.r:fr.w])
			fr.r = 0
			fr.big, fr.buf = b, *b
		}
	}
	return nil
}

// release returns the big buffer (on close).
func (fr *frameReader) release() {
	if fr.big != nil {
		bigReadPool.Put(fr.big)
		fr.big, fr.buf, fr.r, fr.w = nil, fr.small[:], 0, 0
	}
}

// nextFrame consumes one frame header, and control frames whole.
func (fr *frameReader) nextFrame() error {
	if err := fr.fill(2, true); err != nil {
		return err
	}
	b0, b1 := fr.buf[fr.r], fr.buf[fr.r+1]
	fin, op, masked := b0&0x80 != 0, int(b0&0x0f), b1&0x80 != 0
	hlen := 2
	switch b1 & 0x7f {
	case 126:
		hlen += 2
	case 127:
		hlen += 8
	}
	if masked {
		hlen += 4
	}
	if b0&0x70 != 0 {
		return errFrame("reserved bits set")
	}
	if masked != fr.wantMasked {
		return errFrame("frame masking is %v, want %v", masked, fr.wantMasked)
	}
	if err := fr.fill(hlen, false); err != nil {
		return err
	}
	h := fr.buf[fr.r : fr.r+hlen]
	var length int64
	switch b1 & 0x7f {
	case 126:
		length = int64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		v := binary.BigEndian.Uint64(h[2:])
		if v > maxFrame {
			return errFrame("frame of %d bytes", v)
		}
		length = int64(v)
	default:
		length = int64(b1 & 0x7f)
	}
	if masked {
		copy(fr.key[:], h[hlen-4:])
	}
	fr.r += hlen

	if op >= 8 { // control frame
		if !fin || length > 125 {
			return errFrame("control frame fragmented or longer than 125 bytes")
		}
		if err := fr.fill(int(length), false); err != nil {
			return err
		}
		var payload [125]byte
		pl := payload[:length]
		copy(pl, fr.buf[fr.r:fr.r+int(length)])
		fr.r += int(length)
		if masked {
			mask(fr.key, 0, pl)
		}
		switch op {
		case 8:
			code, text := 1005, ""
			if len(pl) == 1 {
				return errFrame("close frame with a one-byte payload")
			}
			if len(pl) >= 2 {
				code, text = int(binary.BigEndian.Uint16(pl)), string(pl[2:])
				if !utf8.ValidString(text) {
					return errFrame("close reason is not UTF-8")
				}
			}
			if fr.onClose != nil {
				fr.onClose(code, text)
			}
			if code == 1000 || code == 1001 || code == 1005 {
				return io.EOF
			}
			return fmt.Errorf("%w: %d %s", ErrPeerClosed, code, text)
		case 9:
			if fr.onPing != nil {
				fr.onPing(pl)
			}
		case 10: // pong: nothing to do
		default:
			return errFrame("unknown control opcode %d", op)
		}
		return nil
	}

	switch op {
	case 0:
		if !fr.inMsg {
			return errFrame("continuation frame outside a message")
		}
	case 2:
		if fr.inMsg {
			return errFrame("new message inside a fragmented one")
		}
	case 1:
		return errFrame("text message, want binary")
	default:
		return errFrame("unknown opcode %d", op)
	}
	fr.inMsg = !fin
	fr.remain, fr.masked, fr.keyPos = length, masked, 0
	return nil
}
