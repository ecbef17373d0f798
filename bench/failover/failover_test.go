package failover

import (
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {AdminURL: "x", Exe: "y", Nodes: 2}, {AdminURL: "x", Exe: "y", Rate: -1}, {AdminURL: "x", Exe: "y", Before: time.Millisecond}} {
		if o.Validate() == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
}

// Recovery is per node left the end of the first call after the kill that succeeded with every
// later one; failures count the calls through the nodes left and those the killed node held.
func TestSummarize(t *testing.T) {
	kill := time.Unix(1000, 0)
	at := func(ms int) time.Time { return kill.Add(time.Duration(ms) * time.Millisecond) }
	calls := []*call{
		{node: "a", start: at(-50), end: at(-49), ok: true},
		{node: "a", start: at(-10), end: at(20), ok: false}, // in flight through the victim
		{node: "b", start: at(-5), end: at(300), ok: true},  // in flight, served
		{node: "b", start: at(10), end: at(400), ok: false}, // failed after the kill
		{node: "b", start: at(20), end: at(500), ok: true},  // b recovers here
		{node: "c", start: at(30), end: at(40), ok: true},   // c never failed
		{node: "b", start: at(600), end: at(601), ok: true},
	}
	res := summarize(calls, kill, kill, "a", Options{Nodes: 3, Rate: 10})
	if res.RecoverMS != 500 || res.FailedCalls != 2 || res.InFlightAtKill != 2 || res.Calls != 7 {
		t.Fatalf("%+v", res)
	}
	// The victim exited 15 ms after the signal: the call started 10 ms after it was in flight,
	// the one started 20 ms after was not.
	if res := summarize(calls, kill, at(15), "a", Options{Nodes: 3, Rate: 10}); res.InFlightAtKill != 3 || res.FailedCalls != 2 {
		t.Fatalf("victim exited at +15 ms: %+v", res)
	}
	// A node whose calls never succeed again has not recovered.
	calls = append(calls, &call{node: "c", start: at(700), end: at(900), ok: false})
	if res := summarize(calls, kill, kill, "a", Options{Nodes: 3, Rate: 10}); res.RecoverMS != -1 {
		t.Fatalf("recover %v with node c failing at the end", res.RecoverMS)
	}
}
