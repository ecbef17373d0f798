package bustest_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

func appendNodeLost(t testing.TB, s *storeEnv, n int) {
	t.Helper()
	stream := domain.NodeStream(uuid.NewString())
	for i := range n {
		payload, _ := json.Marshal(domain.NodeLost{NodeID: stream, LastSeen: time.Now().UTC()})
		if _, err := s.store.Append(ctxT(t), stream, eventstore.AnyVersion, eventstore.EventData{Type: domain.TypeNodeLost, Payload: payload,
			Metadata: []byte(`{"actor":"system:test","correlation_id":"c-` + strconv.Itoa(i) + `"}`)}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
}

func startRelay(t testing.TB, s *storeEnv, url string, reg prometheus.Registerer) *controlbus.Relay {
	t.Helper()
	r, err := controlbus.NewRelay(controlbus.RelayConfig{Names: nm(t), Store: s.store, Conn: connect(t, url), BatchSize: 16, Registerer: reg,
		RetryInterval: 100 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

func waitRelayed(t testing.TB, j jetstream.JetStream, s *storeEnv) uint64 {
	t.Helper()
	head, err := s.store.Head(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		st, err := j.Stream(ctxT(t), nm(t).EventsStream())
		if err != nil {
			return err
		}
		info, err := st.Info(ctxT(t))
		if err != nil {
			return err
		}
		if info.State.LastSeq < head {
			return errorsf("relayed %d of %d records", info.State.LastSeq, head)
		}
		return nil
	})
	return head
}

// collect reads the relayed log from the start until it has want events.
func collect(t testing.TB, j jetstream.JetStream, opts nodebus.SubscribeEventsOptions, want int) []wire.RelayedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
	defer cancel()
	var got []wire.RelayedEvent
	err := nodebus.SubscribeEvents(ctx, j, opts, func(_ context.Context, ev wire.RelayedEvent) error {
		got = append(got, ev)
		if len(got) == want {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("subscribe events: %v (after %d events)", err, len(got))
	}
	return got
}

// The relay publishes the whole log in order; restarted, it neither skips nor repeats, and a
// second relay running by mistake cannot duplicate or reorder anything.
func TestRelayResumesWithoutSkipsOrRepeats(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	j := js(t, connect(t, n.url()))
	appendNodeLost(t, s, 40)
	if last, err := controlbus.LastRelayedPosition(ctxT(t), j, nm(t)); err != nil || last != -1 {
		t.Fatalf("last relayed position of an empty TP_EVENTS: %d, %v", last, err)
	}

	reg := prometheus.NewRegistry()
	first := startRelay(t, s, n.url(), reg)
	waitRelayed(t, j, s)
	// The stream can hold the last record before the relay has read its acknowledgement; stopped
	// then, the relay would not count it (and its successor finds it in the stream).
	poll.Check(t, 5*time.Second, 10*time.Millisecond, func() error {
		if got := metric(t, reg, "tunnelplane_relay_published_total"); got != 41 {
			return errorsf("first relay counted %v published, want 41", got)
		}
		return nil
	})
	first.Stop()
	first.Stop() // safe twice

	appendNodeLost(t, s, 30)
	startRelay(t, s, n.url(), nil)
	startRelay(t, s, n.url(), nil) // a second relay by mistake
	appendNodeLost(t, s, 30)
	head := waitRelayed(t, j, s)

	st, err := j.Stream(ctxT(t), nm(t).EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != head || info.State.LastSeq != head {
		t.Fatalf("TP_EVENTS holds %d messages up to sequence %d; the log has %d records", info.State.Msgs, info.State.LastSeq, head)
	}
	if last, err := controlbus.LastRelayedPosition(ctxT(t), j, nm(t)); err != nil || last != int64(head)-1 {
		t.Fatalf("last relayed position %d, %v; want %d", last, err, head-1)
	}

	got := collect(t, j, nodebus.SubscribeEventsOptions{Names: nm(t), Logger: testLogger()}, int(head))
	recs, err := s.store.ReadAll(ctxT(t), 0, int(head))
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range got {
		r := recs[i]
		if ev.Position != uint64(i) || ev.EventID != r.EventID || ev.Type != r.Type || ev.StreamID != r.StreamID ||
			ev.StreamVersion != r.StreamVersion || ev.KeyID != r.KeyID || !ev.RecordedAt.Equal(r.RecordedAt) ||
			string(ev.Payload) != string(r.Payload) || string(ev.Metadata) != string(r.Metadata) {
			t.Fatalf("relayed event %d = %+v, the log has %+v", i, ev, r)
		}
	}
	if got[0].Type != eventstore.TypeGenesis {
		t.Errorf("the relayed log starts with %s, want the genesis record", got[0].Type)
	}
	msg, err := st.GetMsg(ctxT(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != nm(t).EventSubject(recs[4].Type) || msg.Header.Get(wire.HeaderPosition) != "4" ||
		!strings.HasPrefix(msg.Header.Get(jetstream.MsgIDHeader), recs[4].EventID.String()+".") {
		t.Errorf("message 5: subject %s, headers %v", msg.Subject, msg.Header)
	}
	if got := metric(t, reg, "tunnelplane_relay_published_total"); got != 41 {
		t.Errorf("first relay published %v, want 41 (genesis + 40)", got)
	}

	// A node that rebuilt up to position 50 (a snapshot) reads on from there.
	tail := collect(t, j, nodebus.SubscribeEventsOptions{Names: nm(t), FromPosition: 50}, int(head)-50)
	if tail[0].Position != 50 || tail[len(tail)-1].Position != head-1 {
		t.Errorf("from position 50: got %d..%d", tail[0].Position, tail[len(tail)-1].Position)
	}
}

// A durable consumer remembers what it handled; a failing handler gets the same event again.
func TestSubscribeEventsDurable(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	j := js(t, connect(t, n.url()))
	appendNodeLost(t, s, 9)
	startRelay(t, s, n.url(), nil)
	waitRelayed(t, j, s) // positions 0..9

	opts := nodebus.SubscribeEventsOptions{Names: nm(t), Durable: "node_view_test", RetryDelay: 50 * time.Millisecond, Logger: testLogger()}
	var mu sync.Mutex
	attempts := map[uint64]int{}
	ctx, cancel := context.WithTimeout(ctxT(t), 10*time.Second)
	var got []uint64
	err := nodebus.SubscribeEvents(ctx, j, opts, func(_ context.Context, ev wire.RelayedEvent) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[ev.Position]++
		if ev.Position == 3 && attempts[3] == 1 {
			return errors.New("transient")
		}
		got = append(got, ev.Position)
		if len(got) == 10 {
			cancel()
		}
		return nil
	})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("subscribe: %v", err)
	}
	for i, p := range got {
		if p != uint64(i) {
			t.Fatalf("positions %v, want 0..9 in order with 3 retried", got)
		}
	}
	if attempts[3] != 2 {
		t.Errorf("position 3 handled %d times, want 2 (one failure, one retry)", attempts[3])
	}

	appendNodeLost(t, s, 5)
	waitRelayed(t, j, s)
	rest := collect(t, j, opts, 5)
	if rest[0].Position != 10 || rest[4].Position != 14 {
		t.Errorf("after restart the durable consumer read %d..%d, want 10..14", rest[0].Position, rest[4].Position)
	}
}

// TP_EVENTS filled from one database is foreign to another: the check says so (relaying the second
// log after the first would mix them), and after a reset the second log relays from its start.
func TestForeignEventsStreamIsDetectedAndReset(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	j := js(t, connect(t, n.url()))
	a, b := newStore(t), newStore(t)
	if err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), b.store); err != nil {
		t.Fatalf("empty stream: %v", err)
	}
	appendNodeLost(t, a, 5)
	appendNodeLost(t, b, 9)
	ra := startRelay(t, a, n.url(), nil)
	waitRelayed(t, j, a)
	ra.Stop()
	if err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), a.store); err != nil {
		t.Fatalf("own log: %v", err)
	}
	err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), b.store)
	if !errors.Is(err, controlbus.ErrForeignEvents) {
		t.Fatalf("another log's stream: %v", err)
	}
	short := newStore(t) // a log that ends before the stream does
	if err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), short.store); !errors.Is(err, controlbus.ErrForeignEvents) {
		t.Fatalf("a stream longer than the log: %v", err)
	}

	if err := controlbus.ResetEventsStream(ctxT(t), j, controlbus.StreamsConfig{Names: nm(t)}); err != nil {
		t.Fatal(err)
	}
	if last, err := controlbus.LastRelayedPosition(ctxT(t), j, nm(t)); err != nil || last != -1 {
		t.Fatalf("after the reset: last position %d, %v", last, err)
	}
	startRelay(t, b, n.url(), nil)
	head := waitRelayed(t, j, b)
	got := collect(t, j, nodebus.SubscribeEventsOptions{Names: nm(t), Logger: testLogger()}, int(head))
	recs, err := b.store.ReadAll(ctxT(t), 0, int(head))
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range got {
		if ev.Position != uint64(i) || ev.EventID != recs[i].EventID {
			t.Fatalf("after the reset, relayed %d is %d/%s, the log has %s", i, ev.Position, ev.EventID, recs[i].EventID)
		}
	}
	if err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), b.store); err != nil {
		t.Fatalf("after the reset and relay: %v", err)
	}
	// Messages someone else published after the relay's last do not make the stream foreign,
	// and the relay goes on after its own last message.
	for _, pos := range []string{"999999", strconv.FormatUint(head, 10), "x"} {
		forged := &nats.Msg{Subject: nm(t).EventSubject("tunnel.deleted"), Data: []byte(`{"position":1}`), Header: nats.Header{}}
		forged.Header.Set(wire.HeaderPosition, pos)
		if _, err := j.PublishMsg(ctxT(t), forged); err != nil {
			t.Fatal(err)
		}
	}
	if err := controlbus.CheckEventsStream(ctxT(t), j, nm(t), b.store); err != nil {
		t.Fatalf("with forged messages after the relay's: %v", err)
	}
	appendNodeLost(t, b, 2)
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if last, err := controlbus.LastRelayedPosition(ctxT(t), j, nm(t)); err != nil || last != int64(head)+1 {
			return errorsf("last relayed position %d (%v), want %d", last, err, head+1)
		}
		return nil
	})
	if id, ok, err := nodebus.RelayedEventID(ctxT(t), j, nm(t), 3); err != nil || !ok || id != recs[3].EventID.String() {
		t.Fatalf("relayed event id at 3: %q %v %v", id, ok, err)
	}
	if _, ok, err := nodebus.RelayedEventID(ctxT(t), j, nm(t), head+5); err != nil || ok {
		t.Fatalf("relayed event id past the end: %v %v", ok, err)
	}
}

// A message published ahead with a coming record's event id as its Nats-Msg-Id (a node chooses
// its facts' ids) does not keep that record out of TP_EVENTS.
func TestRelayedRecordCannotBeSquatted(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	j := js(t, connect(t, n.url()))
	startRelay(t, s, n.url(), nil)
	appendNodeLost(t, s, 2)
	waitRelayed(t, j, s)
	id := uuid.Must(uuid.NewV7())
	squat := &nats.Msg{Subject: nm(t).EventSubject(domain.TypeNodeLost), Data: []byte(`{}`), Header: nats.Header{}}
	squat.Header.Set(nats.MsgIdHdr, id.String())
	if _, err := j.PublishMsg(ctxT(t), squat); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(domain.NodeLost{NodeID: uuid.NewString(), LastSeen: time.Now().UTC()})
	res, err := s.store.Append(ctxT(t), domain.NodeStream(uuid.NewString()), eventstore.AnyVersion,
		eventstore.EventData{ID: id, Type: domain.TypeNodeLost, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		got, ok, err := nodebus.RelayedEventID(ctxT(t), j, nm(t), res.LastPosition)
		if err != nil || !ok || got != id.String() {
			return errorsf("position %d relayed as %q (%v, %v)", res.LastPosition, got, ok, err)
		}
		return nil
	})
}

// A message published under a stored record's exact message id (seen in flight) before the relay
// publishes it makes the relay publish the record under a fresh id, not skip it.
func TestRelayRepublishesASquattedRecord(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	j := js(t, connect(t, n.url()))
	appendNodeLost(t, s, 1)
	recs, err := s.store.ReadAll(ctxT(t), 1, 1)
	if err != nil || len(recs) != 1 {
		t.Fatal(err)
	}
	squat := &nats.Msg{Subject: nm(t).EventSubject(domain.TypeNodeLost), Data: []byte(`{}`), Header: nats.Header{}}
	squat.Header.Set(nats.MsgIdHdr, recs[0].EventID.String()+"."+hex.EncodeToString(recs[0].Hash[:8]))
	if _, err := j.PublishMsg(ctxT(t), squat); err != nil {
		t.Fatal(err)
	}
	startRelay(t, s, n.url(), nil)
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		got, ok, err := nodebus.RelayedEventID(ctxT(t), j, nm(t), 1)
		if err != nil || !ok || got != recs[0].EventID.String() {
			return errorsf("position 1 relayed as %q (%v, %v)", got, ok, err)
		}
		return nil
	})
}
