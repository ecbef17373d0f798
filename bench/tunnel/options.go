package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"time"
)

// ErrInvalidOptions is returned by Options.Validate.
var ErrInvalidOptions = errors.New("tunnelbench: invalid options")

// Options configure a bench run.
type Options struct {
	// Duration of each request-rate measurement (default 2s).
	Duration time.Duration
	// Rounds of every direct/tunnel pair; medians are reported (default 3).
	Rounds int
	// BulkBytes is the size of the bulk download (default 1 GiB).
	BulkBytes int64
	// IdleAgents connect for the memory and connect-time measurement (default 300).
	IdleAgents int
	// Streams and StreamChunks, StreamInterval shape the streaming measurement (default 10
	// streams of 20 chunks 10ms apart).
	Streams, StreamChunks int
	StreamInterval        time.Duration
	// Exe and ExeArgs start a child: Exe ExeArgs… <role> (default: this executable and
	// "bench-tunnel-child").
	Exe     string
	ExeArgs []string
	// ProfileDir, when set, receives CPU profiles of the node and the agent for each phase.
	ProfileDir string
	// SchedTraceDir, when set, receives a `perf record` of the scheduler (sched_switch,
	// sched_waking on every CPU) during the first round's stream phase, and the result gets
	// Hops: per process on a chunk's way, how long it waited to run and how long it ran.
	// Needs perf (Debian: linux-perf) and the right to trace (root).
	SchedTraceDir string
	// Phases limits the run to some of Phases (nil: all). Values of skipped phases are zero and
	// their targets are left out of the result.
	Phases []string
	// Progress receives a line per phase (nil: none).
	Progress io.Writer
	Logger   *slog.Logger
}

func (o *Options) applyDefaults() {
	if o.Duration == 0 {
		o.Duration = 2 * time.Second
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.BulkBytes == 0 {
		o.BulkBytes = 1 << 30
	}
	if o.IdleAgents == 0 {
		o.IdleAgents = 300
	}
	if o.Streams == 0 {
		o.Streams = 10
	}
	if o.StreamChunks == 0 {
		o.StreamChunks = 20
	}
	if o.StreamInterval == 0 {
		o.StreamInterval = 10 * time.Millisecond
	}
	if o.Exe == "" {
		o.Exe, _ = os.Executable()
		if o.ExeArgs == nil {
			o.ExeArgs = []string{"bench-tunnel-child"}
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// AllPhases are the measurements a run can take, in the order it takes them.
var AllPhases = []string{"bulk", "c1", "c64", "c64key", "c64calls", "c64fwd", "stream", "idle"}

func (o *Options) runs(phase string) bool {
	return len(o.Phases) == 0 || slices.Contains(o.Phases, phase)
}

// Validate reports every bad option; zero values count as their defaults.
func (o Options) Validate() error {
	o.applyDefaults()
	var errs []error
	for _, p := range o.Phases {
		if !slices.Contains(AllPhases, p) {
			errs = append(errs, fmt.Errorf("%w: unknown phase %q (phases: %v)", ErrInvalidOptions, p, AllPhases))
		}
	}
	if o.Duration < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("%w: duration %v is below 100ms", ErrInvalidOptions, o.Duration))
	}
	if o.Rounds < 1 || o.BulkBytes < 1 || o.IdleAgents < 1 || o.Streams < 1 || o.StreamChunks < 1 || o.StreamInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: rounds, bulk bytes, idle agents and stream sizes must be positive", ErrInvalidOptions))
	}
	if o.Exe == "" {
		errs = append(errs, fmt.Errorf("%w: cannot find the executable to start children with", ErrInvalidOptions))
	}
	if o.SchedTraceDir != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			errs = append(errs, fmt.Errorf("%w: a scheduler trace needs perf (Debian package linux-perf): %w", ErrInvalidOptions, err))
		}
		if !o.runs("stream") {
			errs = append(errs, fmt.Errorf("%w: a scheduler trace is taken in the stream phase, which this run leaves out", ErrInvalidOptions))
		}
	}
	return errors.Join(errs...)
}
