package siem_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/siem"
)

// appendOrgs writes n organization.created events to the log.
func appendOrgs(t *testing.T, st *eventstore.Store, n int) {
	t.Helper()
	for range n {
		org := uuid.NewString()
		b, err := json.Marshal(domain.OrganizationCreated{OrgID: org, Name: "o" + org[:8], CreatedBy: "root"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Append(context.Background(), domain.OrgStream(org), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: b}); err != nil {
			t.Fatal(err)
		}
	}
}

// The log reaches rsyslog over TLS at least once, through a receiver killed and restarted and a
// forwarder stopped mid-stream and started again: every record arrives, a duplicate carries the
// same event id under the same sequence number, and the sequence has no hole.
func TestTheLogReachesRsyslogThroughRestarts(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	log := logtest.Start(t, 10*time.Millisecond)
	const total = 3000
	appendOrgs(t, log.Store, total/3)

	transport, err := siem.NewSyslogTLS(siem.SyslogTLSConfig{Address: r.Address(), TLS: r.TLSConfig(), DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	newForwarder := func() *siem.Forwarder {
		f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "rsyslog-test", Store: log.Store, Pool: log.Pool, Transport: transport,
			Format: siem.SyslogFormat(siem.SyslogConfig{Hostname: "cp-1"}, ocsfBody), BatchSize: 100,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return f
	}
	waitSeq := func(f *siem.Forwarder, atLeast uint64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for f.Status().Seq < atLeast {
			if time.Now().After(deadline) {
				t.Fatalf("the sink delivered up to sequence %d within 60s, want %d (%+v)", f.Status().Seq, atLeast, f.Status())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	f := newForwarder()
	waitSeq(f, 200)
	// The receiver dies mid-stream while more is written, and comes back on the same port.
	r.Kill()
	appendOrgs(t, log.Store, total/3)
	deadline := time.Now().Add(10 * time.Second)
	for f.Status().Retries == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no failed delivery while the receiver was down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.restart(t)
	waitSeq(f, 1200)
	// The forwarder stops mid-stream (its cursor may lag what was delivered) and starts again.
	f.Stop()
	appendOrgs(t, log.Store, total/3)
	f = newForwarder()
	n, err := log.Store.Head(context.Background()) // the number of records, the genesis at 0 included
	if err != nil {
		t.Fatal(err)
	}
	waitSeq(f, n) // no filter: every record takes a number
	f.Stop()

	// rsyslog writes in order: wait until the last sequence number is in its file.
	last := fmt.Sprintf(`seq="%d"`, n)
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(r.tail(t, 64<<10), last) {
		if time.Now().After(deadline) {
			t.Fatalf("sequence %d is not in rsyslog's file within 30s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := r.received(t)
	recs, err := log.Store.ReadAll(context.Background(), 0, int(n))
	if err != nil {
		t.Fatal(err)
	}
	for i, rec := range recs {
		seq := uint64(i) + 1 // no filter: the record at position p carries sequence p+1
		ids := got[seq]
		if len(ids) == 0 {
			t.Fatalf("sequence %d (position %d) never reached rsyslog", seq, rec.Position)
		}
		for _, id := range ids {
			if id != rec.EventID.String() {
				t.Fatalf("sequence %d arrived as event %s, want %s: a number was reused for another event", seq, id, rec.EventID)
			}
		}
	}
	if uint64(len(got)) != n || uint64(len(recs)) != n {
		t.Fatalf("rsyslog holds %d sequence numbers, the log %d records", len(got), n)
	}
}

// Batches reach the receiver one after another, in order, although the forwarder reads,
// formats and opens the next connection ahead, and puts the batches formatted while rsyslog
// reads on the same connection: with nothing failing, rsyslog's file holds the sequence 1, 2,
// 3 … exactly, each number once, so a receiver can read a jump as a gap. No connection carries
// more than BatchesPerDelivery batches.
func TestBatchesReachRsyslogInOrder(t *testing.T) {
	t.Parallel()
	r := startRsyslog(t)
	log := logtest.Start(t, 10*time.Millisecond)
	appendOrgs(t, log.Store, 1500)
	syslogTLS, err := siem.NewSyslogTLS(siem.SyslogTLSConfig{Address: r.Address(), TLS: r.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	transport := &countingSender{SyslogTLS: syslogTLS}
	// The sink reads the log without signatures and formats each batch into shared buffers.
	f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "order-test", Store: log.Store, Pool: log.Pool, Transport: transport,
		AppendFormat: siem.AppendSyslogOCSF(siem.SyslogConfig{Hostname: "cp-1"}, siem.DefaultProduct("test")), Unsigned: true,
		BatchSize: 50, BatchesPerDelivery: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	n, err := log.Store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 60*time.Second, "the whole log delivered", func() bool { return f.Status().Seq >= n })
	if st := f.Status(); st.Retries != 0 {
		t.Fatalf("a delivery failed (%s): the test needs none", st.LastError)
	}
	out, err := os.ReadFile(r.Out)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1)
	for line := range strings.Lines(string(out)) {
		_, rest, _ := strings.Cut(line, ` seq="`)
		seq, _, _ := strings.Cut(rest, `"`)
		if seq != strconv.FormatUint(want, 10) {
			t.Fatalf("message %d of rsyslog's file has sequence %q, want %d: batches arrived out of order", want, seq, want)
		}
		want++
	}
	if want != n+1 {
		t.Fatalf("rsyslog's file holds %d messages, the log %d records", want-1, n)
	}
	transport.mu.Lock()
	defer transport.mu.Unlock()
	batches := 0
	for _, k := range transport.acked {
		if k < 1 || k > 3 {
			t.Fatalf("a connection carried %d batches (at most 3): %v", k, transport.acked)
		}
		batches += k
	}
	if batches != int(n+49)/50 || len(transport.acked) >= batches {
		t.Fatalf("%d batches of 50 on %d connections (%v): none carried more than one", batches, len(transport.acked), transport.acked)
	}
}

// countingSender is a syslog transport that notes how many batches each acknowledged
// connection carried.
type countingSender struct {
	*siem.SyslogTLS
	mu    sync.Mutex
	acked []int
}

func (c *countingSender) Open(ctx context.Context) (siem.Delivery, error) {
	d, err := c.SyslogTLS.Open(ctx)
	if err != nil {
		return nil, err
	}
	return &countingDelivery{Delivery: d, c: c}, nil
}

type countingDelivery struct {
	siem.Delivery
	c     *countingSender
	sends int
}

func (d *countingDelivery) Send(msgs [][]byte) error {
	d.sends++
	return d.Delivery.Send(msgs)
}

// SendFramed: SyslogTLS's deliveries take framed spans, and so the forwarder sends them.
func (d *countingDelivery) SendFramed(spans [][]byte) error {
	d.sends++
	return d.Delivery.(siem.FramedDelivery).SendFramed(spans)
}

func (d *countingDelivery) Ack() error {
	err := d.Delivery.Ack()
	if err == nil {
		d.c.mu.Lock()
		d.c.acked = append(d.c.acked, d.sends)
		d.c.mu.Unlock()
	}
	return err
}
