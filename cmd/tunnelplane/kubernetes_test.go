package main

import (
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/deploy/kubernetes"
)

// envOfFlag matches the environment variable a flag's help names.
var envOfFlag = regexp.MustCompile(`env (TUNNELPLANE_[A-Z0-9_]+)`)

// Every tunnelplane command line in the Kubernetes manifests exists in this binary: its
// subcommand, its flags, and every TUNNELPLANE_ variable of its environment as the variable a
// flag of that command (or a global one) reads; the preStop hook's command too, with the
// variables it needs set. Other variables are only those Go's runtime and TLS stack read, and the
// pod's name and namespace from the downward API.
func TestKubernetesManifestsUseRealFlagsAndEnv(t *testing.T) {
	t.Parallel()
	goEnv := []string{"SSL_CERT_DIR", "GOMEMLIMIT"}
	// The pod's own name and namespace from the downward API, which other values name as
	// $(POD_NAME) and $(POD_NAMESPACE).
	podEnv := []string{"POD_NAME", "POD_NAMESPACE"}
	for _, dir := range []string{"single", "cluster"} {
		objs, err := kubernetes.Render("../../deploy/kubernetes/overlays/" + dir)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := kubernetes.Commands(objs)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range cmds {
			if !strings.HasPrefix(c.Image, "tunnelplane/") {
				continue
			}
			n++
			where := dir + " " + c.Workload + "/" + c.Container
			cmd := findCommand(t, where, c.Args)
			envs := flagEnvs(cmd)
			for name := range c.Env {
				if slices.Contains(podEnv, name) && strings.HasPrefix(c.Env[name], "field:") {
					continue
				}
				if strings.HasPrefix(name, "TUNNELPLANE_") && !envs[name] || !strings.HasPrefix(name, "TUNNELPLANE_") && !slices.Contains(goEnv, name) {
					t.Errorf("%s: %s sets %s, which %q does not read", where, c.Workload, name, cmd.CommandPath())
				}
			}
			if c.PreStop == nil {
				continue
			}
			// The hook is the image's binary; what follows is a command line of it.
			hook := findCommand(t, where+" preStop", c.PreStop[1:])
			hookEnvs := flagEnvs(hook)
			for _, need := range []string{"TUNNELPLANE_HEALTH_ADDR", "TUNNELPLANE_DRAIN_TIMEOUT"} {
				if !hookEnvs[need] || c.Env[need] == "" {
					t.Errorf("%s: preStop %q: %s read %t, set %q", where, c.PreStop, need, hookEnvs[need], c.Env[need])
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no container runs the tunnelplane image", dir)
		}
	}
}

// findCommand resolves args to a subcommand of a fresh root command and parses its flags.
func findCommand(t *testing.T, where string, args []string) *cobra.Command {
	t.Helper()
	root := newRootCommand(io.Discard, io.Discard)
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root {
		t.Fatalf("%s: %q is no tunnelplane command: %v", where, args, err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("%s: %q: %v", where, args, err)
	}
	if len(cmd.Flags().Args()) > 0 {
		t.Fatalf("%s: %q: arguments %q", where, args, cmd.Flags().Args())
	}
	return cmd
}

// flagEnvs lists the environment variables cmd's flags (its own and inherited) read.
func flagEnvs(cmd *cobra.Command) map[string]bool {
	out := map[string]bool{}
	add := func(f *pflag.Flag) {
		for _, m := range envOfFlag.FindAllStringSubmatch(f.Usage, -1) {
			out[m[1]] = true
		}
	}
	cmd.Flags().VisitAll(add)
	cmd.InheritedFlags().VisitAll(add)
	return out
}
