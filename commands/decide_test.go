package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/domain"
	"github.com/tunnelplane/tunnelplane/eventstore"
)

// These tests drive decideAndAppend, the load → decide → append skeleton of every handler, with
// hand-made decisions on tunnel-name streams of a real log, and read what the log holds.

const (
	decideOrg     = "0190f000-0000-7000-8000-000000000001"
	decideCommand = "DecideTest"
)

var decideAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// decideCtx is a request with every field the metadata carries, and an idempotency key (so the
// event ids are derived and a test can predict them).
func decideCtx() context.Context {
	ctx := WithActor(context.Background(), Actor{ID: "alice", ClientIP: "198.51.100.4", UserAgent: "decide-test",
		RequestID: "req-7", CorrelationID: "corr-7", CausationID: "cause-7"})
	return WithIdempotencyKey(ctx, "decide-1")
}

func decideMeta(ctx context.Context) []byte { return metadata(ctx, decideCommand, decideOrg, decideAt) }

func nameStream(name string) string { return domain.TunnelNameStream(decideOrg, name) }

func reserved(name, tunnelID string) domain.Event {
	return domain.TunnelNameReserved{OrgID: decideOrg, Name: name, TunnelID: tunnelID}
}

func released(name, tunnelID string) domain.Event {
	return domain.TunnelNameReleased{OrgID: decideOrg, Name: name, TunnelID: tunnelID}
}

// writeElsewhere appends through the store, past the service's cache, as another control plane
// process would.
func writeElsewhere(t *testing.T, h *auditHarness, stream string, evs ...domain.Event) {
	t.Helper()
	data, err := events(newIDGen(context.Background(), "elsewhere"), nil, evs...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Append(context.Background(), stream, eventstore.AnyVersion, data...); err != nil {
		t.Fatal(err)
	}
}

func readStream(t *testing.T, h *auditHarness, stream string) []eventstore.Record {
	t.Helper()
	recs, err := h.store.ReadStream(context.Background(), stream, 1, 100)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func head(t *testing.T, h *auditHarness) uint64 {
	t.Helper()
	p, err := h.store.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A decision over two streams at different versions lands each at its own version, in the
// order decided, with ids drawn in that order; the Result reports the first stream's version and
// the last position written.
func TestDecideAndAppendWritesEveryStreamAtItsVersion(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	a, b := nameStream("a"), nameStream("b")
	writeElsewhere(t, h, a, reserved("a", "t1"), released("a", "t1")) // a is at version 2, b is new

	res, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), failOnConflict, func() (decision, error) {
		return changed("t2", a, 2, reserved("a", "t2"), released("a", "t2")).and(b, 0, reserved("b", "t2")), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recsA, recsB := readStream(t, h, a), readStream(t, h, b)
	if len(recsA) != 4 || len(recsB) != 1 {
		t.Fatalf("a holds %d events, b %d; want 4 and 1", len(recsA), len(recsB))
	}
	written := []eventstore.Record{recsA[2], recsA[3], recsB[0]}
	wantTypes := []string{domain.TypeTunnelNameReserved, domain.TypeTunnelNameReleased, domain.TypeTunnelNameReserved}
	wantVersions := []uint64{3, 4, 1}
	ids := newIDGen(ctx, decideCommand) // the same key and command: the same ids, in order
	for i, r := range written {
		if r.Type != wantTypes[i] || r.StreamVersion != wantVersions[i] {
			t.Fatalf("event %d: %s at version %d, want %s at %d", i, r.Type, r.StreamVersion, wantTypes[i], wantVersions[i])
		}
		if i > 0 && r.Position != written[i-1].Position+1 {
			t.Fatalf("event %d at position %d after %d: not appended together, in the order decided", i, r.Position, written[i-1].Position)
		}
		if want := ids.next(); r.EventID != want {
			t.Fatalf("event %d has id %s, want %s (drawn from the command's ids, stream by stream)", i, r.EventID, want)
		}
	}
	if res.ID != "t2" || res.Version != 4 || res.Position != recsB[0].Position || res.Noop {
		t.Fatalf("result %+v, want id t2, version 4 (the first stream's), position %d (the last written)", res, recsB[0].Position)
	}
}

// Every event of every stream carries the command's metadata: actor, organization, the
// correlation and causation ids, the request, and when.
func TestDecideAndAppendKeepsMetadataAndCausation(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	a, b := nameStream("a"), nameStream("b")
	if _, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), retryOnConflict, func() (decision, error) {
		return changed("t1", a, 0, reserved("a", "t1"), released("a", "t1")).and(b, 0, reserved("b", "t1")), nil
	}); err != nil {
		t.Fatal(err)
	}
	want := domain.Metadata{Actor: "alice", OrgID: decideOrg, CorrelationID: "corr-7", CausationID: "cause-7", RequestID: "req-7",
		ClientIP: "198.51.100.4", UserAgent: "decide-test", Command: decideCommand, OccurredAt: decideAt}
	recs := append(readStream(t, h, a), readStream(t, h, b)...)
	if len(recs) != 3 {
		t.Fatalf("%d events written, want 3", len(recs))
	}
	for _, r := range recs {
		var got domain.Metadata
		if err := json.Unmarshal(r.Metadata, &got); err != nil {
			t.Fatalf("metadata of %s v%d: %v", r.StreamID, r.StreamVersion, err)
		}
		if !got.OccurredAt.Equal(want.OccurredAt) {
			t.Fatalf("%s v%d occurred at %v, want %v", r.StreamID, r.StreamVersion, got.OccurredAt, want.OccurredAt)
		}
		got.OccurredAt = want.OccurredAt
		if got != want {
			t.Fatalf("%s v%d metadata:\n got %+v\nwant %+v", r.StreamID, r.StreamVersion, got, want)
		}
	}
}

// A refused decision appends nothing, even when decide returned events with its error, is not
// retried, and comes back as the domain said it.
func TestDecideAndAppendRefusalAppendsNothing(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	a := nameStream("a")
	before := head(t, h)
	refusal := fmt.Errorf("reserve: %w: the name is used by another tunnel", domain.ErrConflict)
	attempts, keyCalls := 0, 0
	res, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), retryOnConflict, func() (decision, error) {
		attempts++
		d := changed("t1", a, 0, reserved("a", "t1"))
		d.withKeyEvent = func(context.Context, ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
			keyCalls++
			return eventstore.AppendResult{}, nil
		}
		return d, refusal
	})
	if !errors.Is(err, refusal) || errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Fatalf("error %v, want the refusal as decided", err)
	}
	if res != (Result{}) {
		t.Fatalf("a refusal returned %+v", res)
	}
	if attempts != 1 {
		t.Fatalf("decided %d times: a refusal is not a concurrent change", attempts)
	}
	if keyCalls != 0 || head(t, h) != before || len(readStream(t, h, a)) != 0 {
		t.Fatalf("a refused decision was written (key calls %d, head %d → %d)", keyCalls, before, head(t, h))
	}
}

// Nothing to do: nothing appended, the aggregate's version reported as a no-op.
func TestDecideAndAppendUnchangedIsANoop(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	before := head(t, h)
	res, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), retryOnConflict, func() (decision, error) {
		return unchanged("t1", 7), nil
	})
	if err != nil || res != (Result{ID: "t1", Version: 7, Noop: true}) {
		t.Fatalf("no-op: %+v %v", res, err)
	}
	if head(t, h) != before {
		t.Fatalf("a no-op appended: head %d → %d", before, head(t, h))
	}
}

// cachedAtVersion1 has the service reserve name for t1 (so it caches the stream at version 1)
// and another process then release it (so the cache is stale: the stream is at version 2).
func cachedAtVersion1(t *testing.T, h *auditHarness, name string) string {
	t.Helper()
	ctx := decideCtx()
	stream := nameStream(name)
	if _, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, "setup"), decideMeta(ctx), failOnConflict, func() (decision, error) {
		return changed("t1", stream, 0, reserved(name, "t1")), nil
	}); err != nil {
		t.Fatal(err)
	}
	if recs, ok := h.svc.cache.get(stream); !ok || len(recs) != 1 {
		t.Fatalf("setup: the service does not cache %s at version 1", stream)
	}
	writeElsewhere(t, h, stream, released(name, "t1"))
	return stream
}

// reserveFor decides, the way the handlers do, that tunnelID takes the name; it records the
// version each attempt decided on.
func reserveFor(h *auditHarness, stream, name, tunnelID string, seen *[]uint64) func() (decision, error) {
	return func() (decision, error) {
		recs, err := h.svc.load(context.Background(), stream)
		if err != nil {
			return decision{}, err
		}
		n, err := domain.RehydrateTunnelName(recs)
		if err != nil {
			return decision{}, err
		}
		*seen = append(*seen, n.Version())
		ev, err := n.Reserve(decideOrg, name, tunnelID)
		if err != nil {
			return decision{}, err
		}
		return changed(tunnelID, stream, n.Version(), ev), nil
	}
}

// A decision on a stale read loses to the concurrent change and is made again on a fresh read.
func TestDecideAndAppendRetriesOnAFreshRead(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	stream := cachedAtVersion1(t, h, "a")
	var seen []uint64
	res, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), retryOnConflict, reserveFor(h, stream, "a", "t1", &seen))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[1 2]" {
		t.Fatalf("decided at versions %v, want [1 2] (the stale cache, then a fresh read)", seen)
	}
	recs := readStream(t, h, stream)
	if len(recs) != 3 || recs[2].Type != domain.TypeTunnelNameReserved || res.Version != 3 || res.Position != recs[2].Position {
		t.Fatalf("after the retry: %d events, result %+v", len(recs), res)
	}
}

// Under failOnConflict (a pinned version, a stream that must be new) the concurrent change is a
// conflict: decided once, nothing appended, and the stale stream forgotten, so the next
// decision reads what the log holds.
func TestDecideAndAppendPinnedConflictIsReported(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	stream := cachedAtVersion1(t, h, "a")
	var seen []uint64
	_, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), failOnConflict, reserveFor(h, stream, "a", "t1", &seen))
	if !errors.Is(err, domain.ErrConflict) || !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
		t.Fatalf("error %v, want a conflict", err)
	}
	if fmt.Sprint(seen) != "[1]" || len(readStream(t, h, stream)) != 2 {
		t.Fatalf("decided at versions %v, stream holds %d events; want [1] and 2", seen, len(readStream(t, h, stream)))
	}
	if _, ok := h.svc.cache.get(stream); ok {
		t.Fatal("the stale stream is still cached")
	}
}

// Retries are bounded: a stream that changes under every attempt ends in a conflict after
// MaxConflictRetries retries.
func TestDecideAndAppendRetriesAreBounded(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	stream := nameStream("busy")
	attempts := 0
	_, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), retryOnConflict, func() (decision, error) {
		attempts++
		recs, err := h.svc.load(ctx, stream)
		if err != nil {
			return decision{}, err
		}
		writeElsewhere(t, h, stream, reserved("busy", fmt.Sprintf("t%d", attempts)))
		return changed("t0", stream, uint64(len(recs)), reserved("busy", "t0")), nil
	})
	if !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("error %v, want a conflict", err)
	}
	if want := h.svc.cfg.MaxConflictRetries + 1; attempts != want {
		t.Fatalf("decided %d times, want %d", attempts, want)
	}
	if n := len(readStream(t, h, stream)); n != attempts {
		t.Fatalf("stream holds %d events, want only the %d written elsewhere", n, attempts)
	}
}

// A decision written with a key event (node enrollment, removal) goes through its own call, at
// the versions decided, and the service then forgets the streams it could not see written.
func TestDecideAndAppendWithKeyEventForgetsTheCache(t *testing.T) {
	t.Parallel()
	h := newAuditHarness(t)
	ctx := decideCtx()
	stream := nameStream("a")
	if _, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, "setup"), decideMeta(ctx), failOnConflict, func() (decision, error) {
		return changed("t1", stream, 0, reserved("a", "t1")), nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []eventstore.StreamAppend
	res, err := h.svc.decideAndAppend(ctx, newIDGen(ctx, decideCommand), decideMeta(ctx), failOnConflict, func() (decision, error) {
		d := changed("t1", stream, 1, released("a", "t1"))
		d.withKeyEvent = func(ctx context.Context, appends ...eventstore.StreamAppend) (eventstore.AppendResult, error) {
			got = appends
			res, err := h.store.AppendMulti(ctx, appends...) // past the cache, as the store's key calls are
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			return res[len(res)-1], nil
		}
		return d, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].StreamID != stream || got[0].Expected != eventstore.Exact(1) || len(got[0].Events) != 1 {
		t.Fatalf("key call got %+v", got)
	}
	recs := readStream(t, h, stream)
	if len(recs) != 2 || res.Version != 2 || res.Position != recs[1].Position {
		t.Fatalf("result %+v over %d events", res, len(recs))
	}
	if _, ok := h.svc.cache.get(stream); ok {
		t.Fatal("the stream written with the key event is still cached (at its old version)")
	}
}
