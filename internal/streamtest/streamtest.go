// Package streamtest holds live calls open for tests — a server-sent event stream, a WebSocket —
// counts what arrives on them and tells when and how they ended. It owns the reading goroutine
// of each call and ends it at the test's cleanup; it must not be imported outside tests.
package streamtest

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// Stream is one live call being read.
type Stream struct {
	name     string
	messages atomic.Int64
	done     chan struct{}
	stop     func()

	mu        sync.Mutex
	endedAt   time.Time
	err       error
	closeCode int // a WebSocket's close status (0: none came)
}

func newStream(t testing.TB, name string, stop func()) *Stream {
	s := &Stream{name: name, done: make(chan struct{}), stop: stop}
	t.Cleanup(func() { s.stop(); <-s.done })
	return s
}

func (s *Stream) end(err error, code int) {
	s.mu.Lock()
	s.endedAt, s.err, s.closeCode = time.Now(), err, code
	s.mu.Unlock()
	close(s.done)
}

// SSE sends req with client and reads its event stream; the test fails unless the answer is a
// 200 text/event-stream.
func SSE(t testing.TB, client *http.Client, req *http.Request) *Stream {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("event stream %s: %v", req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := bufio.NewReader(resp.Body).Peek(512)
		resp.Body.Close()
		t.Fatalf("event stream %s: %d %s %s", req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := newStream(t, "event stream "+req.URL.Path, func() { resp.Body.Close() })
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if bytes.HasPrefix(sc.Bytes(), []byte("data:")) {
				s.messages.Add(1)
			}
		}
		err := sc.Err()
		if err == nil {
			err = errors.New("the stream ended")
		}
		s.end(err, 0)
	}()
	return s
}

// WebSocket dials url with header and reads its messages; the test fails unless it connects.
func WebSocket(t testing.TB, url string, header http.Header) *Stream {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("WebSocket %s: %d %v", url, status, err)
	}
	s := newStream(t, "WebSocket "+url, func() { c.Close() })
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				code := 0
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					code = ce.Code
				}
				s.end(err, code)
				return
			}
			s.messages.Add(1)
		}
	}()
	return s
}

// Messages is how many messages (events) arrived.
func (s *Stream) Messages() int64 { return s.messages.Load() }

// Done is closed when the stream ended.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Ended reports when and how the stream ended (zero time while it runs) and, for a WebSocket,
// the close status it received (0: none).
func (s *Stream) Ended() (at time.Time, closeCode int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endedAt, s.closeCode, s.err
}

// Flowing waits until n more messages arrived, failing the test if the stream ends or stalls
// for within.
func (s *Stream) Flowing(t testing.TB, n int64, within time.Duration) {
	t.Helper()
	want := s.Messages() + n
	poll.Until(t, within, s.name+" flowing", func() bool {
		select {
		case <-s.done:
			_, _, err := s.Ended()
			t.Fatalf("%s ended: %v", s.name, err)
		default:
		}
		return s.Messages() >= want
	})
}

// EndsWithin waits for the stream to end, up to within after since, and returns how long after
// since it ended; the test fails if it is still open then.
func (s *Stream) EndsWithin(t testing.TB, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(time.Until(since.Add(within))):
		t.Fatalf("%s still open %v after %v", s.name, within, since.Format(time.StampMilli))
	}
	at, _, _ := s.Ended()
	return at.Sub(since)
}
