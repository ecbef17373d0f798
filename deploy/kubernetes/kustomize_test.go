package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tunnelplane/tunnelplane/deploy/kubernetes"
)

var overlays = []string{"overlays/single", "overlays/cluster"}

func render(t *testing.T, dir string) []kubernetes.Object {
	t.Helper()
	objs, err := kubernetes.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s renders nothing", dir)
	}
	return objs
}

// dockerImage is the image the repository's Dockerfile says it builds (its "docker build -t"
// line) and the path of the binary in it (its ENTRYPOINT).
func dockerImage(t *testing.T) (image, binary string) {
	t.Helper()
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`docker build -t (\S+) `).FindSubmatch(df)
	e := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindSubmatch(df)
	if m == nil || e == nil {
		t.Fatalf("Dockerfile names no image (a docker build -t line) or no ENTRYPOINT [\"…\"]")
	}
	return string(m[1]), string(e[1])
}

// Every object of both overlays is of a kind we expect and decodes into its k8s.io/api type with
// no field the type does not know.
func TestOverlaysDecodeStrictly(t *testing.T) {
	t.Parallel()
	for _, dir := range overlays {
		objs := render(t, dir)
		seen := map[string]int{}
		for _, o := range objs {
			seen[o.Kind]++
		}
		for _, k := range []string{"ServiceAccount", "ConfigMap", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
			if seen[k] == 0 {
				t.Errorf("%s: no %s", dir, k)
			}
		}
	}
	// The decoder refuses what the API server would drop or refuse.
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80, targetPorts: 8080}]}\n",
		"apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n",
		"apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\n",
	} {
		if _, err := kubernetes.Decode([]byte(bad)); !errors.Is(err, kubernetes.ErrManifest) {
			t.Errorf("accepted %q: %v", bad, err)
		}
	}
}

// A broken manifest fails the render: a field Kubernetes does not know, in a copy of the
// overlays.
func TestABrokenManifestFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "overlays/cluster/node.yaml")
	b, err := os.ReadFile(node)
	if err != nil {
		t.Fatal(err)
	}
	broken := bytes.Replace(b, []byte("          readinessProbe:\n"), []byte("          readynessProbe:\n"), 1)
	if bytes.Equal(broken, b) {
		t.Fatal("node.yaml has no readinessProbe to break")
	}
	if err := os.WriteFile(node, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kubernetes.Render(filepath.Join(dir, "overlays/cluster")); !errors.Is(err, kubernetes.ErrManifest) || !strings.Contains(err.Error(), "readynessProbe") {
		t.Fatalf("a misspelt field rendered: %v", err)
	}
}

// Every pod runs as a non-root user with nothing it does not need: no privilege escalation, no
// capability, a read-only root filesystem (what must be written is a volume), RuntimeDefault
// seccomp, no service account token, and requests and limits for CPU and memory.
func TestPodsAreConfined(t *testing.T) {
	t.Parallel()
	for _, dir := range overlays {
		objs := render(t, dir)
		for _, w := range kubernetes.Workloads(objs) {
			where := dir + " " + w.Name
			ps := w.Pod.Spec
			sc := ps.SecurityContext
			if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod security context %+v", where, sc)
			}
			// tunnelplane refuses key files its group may read: the kubelet must not add group
			// read/write to the data dir's files at every mount.
			if usesImage(ps, "tunnelplane/") && sc != nil && sc.FSGroup != nil &&
				(sc.FSGroupChangePolicy == nil || *sc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch) {
				t.Errorf("%s: fsGroup without fsGroupChangePolicy OnRootMismatch: the keys' mode 0600 is lost at the next mount", where)
			}
			if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
				t.Errorf("%s: mounts a service account token", where)
			}
			volumes := map[string]corev1.Volume{}
			for _, v := range ps.Volumes {
				volumes[v.Name] = v
			}
			claims := map[string]bool{}
			if sts, ok := findObject[*appsv1.StatefulSet](objs, w.Name); ok {
				for _, c := range sts.Spec.VolumeClaimTemplates {
					claims[c.Name] = true
				}
			}
			for _, c := range append(ps.InitContainers, ps.Containers...) {
				where := where + "/" + c.Name
				cs := c.SecurityContext
				if cs == nil || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
					cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) != 0 || cs.Privileged != nil && *cs.Privileged {
					t.Errorf("%s: container security context %+v", where, cs)
				}
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
					if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
						t.Errorf("%s: %s request %s, limit %s", where, r, req.String(), lim.String())
					}
				}
				for _, m := range c.VolumeMounts {
					v, ok := volumes[m.Name]
					switch {
					case claims[m.Name]:
					case !ok:
						t.Errorf("%s: mounts %s, which is no volume", where, m.Name)
					case v.EmptyDir == nil && v.PersistentVolumeClaim == nil && !m.ReadOnly:
						t.Errorf("%s: %s is writable but neither an emptyDir nor a claim", where, m.MountPath)
					}
				}
			}
		}
	}
}

func usesImage(ps corev1.PodSpec, prefix string) bool {
	return slices.ContainsFunc(ps.Containers, func(c corev1.Container) bool { return strings.HasPrefix(c.Image, prefix) })
}

func findObject[T any](objs []kubernetes.Object, name string) (T, bool) {
	for _, o := range objs {
		if v, ok := o.Value.(T); ok && o.Name == name {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func objectsOf[T any](objs []kubernetes.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.Value.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// tunnelplaneCommands are the containers that run the tunnelplane image, by subcommand.
func tunnelplaneCommands(t *testing.T, objs []kubernetes.Object) map[string]kubernetes.Command {
	t.Helper()
	image, _ := dockerImage(t)
	cmds, err := kubernetes.Commands(objs)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kubernetes.Command{}
	for _, c := range cmds {
		if strings.HasPrefix(c.Image, "tunnelplane") || len(c.Args) > 0 && slices.Contains([]string{"serve", "control", "node"}, c.Args[0]) {
			if c.Image != image {
				t.Errorf("%s/%s runs image %q, not the Dockerfile's %q", c.Workload, c.Container, c.Image, image)
			}
			out[c.Args[0]] = c
		}
	}
	return out
}

// port is the port of a listen address in the environment ("0.0.0.0:9091").
func port(t *testing.T, c kubernetes.Command, env string) int32 {
	t.Helper()
	addr, ok := c.Env[env]
	if !ok {
		t.Fatalf("%s: %s is not set", c.Workload, env)
	}
	_, p, err := splitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %s=%q: %v", c.Workload, env, addr, err)
	}
	return p
}

func splitHostPort(addr string) (string, int32, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("no port")
	}
	p, err := strconv.ParseInt(addr[i+1:], 10, 32)
	return addr[:i], int32(p), err
}

// container finds a command's container in its workload.
func container(t *testing.T, objs []kubernetes.Object, c kubernetes.Command) (kubernetes.Workload, corev1.Container) {
	t.Helper()
	for _, w := range kubernetes.Workloads(objs) {
		if w.Name != c.Workload {
			continue
		}
		for _, ct := range w.Pod.Spec.Containers {
			if ct.Name == c.Container {
				return w, ct
			}
		}
	}
	t.Fatalf("no container %s/%s", c.Workload, c.Container)
	return kubernetes.Workload{}, corev1.Container{}
}

// probePort resolves a probe's port (a name or a number) to the container's port number.
func probePort(t *testing.T, ct corev1.Container, p *corev1.Probe) (string, int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("%s: no HTTP probe", ct.Name)
	}
	if p.HTTPGet.Port.StrVal == "" {
		return p.HTTPGet.Path, p.HTTPGet.Port.IntVal
	}
	for _, cp := range ct.Ports {
		if cp.Name == p.HTTPGet.Port.StrVal {
			return p.HTTPGet.Path, cp.ContainerPort
		}
	}
	t.Fatalf("%s: probe port %q is no container port", ct.Name, p.HTTPGet.Port.StrVal)
	return "", 0
}

// Probes: the control plane's /healthz and /readyz on its API address; the node's on its health
// listener, never on the tunnels' listener (where every path may be a tunnel's). The node drains
// before it stops, within the grace period; the preStop hook runs the image's binary.
func TestProbesAndDrain(t *testing.T) {
	t.Parallel()
	_, binary := dockerImage(t)
	for _, dir := range overlays {
		objs := render(t, dir)
		cmds := tunnelplaneCommands(t, objs)
		var nodeSide kubernetes.Command
		switch dir {
		case "overlays/single":
			serve, ok := cmds["serve"]
			if !ok {
				t.Fatalf("%s runs no tunnelplane serve", dir)
			}
			_, ct := container(t, objs, serve)
			if path, p := probePort(t, ct, ct.LivenessProbe); path != "/healthz" || p != port(t, serve, "TUNNELPLANE_API_ADDR") {
				t.Errorf("%s: liveness %s on %d", dir, path, p)
			}
			if path, p := probePort(t, ct, ct.ReadinessProbe); path != "/readyz" || p != port(t, serve, "TUNNELPLANE_HEALTH_ADDR") {
				t.Errorf("%s: readiness %s on %d", dir, path, p)
			}
			nodeSide = serve
		case "overlays/cluster":
			control, node := cmds["control"], cmds["node"]
			if control.Workload == "" || node.Workload == "" {
				t.Fatalf("%s runs no control plane or no node: %v", dir, cmds)
			}
			_, ct := container(t, objs, control)
			api := port(t, control, "TUNNELPLANE_API_ADDR")
			for probe, want := range map[*corev1.Probe]string{ct.LivenessProbe: "/healthz", ct.ReadinessProbe: "/readyz"} {
				if path, p := probePort(t, ct, probe); path != want || p != api {
					t.Errorf("%s: control probe %s on %d, want %s on %d", dir, path, p, want, api)
				}
			}
			_, nt := container(t, objs, node)
			health := port(t, node, "TUNNELPLANE_HEALTH_ADDR")
			for probe, want := range map[*corev1.Probe]string{nt.LivenessProbe: "/healthz", nt.ReadinessProbe: "/readyz"} {
				if path, p := probePort(t, nt, probe); path != want || p != health {
					t.Errorf("%s: node probe %s on %d, want %s on %d", dir, path, p, want, health)
				}
			}
			if health == port(t, node, "TUNNELPLANE_NODE_ADDR") {
				t.Errorf("%s: the node's health listener is its tunnels' listener", dir)
			}
			nodeSide = node
		}
		w, ct := container(t, objs, nodeSide)
		if want := []string{binary, "node", "drain"}; !slices.Equal(nodeSide.PreStop, want) {
			t.Errorf("%s: %s preStop %q, want %q", dir, w.Name, nodeSide.PreStop, want)
		}
		// The hook reaches the node's health listener through the environment it shares.
		if nodeSide.Env["TUNNELPLANE_HEALTH_ADDR"] == "" {
			t.Errorf("%s: %s has no TUNNELPLANE_HEALTH_ADDR for its preStop hook", dir, w.Name)
		}
		drain, err := time.ParseDuration(nodeSide.Env["TUNNELPLANE_DRAIN_TIMEOUT"])
		if err != nil {
			t.Errorf("%s: TUNNELPLANE_DRAIN_TIMEOUT: %v", dir, err)
		}
		grace := int64(30) // Kubernetes's default
		if g := w.Pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = *g
		}
		if time.Duration(grace)*time.Second < drain+10*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %d leaves the drain (%s) no time to stop after it", dir, grace, drain)
		}
		if ct.Lifecycle.PreStop.Exec == nil {
			t.Errorf("%s: preStop is not an exec hook", dir)
		}
	}
}

// selects reports whether a label selector picks the workload's pods.
func selects(t *testing.T, sel map[string]string, w kubernetes.Workload) bool {
	t.Helper()
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(w.Pod.Labels))
}

// Each workload has a PodDisruptionBudget and a NetworkPolicy of its own; the default policy
// denies ingress to every tunnelplane pod; nodes take their public port from anywhere (the other
// nodes' forwarded calls included), NATS its client port from the control plane and the nodes
// only and its routes from NATS only, the control plane its API from nodes and admins only.
func TestDisruptionBudgetsAndNetworkPolicies(t *testing.T) {
	t.Parallel()
	for _, dir := range overlays {
		objs := render(t, dir)
		pdbs := objectsOf[*policyv1.PodDisruptionBudget](objs)
		nps := objectsOf[*networkingv1.NetworkPolicy](objs)
		workloads := kubernetes.Workloads(objs)
		byName := map[string]kubernetes.Workload{}
		for _, w := range workloads {
			byName[w.Name] = w
			n := 0
			for _, p := range pdbs {
				if selects(t, p.Spec.Selector.MatchLabels, w) {
					n++
					if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
						t.Errorf("%s: PDB %s sets no budget", dir, p.Name)
					}
				}
			}
			if n != 1 {
				t.Errorf("%s: %s has %d PodDisruptionBudgets", dir, w.Name, n)
			}
			own, deny := 0, false
			for _, np := range nps {
				if !selects(t, np.Spec.PodSelector.MatchLabels, w) {
					continue
				}
				if len(np.Spec.Ingress) == 0 && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
					deny = true
				} else {
					own++
				}
			}
			if !deny || own != 1 {
				t.Errorf("%s: %s: default deny %t, %d policies of its own", dir, w.Name, deny, own)
			}
		}
		if dir != "overlays/cluster" {
			continue
		}
		// from lists who may reach a workload's port (by container port name): "*" for anyone.
		from := func(workload, portName string) []string {
			np, ok := findObject[*networkingv1.NetworkPolicy](objs, workload)
			if !ok {
				t.Fatalf("no NetworkPolicy %s", workload)
			}
			var who []string
			for _, r := range np.Spec.Ingress {
				if !slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.StrVal == portName }) {
					continue
				}
				if len(r.From) == 0 {
					who = append(who, "*")
				}
				for _, peer := range r.From {
					if peer.IPBlock != nil {
						who = append(who, "ip:"+peer.IPBlock.CIDR)
						continue
					}
					name := "?"
					if peer.PodSelector != nil {
						name = peer.PodSelector.MatchLabels["app.kubernetes.io/name"]
						if v := peer.PodSelector.MatchLabels["tunnelplane.dev/admin"]; v == "true" {
							name = "admin"
						}
					}
					if peer.NamespaceSelector != nil && name != "admin" {
						name = "ns:" + name
					}
					who = append(who, name)
				}
			}
			slices.Sort(who)
			return who
		}
		for _, c := range []struct {
			workload, port string
			want           []string
		}{
			{"tunnelplane-node", "public", []string{"*"}},
			{"tunnelplane-node", "health", nil},
			{"tunnelplane-control", "api", []string{"admin", "tunnelplane-node"}},
			{"tunnelplane-nats", "client", []string{"tunnelplane-control", "tunnelplane-node"}},
			{"tunnelplane-nats", "cluster", []string{"tunnelplane-nats"}},
			{"tunnelplane-nats", "monitor", nil},
		} {
			if got := from(c.workload, c.port); !slices.Equal(got, c.want) {
				t.Errorf("%s:%s reachable from %q, want %q", c.workload, c.port, got, c.want)
			}
		}
		// The same, pod to pod, as admits evaluates it for the node's peers.
		for _, c := range []struct {
			from, to, port string
			want           bool
		}{
			{"tunnelplane-node", "tunnelplane-node", "public", true},
			{"tunnelplane-control", "tunnelplane-node", "public", true},
			{"tunnelplane-node", "tunnelplane-node", "health", false},
			{"tunnelplane-node", "tunnelplane-control", "api", true},
			{"tunnelplane-nats", "tunnelplane-control", "api", false},
			{"tunnelplane-node", "tunnelplane-nats", "client", true},
			{"tunnelplane-node", "tunnelplane-nats", "cluster", false},
			{"tunnelplane-nats", "tunnelplane-nats", "cluster", true},
			{"tunnelplane-control", "tunnelplane-nats", "monitor", false},
		} {
			if got := admits(t, objs, byName[c.from], byName[c.to], c.port); got != c.want {
				t.Errorf("%s → %s:%s admitted %t, want %t", c.from, c.to, c.port, got, c.want)
			}
		}
	}
}

// checkNodes: the nodes are a StatefulSet of at least two, each replica with an identity of its
// own: its volume (a claim template at the data dir), its node id, NATS credential and enrollment
// token read from the shared Secret's files named after the pod (--identity-files), its name in
// the registry, and a peer URL at its own name in a headless Service that selects the node pods
// on their public port, which the NetworkPolicies let the other node pods reach. No node holds a
// superadmin's token.
func checkNodes(t *testing.T, objs []kubernetes.Object, cmd kubernetes.Command) {
	t.Helper()
	node, c := container(t, objs, cmd)
	sts, ok := findObject[*appsv1.StatefulSet](objs, node.Name)
	if !ok || node.Replicas < 2 {
		t.Fatalf("node: %s with %d replicas, want a StatefulSet of at least 2", node.Kind, node.Replicas)
	}
	env := cmd.Env
	// $(VAR) expands only variables declared before it in the same container.
	declared := map[string]int{}
	for i, e := range c.Env {
		declared[e.Name] = i
	}
	for _, name := range []string{"TUNNELPLANE_NODE_IDENTITY_FILES", "TUNNELPLANE_NODE_PEER_URL", "TUNNELPLANE_NODE_NAME"} {
		for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(env[name], -1) {
			if i, ok := declared[ref[1]]; !ok || i > declared[name] || !strings.HasPrefix(env[ref[1]], "field:") {
				t.Errorf("node: %s names $(%s), which is not a downward API value declared before it", name, ref[1])
			}
		}
	}
	if env["POD_NAME"] != "field:metadata.name" || env["POD_NAMESPACE"] != "field:metadata.namespace" || env["TUNNELPLANE_NODE_NAME"] != "$(POD_NAME)" {
		t.Errorf("node: POD_NAME %q, POD_NAMESPACE %q, name %q", env["POD_NAME"], env["POD_NAMESPACE"], env["TUNNELPLANE_NODE_NAME"])
	}
	files := env["TUNNELPLANE_NODE_IDENTITY_FILES"]
	dir, base := filepath.Dir(files), filepath.Base(files)
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range node.Pod.Spec.Volumes {
			if v.Name == m.Name && m.MountPath == dir && m.ReadOnly && v.Secret != nil && v.Secret.SecretName == "tunnelplane-nodes" && len(v.Secret.Items) == 0 {
				mounted = true
			}
		}
	}
	if base != "$(POD_NAME)" || !mounted {
		t.Errorf("node: identity files %q: want <read-only mount of the Secret tunnelplane-nodes>/$(POD_NAME)", files)
	}
	for _, k := range []string{"TUNNELPLANE_NODE_ID", "TUNNELPLANE_NATS_URL", "TUNNELPLANE_ENROLLMENT_TOKEN", "TUNNELPLANE_TOKEN"} {
		if v, ok := env[k]; ok {
			t.Errorf("node: %s=%q besides the identity files (every replica would share it)", k, v)
		}
	}
	claim := false
	for _, ct := range sts.Spec.VolumeClaimTemplates {
		for _, m := range c.VolumeMounts {
			claim = claim || m.Name == ct.Name && m.MountPath == env["TUNNELPLANE_DATA_DIR"]
		}
	}
	if !claim {
		t.Errorf("node: the data dir %q is not a volume claim template (each replica keeps its own identity)", env["TUNNELPLANE_DATA_DIR"])
	}
	peers, ok := findObject[*corev1.Service](objs, sts.Spec.ServiceName)
	want := "ws://$(POD_NAME)." + sts.Spec.ServiceName + ".$(POD_NAMESPACE).svc:"
	if !ok || peers.Spec.ClusterIP != corev1.ClusterIPNone || !maps.Equal(peers.Spec.Selector, sts.Spec.Selector.MatchLabels) || len(peers.Spec.Ports) != 1 {
		t.Fatalf("node: serviceName %q is not a headless Service of the node pods: %+v", sts.Spec.ServiceName, peers)
	}
	var public int32
	for _, p := range c.Ports {
		if p.Name == "public" {
			public = p.ContainerPort
		}
	}
	if port := peers.Spec.Ports[0].Port; env["TUNNELPLANE_NODE_PEER_URL"] != fmt.Sprintf("%s%d/v1/peer", want, port) || port != public || peers.Spec.Ports[0].TargetPort.StrVal != "public" {
		t.Errorf("node: peer URL %q, want %s<the headless Service's port, the node's public port %d>/v1/peer", env["TUNNELPLANE_NODE_PEER_URL"], want, public)
	}
	// A node forwards a call to the node holding its agent: the policies must let node pods
	// reach each other's public port.
	if !admits(t, objs, node, node, "public") {
		t.Error("node: the NetworkPolicies keep node pods from each other's public port (forwarded calls)")
	}
}

// admits reports whether the objects' NetworkPolicies let a pod of from reach a pod of to, in the
// same namespace, on to's container port named port: some policy selecting to's pods has an
// ingress rule for that port (by name or number; none listed is every port) with no peers (anyone)
// or a peer selecting from's pods. IP blocks are not evaluated: pod addresses are not known here.
func admits(t *testing.T, objs []kubernetes.Object, from, to kubernetes.Workload, port string) bool {
	t.Helper()
	var number int32
	for _, c := range to.Pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == port {
				number = p.ContainerPort
			}
		}
	}
	if number == 0 {
		t.Fatalf("%s has no container port %q", to.Name, port)
	}
	matches := func(sel *metav1.LabelSelector, w kubernetes.Workload) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("selector %+v: %v", sel, err)
		}
		return s.Matches(labels.Set(w.Pod.Labels))
	}
	for _, np := range objectsOf[*networkingv1.NetworkPolicy](objs) {
		if !matches(&np.Spec.PodSelector, to) {
			continue
		}
		for _, r := range np.Spec.Ingress {
			onPort := len(r.Ports) == 0 || slices.ContainsFunc(r.Ports, func(p networkingv1.NetworkPolicyPort) bool {
				return p.Port == nil || p.Port.StrVal == port || p.Port.StrVal == "" && p.Port.IntVal == number
			})
			if !onPort {
				continue
			}
			if len(r.From) == 0 {
				return true
			}
			for _, peer := range r.From {
				// A namespace selector alone admits every pod of the namespaces it selects; an
				// empty one selects every namespace, ours included.
				sameNamespace := peer.NamespaceSelector == nil || len(peer.NamespaceSelector.MatchLabels) == 0 && len(peer.NamespaceSelector.MatchExpressions) == 0
				if peer.IPBlock == nil && sameNamespace && (peer.PodSelector == nil || matches(peer.PodSelector, from)) {
					return true
				}
			}
		}
	}
	return false
}

// The cluster: two control plane replicas sharing their keys (sealed in the database by a
// key-encryption key both mount from one Secret, read-only), NATS on three servers routed to
// each other by name, the streams replicated on all three, and the copies of deploy/nats's
// configuration the same as the originals.
func TestClusterShape(t *testing.T) {
	t.Parallel()
	objs := render(t, "overlays/cluster")
	cmds := tunnelplaneCommands(t, objs)
	control, controlC := container(t, objs, cmds["control"])
	if control.Kind != "StatefulSet" || control.Replicas != 2 {
		t.Errorf("control: %s with %d replicas, want a StatefulSet of 2", control.Kind, control.Replicas)
	}
	kek := cmds["control"].Env["TUNNELPLANE_KEY_ENCRYPTION_KEY_FILE"]
	mounted := false
	for _, m := range controlC.VolumeMounts {
		if kek == "" || !strings.HasPrefix(kek, m.MountPath+"/") {
			continue
		}
		for _, v := range control.Pod.Spec.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "tunnelplane-control-keys" && m.ReadOnly {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("control: the key-encryption key %q is not a read-only mount of the Secret tunnelplane-control-keys", kek)
	}
	checkNodes(t, objs, cmds["node"])
	if cmds["control"].Env["TUNNELPLANE_DATABASE_URL"] != "secret:tunnelplane-database/url" {
		t.Errorf("control: the database URL is not the operator's Secret: %q", cmds["control"].Env["TUNNELPLANE_DATABASE_URL"])
	}

	nats, ok := findObject[*appsv1.StatefulSet](objs, "tunnelplane-nats")
	if !ok {
		t.Fatal("no NATS StatefulSet")
	}
	replicas := *nats.Spec.Replicas
	if replicas != 3 {
		t.Errorf("NATS replicas %d", replicas)
	}
	if got := cmds["control"].Env["TUNNELPLANE_NATS_REPLICAS"]; got != strconv.Itoa(int(replicas)) {
		t.Errorf("streams on %s servers of %d", got, replicas)
	}
	headless, ok := findObject[*corev1.Service](objs, nats.Spec.ServiceName)
	if !ok || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("NATS serviceName %q: %+v", nats.Spec.ServiceName, headless)
	}
	var routes string
	nc := nats.Spec.Template.Spec.Containers[0]
	for _, e := range nc.Env {
		if e.Name == "NATS_ROUTES" {
			routes = e.Value
		}
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%q", fmt.Sprintf("nats://%s-%d.%s:6222", nats.Name, i, nats.Spec.ServiceName)))
	}
	if routes != "["+strings.Join(want, ",")+"]" {
		t.Errorf("NATS_ROUTES %s, want one route per server: [%s]", routes, strings.Join(want, ","))
	}
	if !slices.Equal(nc.Args, []string{"--config", "/etc/nats/nats-cluster.conf"}) {
		t.Errorf("NATS args %q", nc.Args)
	}
	store := false
	for _, c := range nats.Spec.VolumeClaimTemplates {
		for _, m := range nc.VolumeMounts {
			store = store || m.Name == c.Name && m.MountPath == "/data"
		}
	}
	if !store {
		t.Error("NATS has no claim at /data (nats-server.conf's store_dir /data/jetstream)")
	}
	var cm *corev1.ConfigMap
	for _, c := range objectsOf[*corev1.ConfigMap](objs) {
		if strings.HasPrefix(c.Name, "tunnelplane-nats-config") {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no NATS configuration")
	}
	for _, f := range []string{"nats-server.conf", "nats-cluster.conf"} {
		orig, err := os.ReadFile(filepath.Join("..", "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data[f] != string(orig) {
			t.Errorf("%s differs from deploy/nats/%s: copy it again", f, f)
		}
	}
	if !strings.Contains(cm.Data["nats-cluster.conf"], "routes: $NATS_ROUTES") {
		t.Error("nats-cluster.conf takes its routes from elsewhere than NATS_ROUTES")
	}
}
