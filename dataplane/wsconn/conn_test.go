package wsconn

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pairRaw returns a dialled gorilla connection and the accepted one, over real loopback TCP.
func pairRaw(t testing.TB) (client, server *websocket.Conn) {
	t.Helper()
	accepted := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{ReadBufferSize: ReadBufferSize, WriteBufferPool: WriteBufferPool}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		accepted <- ws // hijacked: the handler returns and the connection lives on
	}))
	t.Cleanup(srv.Close)
	d := websocket.Dialer{ReadBufferSize: ReadBufferSize, WriteBufferPool: WriteBufferPool}
	cws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sws := <-accepted
	return cws, sws
}

func pair(t testing.TB) (client, server *Conn) {
	t.Helper()
	cws, sws := pairRaw(t)
	client, server = New(cws, Options{Client: true}), New(sws, Options{})
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// pattern is a deterministic byte stream that reveals reordering and loss.
func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestStreamBothWaysWithOddWriteSizes(t *testing.T) {
	client, server := pair(t)
	for _, dir := range []struct {
		name string
		w, r *Conn
	}{{"client to server", client, server}, {"server to client", server, client}} {
		t.Run(dir.name, func(t *testing.T) {
			want := pattern(3<<20+17, 7)
			errc := make(chan error, 1)
			go func() {
				rng := rand.New(rand.NewPCG(1, 2))
				p := want
				for len(p) > 0 {
					n := min(len(p), 1+rng.IntN(100<<10))
					if _, err := dir.w.Write(p[:n]); err != nil {
						errc <- err
						return
					}
					p = p[n:]
				}
				errc <- nil
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(dir.r, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("stream corrupted")
			}
		})
	}
	if client.BytesWritten() != server.BytesRead() || server.BytesWritten() != client.BytesRead() {
		t.Fatalf("byte counters disagree: c->s %d/%d s->c %d/%d", client.BytesWritten(), server.BytesRead(), server.BytesWritten(), client.BytesRead())
	}
}

// Small writes made while a frame is on the wire share the next frame: fewer frames than writes.
func TestSmallWritesAreCoalesced(t *testing.T) {
	cws, sws := pairRaw(t)
	client := New(cws, Options{Client: true})
	defer client.Close()
	defer sws.Close()
	const writes, size = 2000, 100
	msg := bytes.Repeat([]byte("x"), size)
	go func() {
		for range writes {
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()
	frames, total := 0, 0
	for total < writes*size {
		_, p, err := sws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		frames++
		total += len(p)
	}
	if total != writes*size {
		t.Fatalf("received %d bytes, want %d", total, writes*size)
	}
	if frames > writes/4 {
		t.Fatalf("%d writes became %d frames; want them coalesced", writes, frames)
	}
	t.Logf("%d writes -> %d frames", writes, frames)
}

func TestReadDeadline(t *testing.T) {
	client, _ := pair(t)
	if err := client.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := client.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a net.Error timeout, got %T %v", err, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline took %v", d)
	}
}

// A writer stuck because the peer stopped reading is released by the write deadline and by Close.
func TestBlockedWriteEndsAtDeadlineAndOnClose(t *testing.T) {
	for _, how := range []string{"deadline", "close"} {
		t.Run(how, func(t *testing.T) {
			client, _ := pair(t) // the server side never reads
			big := make([]byte, 1<<20)
			errc := make(chan error, 1)
			go func() {
				for {
					if _, err := client.Write(big); err != nil {
						errc <- err
						return
					}
				}
			}()
			// Wait until the writer is blocked on back-pressure (the queue is full).
			poll.Until(t, 5*time.Second, "the condition", func() bool {
				client.mu.Lock()
				defer client.mu.Unlock()
				return client.waiters > 0
			})
			switch how {
			case "deadline":
				client.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				err := waitErr(t, errc)
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("want a timeout, got %v", err)
				}
			case "close":
				go client.Close()
				err := waitErr(t, errc)
				if !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("want closed, got %v", err)
				}
			}
		})
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	client, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := client.Read(make([]byte, 10))
		errc <- err
	}()
	client.Close()
	if err := waitErr(t, errc); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := client.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := client.Close(); err == nil {
		t.Fatal("second close should report the connection as closed")
	}
}

func TestPeerSeesCloseReasonAndNormalCloseIsEOF(t *testing.T) {
	client, server := pair(t)
	server.CloseWithReason(4000, "replaced")
	_, err := client.Read(make([]byte, 1))
	if !errors.Is(err, ErrPeerClosed) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("read after the peer closed with a reason: %v", err)
	}
	if code, text, ok := client.PeerCloseReason(); !ok || code != 4000 || text != "replaced" {
		t.Fatalf("close reason %d %q %v", code, text, ok)
	}

	client2, server2 := pair(t)
	if _, err := server2.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	server2.Close()
	got, err := io.ReadAll(client2)
	if err != nil || string(got) != "last words" {
		t.Fatalf("queued data then a normal close: %q %v", got, err)
	}
}

// A plain gorilla peer's pings are answered, and its text messages are refused.
func TestPingIsAnsweredAndTextIsRefused(t *testing.T) {
	cws, sws := pairRaw(t)
	server := New(sws, Options{})
	defer server.Close()
	defer cws.Close()
	pong := make(chan string, 1)
	cws.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := cws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := cws.WriteMessage(websocket.TextMessage, []byte("text")); err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 10))
		readErr <- err
	}()
	go func() { cws.ReadMessage() }() // pongs are handled while reading
	select {
	case s := <-pong:
		if s != "hi" {
			t.Fatalf("pong %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	if err := waitErr(t, readErr); !errors.Is(err, ErrProtocol) {
		t.Fatalf("text message: %v", err)
	}
}

func TestMaskMatchesNaive(t *testing.T) {
	for n := range 70 {
		for pos := range 4 {
			b := pattern(n, uint64(n))
			want := bytes.Clone(b)
			key := [4]byte{0x12, 0x34, 0x56, 0x78}
			for i := range want {
				want[i] ^= key[(pos+i)&3]
			}
			if next := mask(key, pos, b); next != (pos+n)&3 || !bytes.Equal(b, want) {
				t.Fatalf("n=%d pos=%d", n, pos)
			}
		}
	}
}

// FuzzReassembly writes a stream in pieces whose sizes the fuzzer picks (seeded with the write
// pattern of SSH packets: a 4-byte length, a 4 KiB buffered write, then the rest) and reads it
// back in other pieces: the reader must see exactly the bytes written, whatever the framing.
func FuzzReassembly(f *testing.F) {
	f.Add([]byte("SSH-2.0-tunnelplane\r\n"), []byte{21}, []byte{5})
	f.Add(pattern(9000, 3), []byte{4, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 12}, []byte{1, 200})
	f.Add(pattern(40000, 4), []byte{0, 0, 1}, []byte{255})
	client, server := pair(f)
	f.Fuzz(func(t *testing.T, data, writeSizes, readSizes []byte) {
		if len(data) == 0 {
			return
		}
		// Bound the work per input: a megabyte read one byte at a time says nothing new.
		data = data[:min(len(data), 1<<18)]
		errc := make(chan error, 1)
		go func() {
			p := data
			for i := 0; len(p) > 0; i++ {
				n := len(p)
				if len(writeSizes) > 0 {
					n = min(n, 1+int(writeSizes[i%len(writeSizes)])*int(writeSizes[(i+1)%len(writeSizes)]+1))
				}
				if _, err := client.Write(p[:n]); err != nil {
					errc <- err
					return
				}
				p = p[n:]
			}
			errc <- nil
		}()
		got := make([]byte, 0, len(data))
		for i := 0; len(got) < len(data); i++ {
			n := len(data) - len(got)
			if len(readSizes) > 0 {
				n = min(n, 1+int(readSizes[i%len(readSizes)]))
			}
			m, err := server.Read(got[len(got) : len(got)+n])
			if err != nil {
				t.Fatal(err)
			}
			got = got[:len(got)+m]
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatal("reassembled stream differs")
		}
	})
}

func waitErr(t *testing.T, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
		return nil
	}
}
