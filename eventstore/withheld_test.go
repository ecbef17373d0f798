package eventstore_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/tunnelplane/tunnelplane/eventstore"
	"github.com/tunnelplane/tunnelplane/eventstore/ledger"
)

// A reader that acts on some types only takes the others withheld (position, type, hashes and
// leaf hash): they verify only when the checkpoint's root covers their leaves and the log key
// attests their types, so a record the reader needs cannot be withheld from it, a forged leaf
// does not verify, and a reader that takes no withheld records refuses them.
func TestWithheldRecordsVerifyOnlyAsTheLogVouches(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := ctxT(t)
	renamed := eventstore.EventData{Type: typeNoteRenamed, Payload: []byte(`{"title":"secret-ip 192.0.2.7"}`)}
	if _, err := e.store.Append(ctx, "a", eventstore.NoStream, note(1), renamed, note(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Append(ctx, "a", eventstore.Exact(3), note(3)); err != nil {
		t.Fatal(err)
	}
	recs, err := e.store.ReadAll(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := e.store.Checkpoints(ctx, 0, uint64(len(recs)))
	if err != nil {
		t.Fatal(err)
	}
	origin, _ := e.store.Origin(ctx)
	skippable := func(typ string) bool { return typ == typeNoteAdded }
	other, _ := eventstore.GenerateSigningKey()

	// send relays recs as a relay does: the types skip withholds are sent withheld, and each
	// batch's last record carries the attestation signed by key (nil: none).
	send := func(skip func(string) bool, key *eventstore.SigningKey, tamper func(*ledger.Record)) []eventstore.Record {
		var out []eventstore.Record
		var entries []ledger.WithheldEntry
		for i := range recs {
			r := recs[i]
			if r.StreamID != ledger.LogStream && skip(r.Type) {
				r = ledger.WithheldCopy(&recs[i])
				if tamper != nil {
					tamper(&r)
				}
				entries = append(entries, ledger.WithheldEntry{Position: r.Position, LeafHash: r.LeafHash, Type: r.Type})
			}
			if _, ends := cps[r.Position+1]; ends && len(entries) > 0 && key != nil {
				r.WithheldAttestation = key.Sign(ledger.WithheldMessage(origin, entries))
				entries = nil
			}
			out = append(out, r)
		}
		return out
	}
	run := func(accept bool, sent []eventstore.Record) ([]eventstore.Record, error) {
		v := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
		if accept {
			v.AcceptWithheld(skippable)
		}
		var got []eventstore.Record
		var errs []error
		for _, r := range sent {
			out, err := v.Offer(&r, cps[r.Position+1])
			got = append(got, out...)
			errs = append(errs, err)
		}
		return got, errors.Join(errs...)
	}

	got, err := run(true, send(skippable, e.key, nil))
	if err != nil || !slices.Equal(positions(got), positions(recs)) {
		t.Fatalf("released %v: %v", positions(got), err)
	}
	for _, r := range got {
		if r.Withheld != (r.Type == typeNoteAdded) || (r.Withheld && (r.Payload != nil || r.StoredPayload != nil || r.StreamID != "")) {
			t.Fatalf("position %d (%s) released withheld=%v with %q", r.Position, r.Type, r.Withheld, r.StoredPayload)
		}
	}

	// A verifier restored from a saved state (a node's snapshot) still takes them.
	v := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	v.AcceptWithheld(skippable)
	if out, err := v.Offer(&recs[0], cps[1]); err != nil || len(out) != 1 {
		t.Fatalf("genesis: %v", err)
	}
	saved, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	restored := eventstore.NewChainVerifier(origin, recs[0].Hash, producerStream)
	restored.AcceptWithheld(skippable)
	if err := json.Unmarshal(saved, restored); err != nil {
		t.Fatal(err)
	}
	var rest []eventstore.Record
	for _, r := range send(skippable, e.key, nil)[1:] {
		out, err := restored.Offer(&r, cps[r.Position+1])
		if err != nil {
			t.Fatalf("restored, position %d: %v", r.Position, err)
		}
		rest = append(rest, out...)
	}
	if !slices.Equal(positions(rest), positions(recs[1:])) {
		t.Fatalf("restored: released %v", positions(rest))
	}

	withheldAll := func(string) bool { return true }
	for name, tc := range map[string]struct {
		accept bool
		sent   []eventstore.Record
	}{
		"a reader that takes none": {false, send(skippable, e.key, nil)},
		"a type the reader needs":  {true, send(withheldAll, e.key, nil)},
		"no attestation":           {true, send(skippable, nil, nil)},
		"attested by another key":  {true, send(skippable, other, nil)},
		"a forged leaf, attested":  {true, send(skippable, e.key, func(r *ledger.Record) { r.LeafHash = slices.Clone(r.LeafHash); r.LeafHash[0] ^= 1 })},
		"a type changed, attested": {true, send(skippable, e.key, func(r *ledger.Record) { r.Type = "test.other" })},
		"a malformed leaf hash":    {true, send(skippable, e.key, func(r *ledger.Record) { r.LeafHash = r.LeafHash[:8] })},
	} {
		got, err := run(tc.accept, tc.sent)
		if !errors.Is(err, eventstore.ErrUnverified) || len(got) > 1 { // the genesis only
			t.Errorf("%s: released %v, %v", name, positions(got), err)
		}
	}
}
