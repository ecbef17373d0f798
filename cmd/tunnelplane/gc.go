package main

import (
	"context"

	"github.com/tunnelplane/tunnelplane/dataplane/node"
)

// tuneGC sets GOGC=400 (unless GOGC or GOMEMLIMIT is set) in the long-running processes. Both
// planes allocate briskly with small live heaps — the node per SSH packet, the control plane per
// request, event and row — and at the default GOGC collection took a fifth of the node's CPU and
// a sixth of the control plane's (`bench api`: 1665 → 1970 commands/s). A heap five times the live
// data is a few tens of MB here.
func tuneGC() { node.TuneGC() }

// governProcs runs the process on one P while it uses little CPU and on all of them under load
// (node.GovernProcs), in the processes that run a node: a second P only adds scheduler
// wake-ups to each streamed chunk while one P has work enough.
func governProcs(ctx context.Context) (stop func()) {
	gov := &node.ProcsGovernor{}
	_ = gov.Start(ctx) // it starts nothing where it cannot govern
	return gov.Stop
}
