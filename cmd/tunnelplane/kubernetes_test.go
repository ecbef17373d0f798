package main

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelplane/tunnelplane/deploy/kubernetes"
	"github.com/tunnelplane/tunnelplane/internal/nodeapp"
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

// podRef matches a $(VAR) reference in a container's environment, which Kubernetes expands.
var podRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// The cluster's node values that name the pod are, once Kubernetes has expanded them for each
// replica, what the node takes (its name a node name, its peer URL one a route entry may carry)
// and each replica's own: one peer URL for all would send forwarded calls to any of them.
func TestKubernetesNodeReplicasExpandToConfigsOfTheirOwn(t *testing.T) {
	t.Parallel()
	objs, err := kubernetes.Render("../../deploy/kubernetes/overlays/cluster")
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := kubernetes.Commands(objs)
	if err != nil {
		t.Fatal(err)
	}
	replicas := map[string]int32{}
	for _, w := range kubernetes.Workloads(objs) {
		replicas[w.Name] = w.Replicas
	}
	n := 0
	for _, c := range cmds {
		if !strings.HasPrefix(c.Image, "tunnelplane/") || len(c.Args) == 0 || c.Args[0] != "node" {
			continue
		}
		n++
		names, peers := map[string]bool{}, map[string]bool{}
		for i := range replicas[c.Workload] {
			field := map[string]string{"field:metadata.name": fmt.Sprintf("%s-%d", c.Workload, i), "field:metadata.namespace": "tunnelplane"}
			expand := func(name string) string {
				return podRef.ReplaceAllStringFunc(c.Env[name], func(ref string) string {
					v, ok := field[c.Env[podRef.FindStringSubmatch(ref)[1]]]
					if !ok {
						t.Errorf("%s: %s names %s, which is not the pod's name or namespace", c.Workload, name, ref)
					}
					return v
				})
			}
			cfg := nodeapp.Config{
				DataDir: c.Env["TUNNELPLANE_DATA_DIR"], Name: expand("TUNNELPLANE_NODE_NAME"), ListenAddr: c.Env["TUNNELPLANE_NODE_ADDR"],
				PublicURL: expand("TUNNELPLANE_NODE_PUBLIC_URL"), PeerURL: expand("TUNNELPLANE_NODE_PEER_URL"),
				BaseDomain: c.Env["TUNNELPLANE_BASE_DOMAIN"], LoginURL: c.Env["TUNNELPLANE_LOGIN_URL"],
				// From the Secret tunnelplane-nodes, which the manifests do not hold.
				NATSURL:      "tls://node-0193f2a4:pw@tunnelplane-nats:4222",
				ControlPlane: nodeapp.NewRESTControlPlane(c.Env["TUNNELPLANE_API_URL"], ""),
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("%s replica %d: %v", c.Workload, i, err)
			}
			if cfg.PeerURL == "" || peers[cfg.PeerURL] || names[cfg.Name] {
				t.Errorf("%s replica %d: name %q, peer URL %q: not its own", c.Workload, i, cfg.Name, cfg.PeerURL)
			}
			names[cfg.Name], peers[cfg.PeerURL] = true, true
		}
		if len(peers) < 2 {
			t.Errorf("%s: %d peer URLs over %d replicas, want one each of at least two", c.Workload, len(peers), replicas[c.Workload])
		}
	}
	if n == 0 {
		t.Error("the cluster runs no tunnelplane node")
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
