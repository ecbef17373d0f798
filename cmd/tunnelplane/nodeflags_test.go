package main

import (
	"io"
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

// --failover-wait (serve and node) mirrors TUNNELPLANE_FAILOVER_WAIT: 5s by default, and 0 turns
// the wait off (a negative duration for the node, whose zero is its default).
func TestFailoverWaitFlagAndEnv(t *testing.T) {
	parse := func(args ...string) (nodeLimits, []error, error) {
		t.Helper()
		var l nodeLimits
		var errs []error
		fs := pflag.NewFlagSet("node", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		nodeLimitFlags(fs, &l, &errs)
		return l, errs, fs.Parse(args)
	}
	if l, errs, _ := parse(); l.FailoverWait != 5*time.Second || l.MaxQueuedPerTunnel != 256 || len(errs) != 0 {
		t.Fatalf("defaults %v %d %v", l.FailoverWait, l.MaxQueuedPerTunnel, errs)
	}
	if l, _, _ := parse("--failover-wait", "2s", "--max-queued-per-tunnel", "9"); l.FailoverWait != 2*time.Second || l.MaxQueuedPerTunnel != 9 {
		t.Fatalf("flags: %v %d", l.FailoverWait, l.MaxQueuedPerTunnel)
	}
	if l, _, _ := parse("--failover-wait", "0"); l.FailoverWait >= 0 {
		t.Fatalf("--failover-wait 0 gives %v: the node would wait its default", l.FailoverWait)
	}
	if _, _, err := parse("--failover-wait", "-1s"); err == nil {
		t.Fatal("a negative --failover-wait was taken")
	}
	t.Setenv("TUNNELPLANE_FAILOVER_WAIT", "0s")
	if l, _, _ := parse(); l.FailoverWait >= 0 {
		t.Fatalf("env 0s: %v", l.FailoverWait)
	}
	t.Setenv("TUNNELPLANE_FAILOVER_WAIT", "soon")
	if _, errs, _ := parse(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "TUNNELPLANE_FAILOVER_WAIT") {
		t.Fatalf("bad env value: %v", errs)
	}
	for _, cmd := range []string{"node", "serve"} {
		if r := tp(t, cmd, "--help"); !strings.Contains(r.stdout, "--failover-wait") || !strings.Contains(r.stdout, "TUNNELPLANE_FAILOVER_WAIT") {
			t.Errorf("%s --help does not list --failover-wait:\n%s", cmd, r.stdout)
		}
	}
}
