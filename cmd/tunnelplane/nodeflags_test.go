package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// --agent-keepalive-timeout (serve and node) mirrors TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT and
// reaches the node's limits; a bad value in the environment is an error, not the default.
func TestAgentKeepaliveTimeoutFlagAndEnv(t *testing.T) {
	parse := func(args ...string) (nodeLimits, []error) {
		t.Helper()
		var l nodeLimits
		var errs []error
		fs := pflag.NewFlagSet("node", pflag.ContinueOnError)
		nodeLimitFlags(fs, &l, &errs)
		if err := fs.Parse(args); err != nil {
			t.Fatalf("parse %v: %v", args, err)
		}
		return l, errs
	}
	if l, errs := parse(); l.AgentKeepaliveTimeout != 5*time.Second || len(errs) != 0 {
		t.Fatalf("default %v %v", l.AgentKeepaliveTimeout, errs)
	}
	if l, _ := parse("--agent-keepalive-timeout", "2s"); l.AgentKeepaliveTimeout != 2*time.Second {
		t.Fatalf("flag: %v", l.AgentKeepaliveTimeout)
	}
	t.Setenv("TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT", "3s")
	if l, _ := parse(); l.AgentKeepaliveTimeout != 3*time.Second {
		t.Fatalf("env: %v", l.AgentKeepaliveTimeout)
	}
	t.Setenv("TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT", "soon")
	if _, errs := parse(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT") {
		t.Fatalf("bad env value: %v", errs)
	}
	for _, cmd := range []string{"node", "serve"} {
		if r := tp(t, cmd, "--help"); !strings.Contains(r.stdout, "--agent-keepalive-timeout") || !strings.Contains(r.stdout, "TUNNELPLANE_AGENT_KEEPALIVE_TIMEOUT") {
			t.Errorf("%s --help does not list --agent-keepalive-timeout:\n%s", cmd, r.stdout)
		}
	}
}
