package ledger

import (
	"fmt"
)

// ExpectedVersion is the optimistic-concurrency condition of an append. Stream versions count
// events: a stream with N events is at version N, and a stream that does not exist is at 0.
type ExpectedVersion struct {
	exact bool
	v     uint64
}

var (
	// AnyVersion appends whatever the stream's version.
	AnyVersion = ExpectedVersion{}
	// NoStream appends only when the stream has no events yet.
	NoStream = ExpectedVersion{exact: true, v: 0}
)

// Exact appends only when the stream is at version v.
func Exact(v uint64) ExpectedVersion { return ExpectedVersion{exact: true, v: v} }

func (e ExpectedVersion) Matches(actual uint64) bool { return !e.exact || e.v == actual }

func (e ExpectedVersion) String() string {
	switch {
	case !e.exact:
		return "any version"
	case e.v == 0:
		return "no stream"
	default:
		return fmt.Sprintf("version %d", e.v)
	}
}
