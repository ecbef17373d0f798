package bustest_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/internal/poll"
)

// A node's facts reach the log signed by the node's own key, and the log still verifies.
func TestPublishIngestStoresNodeSignedEvents(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	reg := prometheus.NewRegistry()
	startIngester(t, s, connect(t, n.url()), reg)
	pub := newPublisher(t, nodeID, nodeKey, connect(t, n.url()), t.TempDir(), reg)
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}

	session := uuid.NewString()
	facts := [][]nodebus.Fact{
		{{Event: domain.AgentConnected{NodeID: nodeID, SessionID: session, TunnelID: uuid.NewString()}, CorrelationID: "req-1"}},
		{{Event: usage(nodeID, 1)}, {Event: usage(nodeID, 2)}, {Event: usage(nodeID, 3)}},
		{{Event: domain.AgentDisconnected{NodeID: nodeID, SessionID: session, Reason: "agent closed"}}},
	}
	want := 0
	for _, batch := range facts {
		if err := pub.Publish(ctx, batch...); err != nil {
			t.Fatalf("publish: %v", err)
		}
		want += len(batch)
	}
	stream := domain.NodeFactsStream(nodeID)
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got != want {
			return errorsf("%d of %d events stored", got, want)
		}
		return nil
	})
	recs := s.streamRecords(t, stream)
	wantTypes := []string{domain.TypeAgentConnected, domain.TypeUsageRecorded, domain.TypeUsageRecorded, domain.TypeUsageRecorded, domain.TypeAgentDisconnected}
	for i, r := range recs {
		if r.KeyID != nodeKey.ID() {
			t.Errorf("event %d signed by %s, want the node key %s", i, r.KeyID, nodeKey.ID())
		}
		if r.Type != wantTypes[i] {
			t.Errorf("event %d is %s, want %s (publish order)", i, r.Type, wantTypes[i])
		}
		var meta domain.Metadata
		if err := json.Unmarshal(r.Metadata, &meta); err != nil || meta.NodeID != nodeID || meta.OccurredAt.IsZero() {
			t.Errorf("event %d metadata %s (%v)", i, r.Metadata, err)
		}
	}
	var meta domain.Metadata
	_ = json.Unmarshal(recs[0].Metadata, &meta)
	if meta.CorrelationID != "req-1" || meta.Actor != "node:"+nodeID {
		t.Errorf("first event metadata %+v: want correlation id req-1 and actor node:%s", meta, nodeID)
	}
	s.verifyOK(t)
	if got := metric(t, reg, "tunnelplane_ingest_events_total"); got != float64(want) {
		t.Errorf("tunnelplane_ingest_events_total = %v, want %d", got, want)
	}
	if got := metric(t, reg, "tunnelplane_event_spool_depth"); got != 0 {
		t.Errorf("spool depth %v with NATS up the whole time", got)
	}
}

// Facts too many for one NATS message (a node's usage windows of thousands of callers) are
// published as consecutive batches and stored in order; none is lost.
func TestPublishSplitsWhatOneMessageCannotHold(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	startIngester(t, s, connect(t, n.url()), prometheus.NewRegistry())
	pub, err := nodebus.NewPublisher(nodebus.PublisherConfig{Names: nm(t), NodeID: nodeID, Key: nodeKey, Conn: connect(t, n.url()),
		SpoolDir: t.TempDir(), MaxMessageBytes: 32 << 10, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Stop()
	facts := make([]nodebus.Fact, 300) // about 250 KiB signed
	for i := range facts {
		u := usage(nodeID, i+1)
		u.CallerKind, u.CallerID = domain.CallerUser, uuid.NewString()
		facts[i] = nodebus.Fact{Event: u}
	}
	if err := pub.Publish(ctx, facts...); err != nil {
		t.Fatal(err)
	}
	stream := domain.NodeFactsStream(nodeID)
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got != len(facts) {
			return errorsf("%d of %d events stored", got, len(facts))
		}
		return nil
	})
	for i, r := range s.streamRecords(t, stream) {
		var u domain.UsageRecorded
		if err := json.Unmarshal(r.Payload, &u); err != nil || u.Requests != int64(i+1) {
			t.Fatalf("event %d: requests %d (%v), want %d in publish order", i, u.Requests, err, i+1)
		}
	}
}

// A batch delivered again (its ack was lost, or the node resent it after the duplicate window) is
// stored once; a batch that overlaps a stored one stores only the new events.
func TestRedeliveredBatchIsStoredOnce(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	nodeID, nodeKey := s.enrollNode(t)
	reg := prometheus.NewRegistry()
	startIngester(t, s, connect(t, n.url()), reg)
	nc := connect(t, n.url())
	pub := newPublisher(t, nodeID, nodeKey, nc, t.TempDir(), nil)

	// Capture the batch exactly as it travels.
	captured := make(chan *nats.Msg, 4)
	tap, err := nc.ChanSubscribe(nm(t).NodeFactsSubject(nodeID), captured)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	if err := pub.Publish(ctx, nodebus.Fact{ID: a, Event: usage(nodeID, 1)}, nodebus.Fact{ID: b, Event: usage(nodeID, 2)}); err != nil {
		t.Fatal(err)
	}
	stream := domain.NodeFactsStream(nodeID)
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got != 2 {
			return errorsf("%d events stored", got)
		}
		return nil
	})
	var orig *nats.Msg
	select {
	case orig = <-captured:
	case <-time.After(5 * time.Second):
		t.Fatal("the batch was not seen on its subject")
	}

	// The same bytes again under another message id, past JetStream's duplicate detection.
	js := js(t, nc)
	again := &nats.Msg{Subject: orig.Subject, Data: orig.Data, Header: nats.Header{}}
	again.Header.Set(nats.MsgIdHdr, "redelivery-"+uuid.NewString())
	if _, err := js.PublishMsg(ctx, again); err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := metric(t, reg, "tunnelplane_ingest_batches_total", "result", "duplicate"); got != 1 {
			return errorsf("duplicate batches = %v", got)
		}
		return nil
	})
	// A later batch repeating b (a re-reported fact with its deterministic id) next to a new c.
	if err := pub.Publish(ctx, nodebus.Fact{ID: b, Event: usage(nodeID, 2)}, nodebus.Fact{ID: c, Event: usage(nodeID, 3)}); err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		if got := len(s.streamRecords(t, stream)); got != 3 {
			return errorsf("%d events stored, want 3", got)
		}
		return nil
	})
	seen := map[uuid.UUID]int{}
	for _, r := range s.streamRecords(t, stream) {
		seen[r.EventID]++
	}
	for _, id := range []uuid.UUID{a, b, c} {
		if seen[id] != 1 {
			t.Errorf("event %s stored %d times, want once", id, seen[id])
		}
	}
	if got := metric(t, reg, "tunnelplane_ingest_rejected_batches_total"); got != 0 {
		t.Errorf("%v batches rejected; repeats are not errors", got)
	}
	s.verifyOK(t)
}

// Batches the log must not take are refused for good, audited, and never retried.
func TestRejectedBatchesAreAuditedAndNotRetried(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	otherNode, otherKey := s.enrollNode(t)
	reg := prometheus.NewRegistry()
	startIngester(t, s, connect(t, n.url()), reg)
	nc := connect(t, n.url())

	strangerKey, _ := eventstore.GenerateSigningKey()
	impostor := uuid.NewString()
	cases := []rejectCase{
		{"key unknown to the log", uuid.NewString(), controlbus.RejectBadSignature, strangerKey},
		{"another node's key", impostor, controlbus.RejectNotNodeKey, otherKey},
	}
	for _, tc := range cases {
		pub := newPublisher(t, tc.nodeID, tc.key, nc, t.TempDir(), nil)
		if err := pub.Publish(ctx, nodebus.Fact{Event: usage(tc.nodeID, 1)}, nodebus.Fact{Event: usage(tc.nodeID, 2)}); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	// Garbage on a node subject.
	if _, err := js(t, nc).Publish(ctx, nm(t).NodeFactsSubject(otherNode), []byte("TPB1 not really")); err != nil {
		t.Fatal(err)
	}
	// An enrolled node, with its own key, in its own stream, reporting what only the control
	// plane may record: a role grant would otherwise reach the RBAC view.
	rogue, rogueKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"a type nodes may not report", rogue, controlbus.RejectForbiddenType, rogueKey})
	if err := newPublisher(t, rogue, rogueKey, nc, t.TempDir(), nil).Publish(ctx, nodebus.Fact{Event: usage(rogue, 1)},
		nodebus.Fact{Event: domain.RoleAssigned{OrgID: domain.PlatformOrg, UserID: "mallory", Role: domain.RoleSuperadmin}}); err != nil {
		t.Fatal(err)
	}
	// Metadata speaking for a user of an organization, from a client address.
	forger, forgerKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"metadata speaking for someone else", forger, controlbus.RejectBadMetadata, forgerKey})
	forged := forgeBatch(t, forger, forgerKey,
		domain.Metadata{Actor: "node:" + forger, NodeID: forger},
		domain.Metadata{Actor: "alice", NodeID: forger, OrgID: uuid.NewString(), ClientIP: "203.0.113.9"})
	if _, err := js(t, nc).Publish(ctx, nm(t).NodeFactsSubject(forger), forged); err != nil {
		t.Fatal(err)
	}
	// A fact too large to relay.
	hoarder, hoarderKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"a fact too large to relay", hoarder, controlbus.RejectInvalidEvent, hoarderKey})
	if err := newPublisher(t, hoarder, hoarderKey, nc, t.TempDir(), nil).Publish(ctx, nodebus.Fact{Event: usage(hoarder, 1)},
		nodebus.Fact{Event: domain.NodeStarted{NodeID: hoarder, Version: strings.Repeat("v", wire.MaxNodeFactBytes)}}); err != nil {
		t.Fatal(err)
	}
	// An event id the log holds in another stream (here the genesis record's).
	squatter, squatterKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"an event id of another stream", squatter, controlbus.RejectIDTaken, squatterKey})
	genesis, err := s.store.ReadAll(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := newPublisher(t, squatter, squatterKey, nc, t.TempDir(), nil).Publish(ctx, nodebus.Fact{Event: usage(squatter, 1)},
		nodebus.Fact{ID: genesis[0].EventID, Event: usage(squatter, 2)}); err != nil {
		t.Fatal(err)
	}

	// A usage window no node could have counted: a histogram bucket past the layout.
	liar, liarKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"a usage window breaking its rules", liar, controlbus.RejectInvalidFact, liarKey})
	bad := usage(liar, 2)
	bad.Latency = &domain.Histogram{Offset: domain.HistogramBuckets, Counts: []int64{2}}
	if err := newPublisher(t, liar, liarKey, nc, t.TempDir(), nil).Publish(ctx, nodebus.Fact{Event: usage(liar, 1)}, nodebus.Fact{Event: bad}); err != nil {
		t.Fatal(err)
	}

	// A batch of call records with a route past its bound (a node must cut it).
	talker, talkerKey := s.enrollNode(t)
	cases = append(cases, rejectCase{"call records breaking their rules", talker, controlbus.RejectInvalidFact, talkerKey})
	calls := domain.AccessCallsRecorded{NodeID: talker, Calls: []domain.AccessCall{{At: time.Now().UTC(), OrgID: uuid.NewString(), TunnelID: uuid.NewString(),
		CallerKind: domain.CallerUser, CallerID: "alice", Method: "GET", Route: "/" + strings.Repeat("a", domain.MaxCallRoute), Status: 200}}}
	if err := newPublisher(t, talker, talkerKey, nc, t.TempDir(), nil).Publish(ctx, nodebus.Fact{Event: usage(talker, 1)}, nodebus.Fact{Event: calls}); err != nil {
		t.Fatal(err)
	}

	var audits []domain.IngestRejected
	poll.Check(t, 10*time.Second, 20*time.Millisecond, func() error {
		audits = audits[:0]
		for _, r := range s.streamRecords(t, domain.AuditStream) {
			if r.Type != domain.TypeIngestRejected {
				continue
			}
			var ev domain.IngestRejected
			if err := json.Unmarshal(r.Payload, &ev); err != nil {
				return err
			}
			audits = append(audits, ev)
		}
		if len(audits) != 9 {
			return errorsf("%d rejections audited, want 9", len(audits))
		}
		return nil
	})
	byNode := map[string]domain.IngestRejected{}
	for _, a := range audits {
		byNode[a.NodeID] = a
	}
	for _, tc := range cases {
		a, ok := byNode[tc.nodeID]
		if !ok {
			t.Errorf("%s: no audit event for node %s", tc.name, tc.nodeID)
			continue
		}
		if !strings.HasPrefix(a.Reason, tc.reason) || a.Events != 2 || a.KeyID != tc.key.ID() || a.Subject != nm(t).NodeFactsSubject(tc.nodeID) {
			t.Errorf("%s: audit %+v, want reason %s, 2 events, key %s", tc.name, a, tc.reason, tc.key.ID())
		}
		// A batch is refused whole, but one that partly duplicates the log is stored event by
		// event: the squatter's first event went in before its second was found taken.
		want := 0
		if tc.reason == controlbus.RejectIDTaken {
			want = 1
		}
		if recs := s.streamRecords(t, domain.NodeFactsStream(tc.nodeID)); len(recs) != want {
			t.Errorf("%s: %d events stored from a rejected batch, want %d", tc.name, len(recs), want)
		}
	}
	if a := byNode[otherNode]; !strings.HasPrefix(a.Reason, controlbus.RejectMalformed) {
		t.Errorf("garbage batch audited as %+v, want reason %s", a, controlbus.RejectMalformed)
	}

	// Not retried: the consumer has nothing pending, each message was delivered exactly once,
	// and the work queue is empty.
	cons, err := js(t, nc).Consumer(ctx, nm(t).NodeFactsStream(), nm(t).IngesterConsumer())
	if err != nil {
		t.Fatal(err)
	}
	poll.Check(t, 5*time.Second, 20*time.Millisecond, func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.Delivered.Consumer != 9 || info.NumRedelivered != 0 {
			return errorsf("consumer: ack pending %d, pending %d, delivered %d, redelivered %d",
				info.NumAckPending, info.NumPending, info.Delivered.Consumer, info.NumRedelivered)
		}
		return nil
	})
	if got := metric(t, reg, "tunnelplane_ingest_rejected_batches_total", "reason", controlbus.RejectBadSignature); got != 1 {
		t.Errorf("bad signature rejections = %v, want 1", got)
	}
	s.verifyOK(t)
}

type rejectCase struct {
	name, nodeID, reason string
	key                  *eventstore.SigningKey
}

// forgeBatch signs a batch of usage events with the given metadata, bypassing the Publisher.
func forgeBatch(t *testing.T, nodeID string, key *eventstore.SigningKey, metas ...domain.Metadata) []byte {
	t.Helper()
	envelopes := make([][]byte, len(metas))
	for i, m := range metas {
		payload, _ := json.Marshal(usage(nodeID, i+1))
		meta, _ := json.Marshal(m)
		env := eventstore.Envelope{EventID: uuid.Must(uuid.NewV7()), StreamID: domain.NodeFactsStream(nodeID), Type: domain.TypeUsageRecorded,
			SchemaVersion: 1, KeyID: key.ID(), Payload: payload, Metadata: meta}
		envelopes[i] = eventstore.AppendEnvelope(nil, &env)
	}
	signed := eventstore.SignEnvelopes(key, envelopes)
	return wire.EncodeBatch(signed.Signature, envelopes, signed.Proofs)
}
