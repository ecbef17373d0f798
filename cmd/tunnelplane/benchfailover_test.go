package main

import (
	"context"
	"testing"
	"time"

	failoverbench "github.com/tunnelplane/tunnelplane/bench/failover"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
)

// bench failover on a small scale: three node processes, an agent holding two, POST calls
// entering at every node, a holding node killed. Nothing reaches the upstream twice, the agent
// notices, calls succeed again through the nodes left well within the 2 s target, and only calls
// in flight at the kill may fail.
func TestBenchFailoverKillsAHoldingNode(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	res, err := failoverbench.Run(context.Background(), failoverbench.Options{AdminURL: pgtest.Server(t).AdminURL, Exe: bin,
		Rate: 100, Before: 2 * time.Second, After: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	switch {
	case res.DuplicatedCalls != 0:
		t.Fatalf("%d calls reached the upstream twice", res.DuplicatedCalls)
	case res.DetectMS < 0 || res.DetectMS > 6000:
		t.Fatalf("the agent noticed the kill after %.0f ms (-1: never)", res.DetectMS)
	case res.RecoverMS < 0 || res.RecoverMS > 2000:
		t.Fatalf("calls succeeded again %.0f ms after the kill (-1: never)", res.RecoverMS)
	case !res.Forwarded || res.Calls < 400:
		t.Fatalf("forwarded %v, %d calls", res.Forwarded, res.Calls)
	}
	// The nodes left must not fail a call that was not on the killed node; every failure is a
	// call the killed node held (through it, or in flight through a peer to it).
	if res.FailedCalls > res.InFlightAtKill {
		t.Fatalf("%d calls failed, %d were in flight at the kill", res.FailedCalls, res.InFlightAtKill)
	}
}
