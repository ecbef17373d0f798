package tunnel

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelplane/tunnelplane/bench/stats"
)

// Hop is one process on a streamed chunk's way, seen by the kernel's scheduler: how long its
// thread waited to run after the previous process woke it (wake), and how long it then ran until
// it woke the next process (run). Medians over the chunks of the first round's stream phase.
type Hop struct {
	Process   string  `json:"process"`
	Chunks    int     `json:"chunks"`
	WakeUSP50 float64 `json:"wake_us_p50"`
	RunUSP50  float64 `json:"run_us_p50,omitempty"` // not for the caller, where the chunk ends
}

// schedEvent is one sched_waking or sched_switch record of `perf script`.
type schedEvent struct {
	at     float64 // seconds
	pid    int     // of the thread the record was taken on (the waker, or the CPU's previous thread)
	cpu    int
	waking bool // else a switch
	tid    int  // waking: the thread woken; switch: the thread switched in
}

var (
	perfLine    = regexp.MustCompile(`^\s*(-?\d+)/(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(sched_waking|sched_switch):\s(.*)$`)
	perfWoken   = regexp.MustCompile(` pid=(\d+) prio=`)
	perfSwitchd = regexp.MustCompile(`next_pid=(\d+)`)
)

// parsePerfSched reads `perf script -F pid,tid,cpu,time,event,trace` output of sched_waking and
// sched_switch records. pidOf maps every thread seen to its process.
func parsePerfSched(r io.Reader) (evs []schedEvent, pidOf map[int]int, err error) {
	pidOf = map[int]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := perfLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		tid, _ := strconv.Atoi(m[2])
		cpu, _ := strconv.Atoi(m[3])
		at, err := strconv.ParseFloat(m[4], 64)
		if err != nil {
			return nil, nil, fmt.Errorf("perf script: %q: %w", sc.Text(), err)
		}
		if pid > 0 {
			pidOf[tid] = pid
		}
		e := schedEvent{at: at, pid: pid, cpu: cpu, waking: m[5] == "sched_waking"}
		re := perfSwitchd
		if e.waking {
			re = perfWoken
		}
		t := re.FindStringSubmatch(m[6])
		if t == nil {
			return nil, nil, fmt.Errorf("perf script: no thread in %q", sc.Text())
		}
		e.tid, _ = strconv.Atoi(t[1])
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("perf script: %w", err)
	}
	if len(evs) == 0 {
		return nil, nil, errors.New("perf script: no sched_waking or sched_switch records")
	}
	slices.SortStableFunc(evs, func(a, b schedEvent) int { return cmp.Compare(a.at, b.at) })
	return evs, pidOf, nil
}

// maxChain bounds how long after the first process is woken a chunk may take to reach the last.
const maxChain = 3 * time.Millisecond

// followChunks traces chunks along path (process ids: the origin, then each process in turn; the
// last is the caller): every time the origin wakes a thread of path[1] starts one. For each hop it
// takes the wake (woken → switched in) and run (switched in → waking a thread of the next process)
// times; a chunk that cannot be followed to the caller within maxChain is left out.
func followChunks(evs []schedEvent, pidOf map[int]int, path []int, names []string) []Hop {
	wake := make([][]float64, len(path)-1)
	run := make([][]float64, len(path)-1)
	for i, e := range evs {
		if !e.waking || e.pid != path[0] || pidOf[e.tid] != path[1] {
			continue
		}
		start, cur := e.at, e
		var w, r []float64
		j := i
		for k := 1; k < len(path); k++ {
			in := -1
			for x := j + 1; x < len(evs) && evs[x].at-start < maxChain.Seconds(); x++ {
				if !evs[x].waking && evs[x].tid == cur.tid {
					in = x
					break
				}
			}
			if in < 0 {
				break
			}
			w = append(w, (evs[in].at-cur.at)*1e6)
			if k == len(path)-1 {
				break
			}
			next := -1
			for x := in + 1; x < len(evs) && evs[x].at-start < maxChain.Seconds(); x++ {
				if evs[x].waking && evs[x].pid == path[k] && pidOf[evs[x].tid] == path[k+1] {
					next = x
					break
				}
			}
			if next < 0 {
				break
			}
			r = append(r, (evs[next].at-evs[in].at)*1e6)
			cur, j = evs[next], next
		}
		if len(w) != len(path)-1 {
			continue
		}
		for k := range w {
			wake[k] = append(wake[k], w[k])
			if k < len(r) {
				run[k] = append(run[k], r[k])
			}
		}
	}
	hops := make([]Hop, len(path)-1)
	for k := range hops {
		hops[k] = Hop{Process: names[k], Chunks: len(wake[k]), WakeUSP50: stats.UpperMedian(wake[k])}
		if len(run[k]) > 0 {
			hops[k].RunUSP50 = stats.UpperMedian(run[k])
		}
	}
	return hops
}

// schedRecorder runs `perf record` on every CPU for scheduler events.
type schedRecorder struct {
	cmd    *exec.Cmd
	data   string
	stderr bytes.Buffer
	done   chan error // Wait's result; stderr may be read once it has come
}

// perfSetup is how long perf is given to start recording before the traced phase begins.
const perfSetup = 500 * time.Millisecond

func startSchedRecord(dir string) (*schedRecorder, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &schedRecorder{data: filepath.Join(dir, "sched.data"), done: make(chan error, 1)}
	r.cmd = exec.Command("perf", "record", "-a", "-q", "-e", "sched:sched_switch", "-e", "sched:sched_waking", "-o", r.data)
	r.cmd.Stderr = &r.stderr
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("sched trace: %w (perf is in Debian's linux-perf)", err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	select {
	case err := <-r.done: // it could not record (no permission, no tracepoints)
		return nil, fmt.Errorf("sched trace: perf record ended at once (%v): %s", err, strings.TrimSpace(r.stderr.String()))
	case <-time.After(perfSetup):
	}
	return r, nil
}

// stop ends the recording and reads it back.
func (r *schedRecorder) stop() ([]schedEvent, map[int]int, error) {
	_ = r.cmd.Process.Signal(os.Interrupt)
	// perf writes its data and then ends by the SIGINT it was sent.
	if err := <-r.done; err != nil && r.cmd.ProcessState.String() != "signal: interrupt" {
		return nil, nil, fmt.Errorf("sched trace: perf record: %w: %s", err, strings.TrimSpace(r.stderr.String()))
	}
	script := exec.Command("perf", "script", "-i", r.data, "-F", "pid,tid,cpu,time,event,trace")
	var stderr bytes.Buffer
	script.Stderr = &stderr
	out, err := script.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := script.Start(); err != nil {
		return nil, nil, fmt.Errorf("sched trace: perf script: %w", err)
	}
	evs, pidOf, perr := parsePerfSched(out)
	_, _ = io.Copy(io.Discard, out)
	if err := script.Wait(); err != nil {
		return nil, nil, fmt.Errorf("sched trace: perf script: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return evs, pidOf, perr
}

// hopLine renders hops for the progress output.
func hopLine(hops []Hop) string {
	var parts []string
	for _, h := range hops {
		s := fmt.Sprintf("%s wake %.0f", h.Process, h.WakeUSP50)
		if h.RunUSP50 > 0 {
			s += fmt.Sprintf(" run %.0f", h.RunUSP50)
		}
		parts = append(parts, s)
	}
	n := 0
	if len(hops) > 0 {
		n = hops[0].Chunks
	}
	return fmt.Sprintf("%s µs (%d chunks)", strings.Join(parts, " · "), n)
}

// hopPath is a chunk's way through processes (origin first, caller last) and the names of the
// processes after the origin.
type hopPath struct {
	pids  []int
	names []string
}

// schedTraced runs f under a scheduler recording in dir and follows the chunks along each path
// (asked for after f, when every process on them exists).
func schedTraced(dir string, f func() error, paths func() map[string]hopPath) (map[string][]Hop, error) {
	rec, err := startSchedRecord(dir)
	if err != nil {
		return nil, err
	}
	ferr := f()
	evs, pidOf, err := rec.stop()
	if ferr != nil {
		return nil, ferr
	}
	if err != nil {
		return nil, err
	}
	out := map[string][]Hop{}
	for name, p := range paths() {
		out[name] = followChunks(evs, pidOf, p.pids, p.names)
	}
	return out, nil
}
