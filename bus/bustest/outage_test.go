package bustest_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// NATS goes away for 10 s while a node keeps reporting: the node spools, and once NATS is back
// every event reaches the log exactly once, in a log that still verifies.
func TestNATSOutageSpoolsAndLosesNothing(t *testing.T) {
	embeddedOnly(t)
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	startIngester(t, s, connect(t, n.url()), nil)
	reg := prometheus.NewRegistry()
	pub := newPublisher(t, nodeID, nodeKey, connect(t, n.url()), t.TempDir(), reg)
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// Traffic: a batch of two facts every 30 ms until told to stop.
	var mu sync.Mutex
	var published []uuid.UUID
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(published) }
	tctx, stopTraffic := context.WithCancel(ctx)
	trafficDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tctx.Done():
				trafficDone <- nil
				return
			case <-tick.C:
			}
			ids := []uuid.UUID{uuid.New(), uuid.New()}
			err := pub.Publish(ctx, nodebus.Fact{ID: ids[0], Event: usage(nodeID, i)}, nodebus.Fact{ID: ids[1], Event: usage(nodeID, i)})
			if err != nil {
				trafficDone <- err
				return
			}
			mu.Lock()
			published = append(published, ids...)
			mu.Unlock()
		}
	}()
	defer stopTraffic()

	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if c := count(); c < 20 {
			return errorsf("%d events published before the outage", c)
		}
		return nil
	})
	n.srv.Shutdown()
	n.srv.Shutdown() // safe twice
	outageStart := count()
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if d := pub.SpoolDepth(); d < 10 {
			return errorsf("spool depth %d during the outage", d)
		}
		return nil
	})
	// The outage itself is wall-clock time by definition; traffic continues meanwhile.
	select {
	case err := <-trafficDone:
		t.Fatalf("traffic stopped during the outage: %v", err)
	case <-time.After(10 * time.Second):
	}
	if got := metric(t, reg, "tunnelplane_event_spool_depth"); got < 10 {
		t.Errorf("tunnelplane_event_spool_depth = %v during the outage", got)
	}
	if count()-outageStart < 100 {
		t.Fatalf("only %d events accepted during the outage; Publish must not block on NATS", count()-outageStart)
	}
	n.restart()
	restarted := time.Now()

	// Keep traffic going across the recovery, then stop it.
	poll.Check(t, 20*time.Second, 20*time.Millisecond, func() error {
		if d := pub.SpoolDepth(); d != 0 {
			return errorsf("spool depth %d after NATS came back", d)
		}
		return nil
	})
	t.Logf("spool drained %s after NATS came back", time.Since(restarted))
	stopTraffic()
	if err := <-trafficDone; err != nil {
		t.Fatalf("publish: %v", err)
	}

	mu.Lock()
	want := append([]uuid.UUID(nil), published...)
	mu.Unlock()
	stream := domain.NodeFactsStream(nodeID)
	poll.Check(t, 30*time.Second, 50*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got < len(want) {
			return errorsf("%d of %d events stored", got, len(want))
		}
		return nil
	})
	t.Logf("all events stored %s after NATS came back", time.Since(restarted))
	stored := map[uuid.UUID]int{}
	for _, r := range s.streamRecords(t, stream) {
		stored[r.EventID]++
		if r.KeyID != nodeKey.ID() {
			t.Fatalf("event %s signed by %s, not the node key", r.EventID, r.KeyID)
		}
	}
	if len(stored) != len(want) {
		t.Errorf("%d distinct events stored, %d published", len(stored), len(want))
	}
	for _, id := range want {
		if stored[id] != 1 {
			t.Errorf("event %s stored %d times, want exactly once", id, stored[id])
		}
	}
	if got := metric(t, reg, "tunnelplane_event_spool_depth"); got != 0 {
		t.Errorf("tunnelplane_event_spool_depth = %v after recovery", got)
	}
	rep := s.verifyOK(t)
	t.Logf("%d events (%d during the outage) stored once; log of %d records verifies", len(want), count()-outageStart, rep.Count)
}

// The spool outlives the process: a new Publisher on the same directory sends what the old one
// spooled, after dropping a record torn by a crash mid-write.
func TestSpoolSurvivesRestartAndTornTail(t *testing.T) {
	embeddedOnly(t)
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	startIngester(t, s, connect(t, n.url()), nil)
	url := n.url()
	n.srv.Shutdown() // the node runs while NATS is away

	dir := t.TempDir()
	nc := connect(t, url)
	first := newPublisher(t, nodeID, nodeKey, nc, dir, nil)
	var ids []uuid.UUID
	for i := range 5 {
		id := uuid.New()
		if err := first.Publish(ctx, nodebus.Fact{ID: id, Event: usage(nodeID, i)}); err != nil {
			t.Fatalf("publish while NATS is away: %v", err)
		}
		ids = append(ids, id)
	}
	if d := first.SpoolDepth(); d != 5 {
		t.Fatalf("spool depth %d, want 5", d)
	}
	first.Stop()
	first.Stop() // safe twice

	// A crash in the middle of the sixth append: a header promising more bytes than follow.
	segs, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	before, err := os.Stat(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := binary.BigEndian.AppendUint32(nil, 4096)
	torn = append(torn, 0xde, 0xad, 0xbe, 0xef, 'T', 'P', 'B', '1', 0, 0)
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	f.Close()

	reg := prometheus.NewRegistry()
	second := newPublisher(t, nodeID, nodeKey, nc, dir, reg)
	if d := second.SpoolDepth(); d != 5 {
		t.Fatalf("after restart the spool holds %d batches, want the 5 intact ones", d)
	}
	if got := metric(t, reg, "tunnelplane_event_spool_depth"); got != 5 {
		t.Errorf("tunnelplane_event_spool_depth = %v after restart, want 5", got)
	}
	after, err := os.Stat(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Errorf("segment is %d bytes after recovery, want the torn tail cut back to %d", after.Size(), before.Size())
	}
	// New facts go behind the recovered ones, not behind the torn bytes.
	id := uuid.New()
	if err := second.Publish(ctx, nodebus.Fact{ID: id, Event: usage(nodeID, 5)}); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, id)
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n.restart()

	stream := domain.NodeFactsStream(nodeID)
	poll.Check(t, 20*time.Second, 20*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got != len(ids) {
			return errorsf("%d of %d events stored", got, len(ids))
		}
		return nil
	})
	for i, r := range s.streamRecords(t, stream) {
		if r.EventID != ids[i] {
			t.Errorf("event %d is %s, want %s (spool order)", i, r.EventID, ids[i])
		}
	}
	poll.Check(t, 5*time.Second, 20*time.Millisecond, func() error {
		if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
			return errorsf("segments left after everything was sent: %v", segs)
		}
		return nil
	})
	s.verifyOK(t)
}

// What Publish cannot keep it refuses, instead of accepting and dropping it later.
func TestPublishRefusesWhatItCannotKeep(t *testing.T) {
	embeddedOnly(t)
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	url := n.url()
	n.srv.Shutdown()
	nodeID := uuid.NewString()
	pub, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: nm(t), NodeID: nodeID, Key: mustKey(t), Conn: connect(t, url), SpoolDir: t.TempDir(),
		MaxSpoolBytes: 4 << 10, MaxMessageBytes: 2 << 10, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Stop()

	big := domain.AgentDisconnected{NodeID: nodeID, Reason: string(make([]byte, 3<<10))}
	if err := pub.Publish(ctx, nodebus.Fact{Event: big}); !errors.Is(err, nodebus.ErrTooLarge) {
		t.Errorf("a batch over the message limit: err = %v, want ErrTooLarge", err)
	}
	id := uuid.New()
	if err := pub.Publish(ctx, nodebus.Fact{ID: id, Event: usage(nodeID, 1)}, nodebus.Fact{ID: id, Event: usage(nodeID, 2)}); !errors.Is(err, nodebus.ErrInvalidFact) {
		t.Errorf("one event id twice: err = %v, want ErrInvalidFact", err)
	}
	accepted := 0
	for {
		err := pub.Publish(ctx, nodebus.Fact{Event: usage(nodeID, accepted)})
		if errors.Is(err, nodebus.ErrSpoolFull) {
			break
		}
		if err != nil {
			t.Fatalf("publish %d: %v", accepted, err)
		}
		accepted++
		if accepted > 100 {
			t.Fatal("a 4 KiB spool accepted more than 100 batches")
		}
	}
	if accepted == 0 || pub.SpoolDepth() != accepted {
		t.Errorf("accepted %d batches, spool holds %d", accepted, pub.SpoolDepth())
	}
	pub.Stop()
	if err := pub.Publish(ctx, nodebus.Fact{Event: usage(nodeID, 0)}); !errors.Is(err, nodebus.ErrClosed) {
		t.Errorf("after Stop: err = %v, want ErrClosed", err)
	}
}
