package bustest_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/controlbus"
	"github.com/tunnelplane/tunnelplane/bus/nodebus"
	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// Nodes get whole only the records their view acts on: an audit record with a caller's address
// reaches NATS withheld (position, type and hashes), and a node's verifier still takes the whole
// log, across a relay restart, up to the head.
func TestRelayWithholdsWhatNodesDoNotNeed(t *testing.T) {
	t.Parallel()
	n := startNATS(t, controlbus.StreamsConfig{})
	s := newStore(t)
	j := js(t, connect(t, n.url()))
	ctx := ctxT(t)
	const secretIP = "198.51.100.77"
	appendMixed := func(i int) {
		t.Helper()
		failed, _ := json.Marshal(domain.AuthFailed{Reason: "bad token", RemoteAddr: secretIP + ":4000", Count: 1, At: time.Now().UTC()})
		org, _ := json.Marshal(domain.OrganizationCreated{OrgID: "org-" + string(rune('a'+i)), Name: "acme" + string(rune('a'+i)), CreatedBy: "alice"})
		// One append batch mixing what nodes need and what they do not.
		if _, err := s.store.Append(ctx, "mixed-"+string(rune('a'+i)), eventstore.NoStream,
			eventstore.EventData{Type: domain.TypeAuthFailed, Payload: failed},
			eventstore.EventData{Type: domain.TypeOrganizationCreated, Payload: org},
			eventstore.EventData{Type: domain.TypeAuthFailed, Payload: failed}); err != nil {
			t.Fatal(err)
		}
	}
	withhold := func(rec *eventstore.Record) bool { return !domain.NodeNeeds(rec.Type) }
	start := func() *controlbus.Relay {
		r, err := controlbus.NewRelay(controlbus.RelayConfig{Names: nm(t), Store: s.store, Conn: connect(t, n.url()), BatchSize: 2,
			RetryInterval: 100 * time.Millisecond, Logger: testLogger(), Withhold: withhold})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)
		return r
	}
	appendMixed(0)
	first := start()
	waitRelayed(t, j, s)
	first.Stop()
	appendMixed(1)
	appendNodeLost(t, s, 3)
	start()
	head := waitRelayed(t, j, s)

	got := collect(t, j, nodebus.SubscribeEventsOptions{Names: nm(t), Logger: testLogger()}, int(head))
	genesis, err := s.store.GenesisHash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := s.store.Origin(ctx)
	v := eventstore.NewChainVerifier(origin, genesis, domain.NodeFactsStream)
	v.AcceptWithheld(func(typ string) bool { return !domain.NodeNeeds(typ) })
	var withheld, whole int
	for _, ev := range got {
		raw, _ := json.Marshal(ev)
		if bytes.Contains(raw, []byte(secretIP)) {
			t.Fatalf("position %d (%s) reached NATS with the caller's address: %s", ev.Position, ev.Type, raw)
		}
		if ev.Withheld {
			withheld++
			if ev.Payload != nil || ev.Envelope != nil || ev.Metadata != nil || ev.StreamID != "" || domain.NodeNeeds(ev.Type) {
				t.Fatalf("position %d withheld with content or of a needed type: %s", ev.Position, raw)
			}
		} else {
			whole++
		}
		rec, err := ev.Record()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Offer(&rec, ev.Checkpoint); err != nil {
			t.Fatalf("position %d (%s): %v", ev.Position, ev.Type, err)
		}
	}
	if v.Next() != head || withheld != 7 || whole != int(head)-7 {
		t.Fatalf("verified up to %d of %d; %d withheld, %d whole", v.Next(), head, withheld, whole)
	}
}
