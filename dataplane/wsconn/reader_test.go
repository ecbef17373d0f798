package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
	"unicode/utf8"
)

// chunkedConn serves data in pieces whose sizes come from splits, then io.EOF: frames arrive
// split across reads at arbitrary points.
type chunkedConn struct {
	net.Conn
	data   []byte
	splits []byte
	i      int
}

func (c *chunkedConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.splits) > 0 {
		n = min(n, 1+int(c.splits[c.i%len(c.splits)]))
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// refDecode is a deliberately naive decoder of a whole client-to-server byte string: the
// stream it carries and how it ends (eof, unexpected, protocol or closed). frameReader must
// agree with it however the bytes are split.
func refDecode(b []byte) ([]byte, string) {
	var out []byte
	inMsg := false
	for {
		if len(b) == 0 {
			if inMsg {
				return out, "unexpected"
			}
			return out, "eof"
		}
		if len(b) < 2 {
			return out, "unexpected"
		}
		fin, op, masked := b[0]&0x80 != 0, int(b[0]&0x0f), b[1]&0x80 != 0
		if b[0]&0x70 != 0 || !masked {
			return out, "protocol"
		}
		hlen, l7 := 6, int(b[1]&0x7f)
		if l7 == 126 {
			hlen += 2
		} else if l7 == 127 {
			hlen += 8
		}
		if len(b) < hlen {
			return out, "unexpected"
		}
		length := uint64(l7)
		if l7 == 126 {
			length = uint64(binary.BigEndian.Uint16(b[2:]))
		} else if l7 == 127 {
			length = binary.BigEndian.Uint64(b[2:])
			if length > maxFrame {
				return out, "protocol"
			}
		}
		key := b[hlen-4 : hlen]
		b = b[hlen:]
		if op >= 8 && (!fin || length > 125) {
			return out, "protocol"
		}
		if op < 8 {
			switch {
			case op == 0 && !inMsg, op == 2 && inMsg, op == 1, op > 2:
				return out, "protocol"
			}
		}
		if uint64(len(b)) < length {
			if op < 8 {
				for i := range b {
					out = append(out, b[i]^key[i%4])
				}
			}
			return out, "unexpected"
		}
		payload := make([]byte, length)
		for i := range payload {
			payload[i] = b[i] ^ key[i%4]
		}
		b = b[length:]
		switch op {
		case 0, 2:
			out = append(out, payload...)
			inMsg = !fin
		case 8:
			if len(payload) == 1 {
				return out, "protocol"
			}
			if len(payload) == 0 {
				return out, "eof"
			}
			if !utf8.Valid(payload[2:]) {
				return out, "protocol"
			}
			switch binary.BigEndian.Uint16(payload) {
			case 1000, 1001, 1005:
				return out, "eof"
			}
			return out, "closed"
		case 9, 10:
		default:
			return out, "protocol"
		}
	}
}

func classify(err error) string {
	switch {
	case err == io.EOF:
		return "eof"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.Is(err, ErrPeerClosed):
		return "closed"
	}
	return "other: " + err.Error()
}

func decodeWithReader(data, splits []byte, readSizes []byte) ([]byte, string) {
	fr := newFrameReader(&chunkedConn{data: data, splits: splits}, true)
	var out []byte
	buf := make([]byte, 70000)
	for i := 0; ; i++ {
		n := len(buf)
		if len(readSizes) > 0 {
			n = 1 + int(readSizes[i%len(readSizes)])*37
		}
		m, err := fr.Read(buf[:n])
		out = append(out, buf[:m]...)
		if err != nil {
			return out, classify(err)
		}
	}
}

// clientFrame builds a masked frame as a client sends it.
func clientFrame(fin bool, op int, payload []byte, key [4]byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	f := appendHeader(nil, op, len(payload), true)
	f[0] = b0
	f = append(f, key[:]...)
	start := len(f)
	f = append(f, payload...)
	mask(key, 0, f[start:])
	return f
}

// gorillaFrames records what a real gorilla client puts on the wire.
func gorillaFrames(t testing.TB) []byte {
	cws, sws := pairRaw(t)
	defer cws.Close()
	defer sws.Close()
	raw := sws.NetConn()
	go func() {
		cws.WriteMessage(2, []byte("SSH-2.0-tunnelplane_agent_1\r\n"))
		cws.WriteControl(9, []byte("ping"), time.Now().Add(time.Second))
		cws.WriteMessage(2, bytes.Repeat([]byte{7}, 300))
		cws.WriteMessage(2, pattern(70000, 9))
		cws.WriteControl(8, []byte{0x03, 0xe8, 'b', 'y', 'e'}, time.Now().Add(time.Second))
		cws.NetConn().Close()
	}()
	got, err := io.ReadAll(raw)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestFrameReaderReadsGorillaFramesSplitAnywhere(t *testing.T) {
	wire := gorillaFrames(t)
	want, end := refDecode(wire)
	if end != "eof" || len(want) != 29+300+70000 {
		t.Fatalf("reference decoder: %d bytes, %s", len(want), end)
	}
	for split := range 40 {
		got, gend := decodeWithReader(wire, []byte{byte(split), byte(split * 7), 255}, []byte{byte(split)})
		if gend != end || !bytes.Equal(got, want) {
			t.Fatalf("split %d: %d bytes, %s", split, len(got), gend)
		}
	}
}

func TestFrameReaderRefusesWhatClientsMayNotSend(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	bin := clientFrame(true, 2, []byte("ok"), key)
	cases := map[string][]byte{
		"text":                 clientFrame(true, 1, []byte("hi"), key),
		"unmasked":             append([]byte{0x82, 2}, "hi"...),
		"reserved bit":         append([]byte{0xc2}, bin[1:]...),
		"orphan continuation":  clientFrame(true, 0, []byte("x"), key),
		"message inside one":   append(clientFrame(false, 2, []byte("a"), key), clientFrame(true, 2, []byte("b"), key)...),
		"fragmented ping":      clientFrame(false, 9, nil, key),
		"long ping":            clientFrame(true, 9, make([]byte, 126), key),
		"one-byte close":       clientFrame(true, 8, []byte{1}, key),
		"close not utf-8":      clientFrame(true, 8, []byte{3, 232, 0xff}, key),
		"unknown opcode":       clientFrame(true, 3, nil, key),
		"huge declared length": {0x82, 0xff, 0x7f, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
	}
	for name, wire := range cases {
		t.Run(name, func(t *testing.T) {
			if _, end := decodeWithReader(wire, nil, nil); end != "protocol" {
				t.Fatalf("got %s", end)
			}
		})
	}
	if _, end := decodeWithReader(clientFrame(true, 8, []byte{0x0f, 0xa0, 'x'}, key), nil, nil); end != "closed" {
		t.Fatalf("close 4000: %s", end)
	}
	if out, end := decodeWithReader(append(clientFrame(false, 2, []byte("ab"), key), clientFrame(true, 0, []byte("cd"), key)...), nil, nil); end != "eof" || string(out) != "abcd" {
		t.Fatalf("fragmented message: %q %s", out, end)
	}
}

// An idle connection keeps only its small inline buffer; a burst borrows a big one.
func TestFrameReaderHoldsNoBigBufferWhenIdle(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	wire := append(clientFrame(true, 2, pattern(200000, 1), key), clientFrame(true, 2, []byte("small"), key)...)
	fr := newFrameReader(&chunkedConn{data: wire}, true)
	buf := make([]byte, 4096)
	total := 0
	sawBig := false
	for total < 200005 {
		n, err := fr.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		sawBig = sawBig || fr.big != nil
	}
	if !sawBig {
		t.Fatal("a 200 KB burst was read through the small buffer")
	}
	// Next read hits EOF: the big buffer must be gone before it blocks.
	if _, err := fr.Read(buf); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if fr.big != nil {
		t.Fatal("big buffer kept after the burst")
	}
}

// FuzzServerFrames compares frameReader with the naive decoder on any bytes, split anyhow and
// read in any sizes. Seeds are real gorilla client frames.
func FuzzServerFrames(f *testing.F) {
	wire := gorillaFrames(f)
	f.Add(wire[:200], []byte{0}, []byte{3})
	f.Add(wire[:2000], []byte{5, 1, 200}, []byte{0, 100})
	f.Add(clientFrame(true, 8, []byte{0x0f, 0xa0, 'x'}, [4]byte{1, 1, 1, 1}), []byte{}, []byte{})
	f.Add([]byte{0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4}, []byte{1}, []byte{1})
	f.Fuzz(func(t *testing.T, data, splits, readSizes []byte) {
		want, wantEnd := refDecode(data)
		got, gotEnd := decodeWithReader(data, splits, readSizes)
		if gotEnd != wantEnd || !bytes.Equal(got, want) {
			t.Fatalf("reader: %d bytes, %s; reference: %d bytes, %s", len(got), gotEnd, len(want), wantEnd)
		}
	})
}
