package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func valid() Options {
	return Options{Duration: time.Second, Rounds: 3, Clients: 16, Orgs: 4, Baseline: true}
}

// Every bad option is reported at once, named by its flag.
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*Options)
		want []string // substrings of the error; none: valid
	}{
		{"defaults of the command", func(*Options) {}, nil},
		{"no duration", func(o *Options) { o.Duration = 0 }, []string{"--duration"}},
		{"too many rounds", func(o *Options) { o.Rounds = 101 }, []string{"--rounds 101"}},
		{"no clients", func(o *Options) { o.Clients = 0 }, []string{"--clients 0", "--orgs 4"}},
		{"more orgs than clients", func(o *Options) { o.Orgs = 17 }, []string{"--orgs 17"}},
		{"everything wrong", func(o *Options) { *o = Options{Orgs: -1} }, []string{"--duration", "--rounds", "--clients", "--orgs"}},
	} {
		o := valid()
		c.edit(&o)
		err := o.Validate()
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", c.name, err, w)
			}
		}
	}
}

// A run refuses bad options and a missing control plane before it touches a database.
func TestRunChecksBeforeItStarts(t *testing.T) {
	t.Parallel()
	o := valid()
	o.AdminURL = "postgres://nobody@127.0.0.1:1/none"
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "Options.Start") {
		t.Fatalf("without Start: %v", err)
	}
	o.Clients = 0
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--clients") {
		t.Fatalf("bad options: %v", err)
	}
}

// The result is the median of the rounds (the upper middle of an even count, as always), the
// totals of commands and errors, and the ratio to the baseline only when it was measured.
func TestSummarize(t *testing.T) {
	t.Parallel()
	rounds := []*Result{
		{CommandsPerS: 300, VisibleP50: 2, VisibleP99: 9, WriteP50: 1, WriteP99: 4, BaselineCommandsPerS: 600, Commands: 10, Errors: 1},
		{CommandsPerS: 100, VisibleP50: 3, VisibleP99: 7, WriteP50: 2, WriteP99: 5, BaselineCommandsPerS: 400, Commands: 20},
		{CommandsPerS: 200, VisibleP50: 1, VisibleP99: 8, WriteP50: 3, WriteP99: 6, BaselineCommandsPerS: 500, Commands: 30, Errors: 2},
		{CommandsPerS: 400, VisibleP50: 4, VisibleP99: 6, WriteP50: 4, WriteP99: 3, BaselineCommandsPerS: 800, Commands: 40},
	}
	o := valid()
	o.Rounds = len(rounds)
	got := summarize(o, rounds)
	if got.CommandsPerS != 300 || got.VisibleP50 != 3 || got.VisibleP99 != 8 || got.WriteP50 != 3 || got.WriteP99 != 5 {
		t.Errorf("medians %+v", got)
	}
	if got.BaselineCommandsPerS != 600 || got.Ratio != 0.5 || got.Commands != 100 || got.Errors != 3 {
		t.Errorf("baseline, ratio, totals %+v", got)
	}
	if got.Clients != 16 || got.Orgs != 4 || got.Rounds != 4 || got.DurationS != 1 || got.Workload != workload {
		t.Errorf("settings %+v", got)
	}
	o.Baseline = false
	if got := summarize(o, rounds); got.BaselineCommandsPerS != 0 || got.Ratio != 0 {
		t.Errorf("without the baseline: %+v", got)
	}
}

// Latencies are reported in milliseconds, to the microsecond, by nearest rank.
func TestPercentileMS(t *testing.T) {
	t.Parallel()
	d := []time.Duration{4 * time.Millisecond, 1500 * time.Microsecond, 2*time.Millisecond + 1234*time.Nanosecond, 3 * time.Millisecond}
	if got := percentileMS(d, .5); got != 2.001 {
		t.Errorf("p50 %v", got)
	}
	if got := percentileMS(d, .99); got != 4 {
		t.Errorf("p99 %v", got)
	}
	if got := percentileMS(nil, .5); got != 0 {
		t.Errorf("p50 of none %v", got)
	}
}
