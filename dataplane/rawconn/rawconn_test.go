//go:build linux

package rawconn_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/rawconn"
)

// pair is a connected loopback TCP pair: a wrapped client and the server side as net gives it.
func pair(t *testing.T) (*rawconn.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	w, ok := rawconn.Wrap(c).(*rawconn.Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", c)
	}
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s
}

// Bytes cross both ways intact, including writes far larger than the socket buffer (the writer
// waits for room) and reads into small buffers; the peer's close is io.EOF.
func TestReadWriteBothWays(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	big := make([]byte, 8<<20)
	rand.Read(big)
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, io.LimitReader(s, int64(len(big))))
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if <-got != sha256.Sum256(big) {
		t.Fatal("the 8 MiB write arrived changed")
	}

	go func() {
		s.Write([]byte("hello over raw syscalls"))
		s.Close()
	}()
	var buf bytes.Buffer
	small := make([]byte, 5)
	for {
		n, err := c.Read(small)
		buf.Write(small[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if buf.String() != "hello over raw syscalls" {
		t.Fatalf("read %q", buf.String())
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

// Deadlines, Close and errors behave as net.Conn's: a timeout is a net.Error with Timeout() and
// os.ErrDeadlineExceeded, a read on a closed conn is net.ErrClosed, every error is a *net.OpError
// naming read or write.
func TestDeadlinesCloseAndErrors(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	var oe *net.OpError
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read past the deadline: %#v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Fatalf("the deadline took %v", d)
	}
	c.SetReadDeadline(time.Time{})

	// The peer reads nothing: writes fill the buffers and then time out. The count returned is
	// what went out: the peer then reads exactly that many bytes.
	c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &oe) || oe.Op != "write" || n >= 64<<20 {
		t.Fatalf("write past the deadline: %d, %v", n, err)
	}
	got := 0
	buf := make([]byte, 1<<20)
	for {
		s.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		m, err := s.Read(buf)
		got += m
		if err != nil {
			break
		}
	}
	if got != n {
		t.Fatalf("the write reported %d bytes, the peer received %d", n, got)
	}

	// A Read blocked when Close comes returns net.ErrClosed.
	c.SetDeadline(time.Time{})
	s.Close()
	c2, _ := pair(t)
	done := make(chan error, 1)
	go readOnce(c2, done)
	waitInIOWait(t, "rawconn_test.readOnce(", done)
	c2.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read when closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
}

// readOnce reads one byte from c and sends the error; its name marks the goroutine for
// waitInIOWait.
func readOnce(c net.Conn, done chan<- error) {
	_, err := c.Read(make([]byte, 1))
	done <- err
}

// waitInIOWait waits until the goroutine running fn is parked in the netpoller, waiting for its
// socket, so that what the test does next happens to a blocked call rather than before it
// began. A call that returns first (its result arrives on done) fails the test.
func waitInIOWait(t *testing.T, fn string, done <-chan error) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("%s returned before it blocked: %v", fn, err)
		case <-deadline:
			t.Fatalf("%s did not block in the netpoller within 5s", fn)
		case <-tick.C:
		}
	}
}

// A write to a peer that has gone is an error (EPIPE or ECONNRESET) wrapped as net does, and
// CloseWrite (a half-close) reaches the peer as EOF while it can still send.
func TestResetAndHalfClose(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(s); err != nil || len(b) != 0 {
		t.Fatalf("after CloseWrite the peer read %q, %v", b, err)
	}
	s.Write([]byte("still open this way"))
	b := make([]byte, 64)
	if n, err := c.Read(b); err != nil || string(b[:n]) != "still open this way" {
		t.Fatalf("read after half-close: %q, %v", b[:n], err)
	}

	c3, s3 := pair(t)
	s3.(*net.TCPConn).SetLinger(0)
	s3.Close() // RST
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = c3.Write(make([]byte, 1<<16))
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("write to a reset peer: %v", err)
	}
}

func TestWrapLeavesOtherConnsAlone(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rawconn.Wrap(a) != a {
		t.Fatal("a net.Pipe end was wrapped")
	}
}
