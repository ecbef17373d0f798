package tunnel

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"sync/atomic"

	"github.com/tunnelplane/tunnelplane/domain"
)

// callCounts is the node's answer to "calls": what its sink took over the run.
type callCounts struct {
	Recorded int64 `json:"recorded"`
	Dropped  int64 `json:"dropped"`
}

// In the node child only.
var callsRecorded, callsDropped atomic.Int64

// callsSink is the bench node's Sink: other facts are dropped, as before; each batch of call
// records is encoded and signed, the CPU a node's publisher spends on it (NATS is not in the
// bench: `bench calls` measures that side).
type callsSink struct{ key ed25519.PrivateKey }

func newCallsSink() *callsSink {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return &callsSink{key: key}
}

func (callsSink) AgentConnected(domain.AgentConnected)       {}
func (callsSink) AgentDisconnected(domain.AgentDisconnected) {}
func (callsSink) AgentReplaced(domain.AgentReplaced)         {}
func (callsSink) UsageRecorded(domain.UsageRecorded)         {}
func (callsSink) AgentReported(domain.Event)                 {}

func (s *callsSink) AccessCallsRecorded(b domain.AccessCallsRecorded) {
	raw, err := json.Marshal(b)
	if err != nil {
		return
	}
	_ = ed25519.Sign(s.key, raw)
	callsRecorded.Add(int64(len(b.Calls)))
	callsDropped.Add(b.Dropped)
}
