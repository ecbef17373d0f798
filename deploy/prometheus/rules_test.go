package promdeploy_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	rulesFile     = "siem-alerts.yml"
	rulesTestFile = "siem-alerts_test.yml"
)

// promtool is promtool's path. Without it a developer's run skips; CI fails, since `make deps`
// installs it (Debian package prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("promtool is not installed (%v); `make deps` installs it (Debian package prometheus)", err)
	}
	t.Skipf("promtool is not installed (%v), so the alert rules are not tested; `make deps` as root installs it (Debian package prometheus)", err)
	return ""
}

// runPromtool runs promtool in dir and returns its output and whether it succeeded.
func runPromtool(t *testing.T, dir string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run promtool %s: %v", strings.Join(args, " "), err)
	}
	return string(out), err == nil
}

func TestRulesAreValid(t *testing.T) {
	t.Parallel()
	if out, ok := runPromtool(t, ".", "check", "rules", rulesFile); !ok {
		t.Fatalf("promtool check rules %s:\n%s", rulesFile, out)
	}
}

// Each alert fires for the sinks it is about, after its wait, and for no other sink (the cases
// are in siem-alerts_test.yml).
func TestAlertsFireWhenTheyShouldAndOnlyThen(t *testing.T) {
	t.Parallel()
	if out, ok := runPromtool(t, ".", "test", "rules", rulesTestFile); !ok {
		t.Fatalf("promtool test rules %s:\n%s", rulesTestFile, out)
	}
}

// The rule tests would notice a rule that fires too readily or not at all: each mutant below is
// a valid rule file that siem-alerts_test.yml must reject. A mutation whose text is no longer in
// the rule fails the test; update it together with the rule.
func TestRuleTestsRejectBrokenRules(t *testing.T) {
	t.Parallel()
	promtool(t) // skip (or fail) once rather than in every mutant
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		name, alert, old, new string
	}{
		{"refusing without its wait (a refusal the next retry passes)", "SIEMSinkRefusing", "for: 2m", "for: 0m"},
		{"refusing on any value (a healthy sink)", "SIEMSinkRefusing", "tunnelplane_siem_refused == 1", "tunnelplane_siem_refused >= 0"},
		{"failing counts refusals", "SIEMSinkFailing", `{kind="failed"}`, ""},
		{"failing while deliveries get through", "SIEMSinkFailing",
			"increase(tunnelplane_siem_delivered_total[5m]) > 0", "increase(tunnelplane_siem_delivered_total[5m]) > 1000"},
		{"failing misses a sink that never delivered", "SIEMSinkFailing",
			"unless on (sink_id)\n          increase(tunnelplane_siem_delivered_total[5m]) > 0",
			"and on (sink_id)\n          increase(tunnelplane_siem_delivered_total[5m]) == 0"},
		{"failing sooner than after 10 minutes", "SIEMSinkFailing", "for: 10m", "for: 5m"},
		{"lagging at the threshold", "SIEMSinkLagging", "> 300", ">= 300"},
		{"lagging sooner than after 10 minutes", "SIEMSinkLagging", "for: 10m", "for: 5m"},
	} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			mutant := mutate(t, string(rules), m.alert, m.old, m.new)
			dir := t.TempDir()
			for name, b := range map[string][]byte{rulesFile: []byte(mutant), rulesTestFile: tests} {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if out, ok := runPromtool(t, dir, "check", "rules", rulesFile); !ok {
				t.Fatalf("the mutant is not a valid rule file, so it shows nothing:\n%s", out)
			}
			if out, ok := runPromtool(t, dir, "test", "rules", rulesTestFile); ok {
				t.Fatalf("%s passes with %s's %q replaced by %q:\n%s", rulesTestFile, m.alert, m.old, m.new, out)
			}
		})
	}
}

// mutate replaces old by new in the rule of alert, where old must occur exactly once.
func mutate(t *testing.T, rules, alert, old, new string) string {
	t.Helper()
	head := "- alert: " + alert + "\n"
	start := strings.Index(rules, head)
	if start < 0 {
		t.Fatalf("%s has no rule %s", rulesFile, alert)
	}
	end := len(rules)
	if i := strings.Index(rules[start+len(head):], "- alert: "); i >= 0 {
		end = start + len(head) + i
	}
	rule := rules[start:end]
	if n := strings.Count(rule, old); n != 1 {
		t.Fatalf("rule %s holds %q %d times, want once: update the mutation with the rule", alert, old, n)
	}
	return rules[:start] + strings.Replace(rule, old, new, 1) + rules[end:]
}
