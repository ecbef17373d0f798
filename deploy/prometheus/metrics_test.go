package promdeploy_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunnelplane/tunnelplane/internal/logtest"
	"github.com/tunnelplane/tunnelplane/internal/poll"
	"github.com/tunnelplane/tunnelplane/siem"
)

// scripted fails its first delivery, refuses its second (siem.ErrRefused, a 4xx) and accepts
// the rest: one batch gives every series the rules watch, with both kinds of failure.
type scripted struct{ calls atomic.Int64 }

func (s *scripted) Deliver(_ context.Context, _ [][]byte) error {
	switch s.calls.Add(1) {
	case 1:
		return errors.New("connection reset by peer")
	case 2:
		return fmt.Errorf("receiver answered 403: %w", siem.ErrRefused)
	default:
		return nil
	}
}

// exported is what the product exports: metric name → label name → the values seen.
type exported map[string]map[string]map[string]bool

// observe runs a real forwarder (a real log, the product's siem.NewMetrics on a fresh registry)
// through a failure, a refusal and a delivery, and gathers its metrics.
func observe(t *testing.T) exported {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics, err := siem.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	log := logtest.Start(t, 10*time.Millisecond) // its genesis record is the one to forward
	f, err := siem.NewForwarder(siem.ForwarderConfig{SinkID: "rules-test", Store: log.Store, Pool: log.Pool,
		Transport: &scripted{}, Metrics: metrics, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		Format: func(e siem.Entry) ([]byte, error) { return []byte(e.Record.Type), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	poll.Until(t, 10*time.Second, "the forwarder delivers after a failure and a refusal", func() bool {
		st := f.Status()
		return st.Delivered > 0 && st.Retries >= 2
	})
	f.Stop()

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := exported{}
	for _, fam := range families {
		labels := map[string]map[string]bool{}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] == nil {
					labels[l.GetName()] = map[string]bool{}
				}
				labels[l.GetName()][l.GetValue()] = true
			}
		}
		got[fam.GetName()] = labels
	}
	return got
}

var (
	metricName = regexp.MustCompile(`\btunnelplane_[a-zA-Z0-9_]+`)
	selector   = regexp.MustCompile(`\b(tunnelplane_[a-zA-Z0-9_]+)\{([^}]*)\}`)
	matcher    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)"`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	series     = regexp.MustCompile(`series:\s*'([^']*)'`)
)

// The rules and the rule tests' input series name only metrics, labels and label values the
// product exports: renaming a metric or a label in siem/metrics.go fails here instead of
// silently turning an alert off (an alert on a series that does not exist never fires).
func TestRulesNameTheMetricsTheProductExports(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	got := observe(t)
	have := func(name string) bool { _, ok := got[name]; return ok }

	names := metricName.FindAllString(string(rules), -1)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) < 4 {
		t.Fatalf("%s names %q; want at least the refused, failures, delivered and lag metrics", rulesFile, names)
	}
	for _, name := range names {
		if !have(name) {
			t.Errorf("%s uses %s, which siem.NewMetrics does not export (it exports %s)", rulesFile, name, strings.Join(slices.Sorted(maps.Keys(got)), ", "))
		}
	}

	// A matcher on a label the metric lacks, or on a value it never takes, selects nothing.
	for _, file := range []struct {
		name string
		text string
	}{{rulesFile, string(rules)}, {rulesTestFile, string(tests)}} {
		for _, sel := range selector.FindAllStringSubmatch(file.text, -1) {
			labels, ok := got[sel[1]]
			if !ok {
				t.Errorf("%s: %s is not exported", file.name, sel[0])
				continue
			}
			for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
				values, ok := labels[m[1]]
				switch {
				case !ok:
					t.Errorf("%s: %s: %s has no label %s (it has %s)", file.name, sel[0], sel[1], m[1], strings.Join(slices.Sorted(maps.Keys(labels)), ", "))
				case m[1] != "sink_id" && m[2] == "=" && !values[m[3]]:
					t.Errorf("%s: %s: %s never has %s=%q (seen: %s)", file.name, sel[0], sel[1], m[1], m[3], strings.Join(slices.Sorted(maps.Keys(values)), ", "))
				}
			}
		}
	}
	// Aggregating or matching on a label no metric has gives one group for all sinks.
	all := map[string]bool{}
	for _, name := range names {
		for l := range got[name] {
			all[l] = true
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(string(rules), -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !all[l] {
				t.Errorf("%s: %s: no metric the rules use has a label %s", rulesFile, g[0], l)
			}
		}
	}
	// The test inputs are shaped like a real scrape: the same label names, no more, no fewer.
	inputs := series.FindAllStringSubmatch(string(tests), -1)
	if len(inputs) == 0 {
		t.Fatalf("%s has no input series", rulesTestFile)
	}
	for _, in := range inputs {
		name, _, _ := strings.Cut(in[1], "{")
		labels, ok := got[name]
		if !ok {
			t.Errorf("%s: series %s: %s is not exported", rulesTestFile, in[1], name)
			continue
		}
		var used []string
		for _, m := range matcher.FindAllStringSubmatch(in[1], -1) {
			used = append(used, m[1])
		}
		slices.Sort(used)
		if want := slices.Sorted(maps.Keys(labels)); !slices.Equal(used, want) {
			t.Errorf("%s: series %s has labels %q; the product exports %s with %q", rulesTestFile, in[1], used, name, want)
		}
	}
}
