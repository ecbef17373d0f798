package node

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/bus/wire"
	"github.com/tunnelplane/tunnelplane/domain"
)

// Batches hold at most CallBatchMax calls and stay under a node fact's size even when every call
// carries the longest route of the characters JSON escapes most; the drops ride in the first.
func TestCallBatchesFitAFact(t *testing.T) {
	l := newCallLog(10_000, domain.MaxCallsPerBatch)
	worst := domain.AccessCall{At: time.Now().UTC(), OrgID: "0190b8a5-6c6e-7000-8000-000000000001", TunnelID: "0190b8a5-6c6e-7000-8000-000000000002",
		CallerKind: domain.CallerUser, CallerID: strings.Repeat("<", 128), Method: strings.Repeat("M", domain.MaxCallMethod),
		Route: domain.CallRoute([]byte(strings.Repeat("<\u2028", 200))), Status: 599, BytesIn: 1 << 62, BytesOut: 1 << 62, DurationUS: 1 << 62}
	for range 3000 {
		l.add(worst)
	}
	l.lost = 7
	batches := l.take("0190b8a5-6c6e-7000-8000-000000000003")
	n := 0
	for i, b := range batches {
		raw, _ := json.Marshal(b)
		if len(raw) > maxCallBatchBytes || len(raw)+1024 > wire.MaxNodeFactBytes {
			t.Fatalf("batch %d: %d bytes of JSON", i, len(raw))
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if (i == 0) != (b.Dropped == 7) {
			t.Fatalf("batch %d carries %d drops", i, b.Dropped)
		}
		n += len(b.Calls)
	}
	if n != 3000 {
		t.Fatalf("%d calls in the batches, want 3000", n)
	}
	if l.take("x") != nil {
		t.Fatal("a second take found calls")
	}
}

// Only drops left to tell make a batch of no calls.
func TestCallLogReportsDropsAlone(t *testing.T) {
	l := newCallLog(0, 10)
	l.add(domain.AccessCall{})
	l.add(domain.AccessCall{})
	b := l.take("n")
	if len(b) != 1 || len(b[0].Calls) != 0 || b[0].Dropped != 2 {
		t.Fatalf("%+v", b)
	}
	if err := b[0].Validate(); err != nil {
		t.Fatal(err)
	}
}
