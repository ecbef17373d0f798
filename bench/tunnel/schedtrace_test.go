package tunnel

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// perf script lines for two chunks through origin 100 → agent 200 → node 300 → caller 400, with
// noise around them: the agent's sysmon thread, another process, a chunk the caller never gets.
const perfScript = `
     100/101   [000]    10.000000: sched:sched_waking: comm=tp pid=201 prio=120 target_cpu=001
     100/101   [000]    10.000005: sched:sched_switch: prev_comm=tp prev_pid=101 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
       0/0     [001]    10.000040: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=tp next_pid=201 next_prio=120
     200/201   [001]    10.000050: sched:sched_waking: comm=tp pid=202 prio=120 target_cpu=001
     555/556   [000]    10.000060: sched:sched_waking: comm=other process pid=557 prio=120 target_cpu=000
     200/201   [001]    10.000100: sched:sched_waking: comm=tp pid=301 prio=120 target_cpu=000
       0/0     [000]    10.000130: sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=tp next_pid=301 next_prio=120
     300/301   [000]    10.000210: sched:sched_waking: comm=tp pid=401 prio=120 target_cpu=001
     200/201   [001]    10.000220: sched:sched_switch: prev_comm=tp prev_pid=201 prev_prio=120 prev_state=S ==> next_comm=tp next_pid=401 next_prio=120
     400/401   [001]    10.000300: sched:sched_switch: prev_comm=tp prev_pid=401 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
     100/101   [000]    10.010000: sched:sched_waking: comm=tp pid=201 prio=120 target_cpu=000
     100/101   [000]    10.010010: sched:sched_switch: prev_comm=tp prev_pid=101 prev_prio=120 prev_state=S ==> next_comm=tp next_pid=201 next_prio=120
     200/201   [000]    10.010070: sched:sched_waking: comm=tp pid=301 prio=120 target_cpu=001
       0/0     [001]    10.010100: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=tp next_pid=301 next_prio=120
     300/301   [001]    10.010150: sched:sched_waking: comm=tp pid=401 prio=120 target_cpu=001
     300/301   [001]    10.010160: sched:sched_switch: prev_comm=tp prev_pid=301 prev_prio=120 prev_state=S ==> next_comm=tp next_pid=401 next_prio=120
     100/101   [000]    10.020000: sched:sched_waking: comm=tp pid=201 prio=120 target_cpu=000
     100/101   [000]    10.020010: sched:sched_switch: prev_comm=tp prev_pid=101 prev_prio=120 prev_state=S ==> next_comm=tp next_pid=201 next_prio=120
     200/201   [000]    10.020070: sched:sched_waking: comm=tp pid=301 prio=120 target_cpu=001
     200/202   [001]    10.020080: sched:sched_switch: prev_comm=tp prev_pid=202 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
`

// The parser reads perf's records, and the chunks are followed hop by hop: two complete chunks
// (the agent woken in 40 and 10 µs, running 60 and 60: the median is the upper middle of two);
// the third never reaches the caller.
func TestFollowChunksThroughPerfRecords(t *testing.T) {
	evs, pidOf, err := parsePerfSched(strings.NewReader(perfScript))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 20 || pidOf[202] != 200 || pidOf[556] != 555 {
		t.Fatalf("%d events, pidOf %v", len(evs), pidOf)
	}
	hops := followChunks(evs, pidOf, []int{100, 200, 300, 400}, []string{"agent", "node", "caller"})
	want := []Hop{
		{Process: "agent", Chunks: 2, WakeUSP50: 40, RunUSP50: 60}, // wakes 40, 10; runs 60, 60
		{Process: "node", Chunks: 2, WakeUSP50: 30, RunUSP50: 80},  // wakes 30, 30; runs 80, 50
		{Process: "caller", Chunks: 2, WakeUSP50: 10, RunUSP50: 0}, // wakes 10, 10
	}
	for i, h := range hops {
		w := want[i]
		if h.Process != w.Process || h.Chunks != w.Chunks || !near(h.WakeUSP50, w.WakeUSP50) || !near(h.RunUSP50, w.RunUSP50) {
			t.Errorf("hop %d: %+v, want %+v", i, h, w)
		}
	}
	if _, _, err := parsePerfSched(strings.NewReader("nothing here\n")); err == nil {
		t.Error("no records parsed without an error")
	}
}

func near(a, b float64) bool { return a-b < 0.01 && b-a < 0.01 }

// A real recording, where perf can trace: the bench's stream phase reports every hop.
func TestBenchSchedTrace(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("starts several processes")
	}
	probe := filepath.Join(t.TempDir(), "probe.data")
	if out, err := exec.Command("perf", "record", "-a", "-q", "-e", "sched:sched_switch", "-o", probe, "--", "true").CombinedOutput(); err != nil {
		t.Skipf("perf cannot trace the scheduler here: %v %s", err, out)
	}
	t.Setenv(childEnv, "1")
	res, err := Run(context.Background(), Options{
		Duration: 150 * time.Millisecond, Rounds: 1, Streams: 3, StreamChunks: 10, StreamInterval: 5 * time.Millisecond,
		Exe: os.Args[0], ExeArgs: []string{}, Phases: []string{"stream"}, SchedTraceDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"direct": 1, "tunnel": 3, "relays": 3} {
		hops := res.Hops[name]
		if len(hops) != n || hops[0].Chunks < 5 || !(hops[0].WakeUSP50 > 0) || (n > 1 && !(hops[0].RunUSP50 > 0)) {
			t.Errorf("%s: %+v", name, hops)
		}
	}
}
