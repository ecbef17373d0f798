package siem

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// A batch formatted with AppendFormat holds the messages Format writes, each its own slice:
// appending to one never writes into the next, and a message longer than a buffer's room
// (or than a whole buffer) starts a new one.
func TestAppendFormatBatchesAreFormatsMessages(t *testing.T) {
	t.Parallel()
	c, p := SyslogConfig{Hostname: "cp-1"}, DefaultProduct("test")
	f := &Forwarder{cfg: ForwarderConfig{AppendFormat: AppendSyslogOCSF(c, p)}}
	f.largest.Store(1024)
	var recs []eventstore.Record
	for i, n := range []int{10, 300, 2 * formatBuffer, 20, 5000, 40, formatBuffer / 2, 7} {
		payload, err := json.Marshal(domain.OrganizationCreated{OrgID: uuid.NewString(), Name: strings.Repeat("n", n)})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventstore.Record{Position: uint64(i + 10), EventID: uuid.New(), StreamID: "org-x", Type: domain.TypeOrganizationCreated,
			RecordedAt: time.Date(2026, 12, 2, 6, 0, i, 0, time.UTC), Payload: payload, Hash: make([]byte, 32)})
	}
	format := SyslogOCSF(c, p)
	check := func(bt batch, recs []eventstore.Record, seq uint64) {
		t.Helper()
		for i, m := range bt.msgs {
			want, err := format(Entry{Record: &recs[i], Seq: seq + uint64(i) + 1})
			if err != nil {
				t.Fatal(err)
			}
			if string(m) != string(want) || cap(m) != len(m) {
				t.Fatalf("message %d (cap %d, len %d) is not Format's:\n%.200s\n%.200s", i, cap(m), len(m), m, want)
			}
		}
	}
	bt, n, err := f.format(recs, 10, 0)
	if err != nil || n != len(recs) || len(bt.msgs) != len(recs) {
		t.Fatalf("format: %d of %d, %d messages, %v", n, len(recs), len(bt.msgs), err)
	}
	check(bt, recs, 0)
	// Appending to a message leaves the next as it was.
	next := string(bt.msgs[4])
	_ = append(bt.msgs[3], "overwrite"...)
	if string(bt.msgs[4]) != next {
		t.Fatal("appending to a message changed the next")
	}
	// A released batch's buffers hold the next batches' messages, whole; a batch keeps its
	// own until it is released.
	f.release(&bt)
	slices.Reverse(recs)
	b2, _, err := f.format(recs, 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	check(b2, recs, 100)
	b3, _, err := f.format(recs[2:], 10, 200)
	if err != nil {
		t.Fatal(err)
	}
	check(b3, recs[2:], 200)
	check(b2, recs, 100)
	if len(b2.bufs) == 0 {
		t.Fatalf("%d buffers listed", len(b2.bufs))
	}

	// With a Framer each message's frame is written before it, and the spans are the framed
	// messages in order, whole: what octet counting puts on the wire.
	for _, from := range []int{0, 3} {
		// A forwarder of its own, whose pool holds no buffer of an earlier batch large enough
		// to take every message (sync.Pool may or may not hand one back): the long messages
		// start buffers of their own.
		f := &Forwarder{cfg: f.cfg, framer: &SyslogTLS{}}
		f.largest.Store(1024)
		bt, n, err := f.format(recs[from:], 10, 300)
		if err != nil || n != len(recs)-from {
			t.Fatalf("format framed: %d of %d, %v", n, len(recs)-from, err)
		}
		check(bt, recs[from:], 300)
		var want, got []byte
		for _, m := range bt.msgs {
			want = append(f.framer.AppendFrame(want, len(m)), m...)
		}
		for _, span := range bt.spans {
			got = append(got, span...)
		}
		if string(got) != string(want) {
			t.Fatalf("the spans (%d) are not the framed messages:\n%.300q\n%.300q", len(bt.spans), got, want)
		}
		if len(bt.spans) < 2 || len(bt.spans) > len(bt.bufs)+1 {
			t.Fatalf("%d spans over %d buffers", len(bt.spans), len(bt.bufs))
		}
		f.release(&bt)
	}
}
