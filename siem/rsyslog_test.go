package siem_test

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	rsyslogd "github.com/tunnelplane/tunnelplane/internal/rsyslog"
	"github.com/tunnelplane/tunnelplane/siem"
)

// rsyslog is a real rsyslogd (internal/rsyslog) listening with imtcp over TLS, writing what it
// receives to a file, one line per message: "MSGID STRUCTURED-DATA MSG".
type rsyslog struct {
	*rsyslogd.Server
	pool *x509.CertPool
}

func startRsyslog(t *testing.T) *rsyslog {
	t.Helper()
	srv, err := rsyslogd.New(t.TempDir())
	if errors.Is(err, rsyslogd.ErrNotInstalled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv.Direct = true // the close then confirms the batch is in the file: a kill loses nothing
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &rsyslog{Server: srv, pool: srv.TLSConfig().RootCAs}
}

func (r *rsyslog) restart(t *testing.T) {
	t.Helper()
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
}

func (r *rsyslog) sender(t *testing.T, dial func(ctx context.Context, network, address string) (net.Conn, error)) *siem.SyslogTLS {
	t.Helper()
	s, err := siem.NewSyslogTLS(siem.SyslogTLSConfig{Address: r.Address(), TLS: r.TLSConfig(), AckTimeout: 20 * time.Second, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// received is what rsyslog wrote: sink sequence → event ids seen with it.
func (r *rsyslog) received(t *testing.T) map[uint64][]string {
	t.Helper()
	f, err := os.Open(r.Out)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[uint64][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		p := sdParams(sc.Text())
		seq, err := strconv.ParseUint(p["seq"], 10, 64)
		if err != nil {
			continue // a line cut by a kill
		}
		got[seq] = append(got[seq], p["eventId"])
	}
	return got
}

// tail is the last n bytes rsyslog wrote.
func (r *rsyslog) tail(t *testing.T, n int64) string {
	t.Helper()
	f, err := os.Open(r.Out)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ocsfBody(e siem.Entry) ([]byte, error) { return siem.OCSF(e, siem.DefaultProduct("test")) }

// sdParams are the structured data's parameters of a line rsyslog wrote (MSGID [SD] MSG).
func sdParams(line string) map[string]string {
	p := map[string]string{}
	if i := strings.Index(line, "] "); i >= 0 {
		line = line[:i+1]
	}
	for _, m := range sdParam.FindAllStringSubmatch(line, -1) {
		p[m[1]] = m[2]
	}
	return p
}

// messages are n syslog messages of events in format (siem.Raw or OCSF) with sequence numbers
// from first, each padded with pad bytes after its event.
func messages(t *testing.T, format func(siem.Entry) ([]byte, error), first uint64, n, pad int) (msgs [][]byte, ids map[uint64]string) {
	t.Helper()
	ids = map[uint64]string{}
	all := samples()
	types := allTypes()
	for i := range n {
		seq := first + uint64(i)
		rec := record(t, seq, all[types[i%len(types)]], domain.Metadata{Actor: "alice"})
		e := siem.Entry{Record: rec, Seq: seq}
		body, err := format(e)
		if err != nil {
			t.Fatal(err)
		}
		body = append(body, strings.Repeat(" ", pad)...)
		sev, _ := siem.SeverityID(e)
		m, err := siem.Syslog(siem.SyslogConfig{Hostname: "cp-1"}, e, sev, body)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
		ids[seq] = rec.EventID.String()
	}
	return msgs, ids
}

// A batch delivered to rsyslog over TLS arrives whole: every message once, as one message each
// (octet counting), with its event id and sequence in rsyslog's parse of the structured data.
func TestBatchesReachRsyslogOverTLS(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	s := r.sender(t, nil)
	msgs, ids := messages(t, ocsfBody, 1, 3000, 0)
	if err := s.Deliver(context.Background(), msgs); err != nil {
		t.Fatalf("deliver: %v", err)
	}
	var got map[uint64][]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = r.received(t)
		if len(got) == len(ids) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for seq, id := range ids {
		if len(got[seq]) != 1 || got[seq][0] != id {
			t.Fatalf("sequence %d: rsyslog has %q, want once %s (%d of %d sequences arrived)", seq, got[seq], id, len(got), len(ids))
		}
	}
}

// Delivery counts only what the receiver confirmed: a receiver that is gone, or dies while a
// batch is on its way, is an error to retry, never a silent success; after a restart the
// retried batch arrives, and the duplicates carry the same event ids.
func TestAnUnconfirmedBatchIsAnErrorAndItsRetryArrives(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	// The sender's connection counts what it wrote, so the receiver can be stopped mid-batch.
	var written atomic.Int64
	s := r.sender(t, func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, n: &written}, nil
	})
	// A batch far larger than the socket buffers between the two (40 MB).
	msgs, ids := messages(t, siem.Raw, 1, 20000, 2<<10)
	done := make(chan error, 1)
	go func() { done <- s.Deliver(context.Background(), msgs) }()
	// Once 8 MB are on their way, freeze the receiver (the sender's writes then stall on full
	// buffers with most of the batch unsent), and kill it.
	deadline := time.Now().Add(20 * time.Second)
	for written.Load() < 8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes written within 20s", written.Load())
		}
		time.Sleep(time.Millisecond)
	}
	r.Freeze()
	select {
	case err := <-done:
		t.Fatalf("the batch ended before the receiver was frozen (%v): the test proved nothing; make the batch larger", err)
	case <-time.After(200 * time.Millisecond):
	}
	r.Kill()
	if err := <-done; !errors.Is(err, siem.ErrNotAcknowledged) {
		t.Fatalf("a batch cut by the receiver's death: %v, want ErrNotAcknowledged", err)
	}
	if err := s.Deliver(context.Background(), msgs[:1]); !errors.Is(err, siem.ErrNotAcknowledged) {
		t.Fatalf("a batch to no receiver: %v, want ErrNotAcknowledged", err)
	}
	// The same port again, so the sender's address holds.
	r.restart(t)
	s = r.sender(t, nil)
	if err := s.Deliver(context.Background(), msgs); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	// rsyslog writes in order: once the retry's last message is in the file, all of it is.
	last := fmt.Sprintf(`seq="%d"`, len(msgs))
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(r.tail(t, 64<<10), last) {
		if time.Now().After(deadline) {
			t.Fatal("the retry's last message did not arrive within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := r.received(t)
	dups := 0
	for seq, id := range ids {
		if len(got[seq]) == 0 {
			t.Fatalf("sequence %d never arrived", seq)
		}
		for _, g := range got[seq] {
			if g != id {
				t.Fatalf("sequence %d arrived with event id %s, want %s", seq, g, id)
			}
		}
		dups += len(got[seq]) - 1
	}
	if dups == 0 {
		t.Fatal("no duplicates: the first attempt delivered nothing before the kill, so the test proved nothing")
	}
}

// countingConn counts the bytes written through it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}
