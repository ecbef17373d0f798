package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunnelplane/tunnelplane/dataplane/demo"
	"github.com/tunnelplane/tunnelplane/eventstore/pgtest"
	"github.com/tunnelplane/tunnelplane/internal/natstest"
)

// readmeBlock is the first ```sh block after the README heading.
func readmeBlock(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pgtest.RepoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatalf("README.md's %q section has no sh block", heading)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README.md's %q sh block does not end", heading)
	}
	return block
}

// The README's "Operating" block runs as printed: a control plane, a node and an agent, apart, on
// this machine's NATS server (2.9.x), then the admin commands. Only its addresses, database and
// cluster name are swapped for the test's; each must still be in the block, so the block and this
// test cannot drift apart.
func TestReadmeOperatingPathRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	out, errOut := runReadmeSystem(t, "## Operating", "prod", "127.0.0.1:8080", "127.0.0.1:8081")
	for _, want := range []string{
		`"models"`,       // the call through the tunnel reached the model server
		" connected ",    // tunnels sessions: the agent's session
		"llm     active", // tokens list, by tunnel name
		`"items"`,        // audit search --json
		"tunnels",        // projections status
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s\nstderr:\n%s", want, out, errOut)
		}
	}
}

// The README's "Running a cluster" block runs as printed: one control plane, two nodes enrolled
// by single-use tokens, an agent that discovers and holds both, a call through each, and the
// second carrying on after the first drained.
func TestReadmeClusterRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system")
	}
	t.Parallel()
	out, errOut := runReadmeSystem(t, "## Running a cluster", "edge",
		"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:9081", "127.0.0.1:9082")
	if n := strings.Count(out, `"models"`); n != 3 {
		t.Errorf("%d calls reached the model server, want 3 (each node, then the second after the drain):\n%s\nstderr:\n%s", n, out, errOut)
	}
	for _, want := range []string{"edge-1", "edge-2", `"agents_disconnected":1,"complete":true`} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s\nstderr:\n%s", want, out, errOut)
		}
	}
	if n := strings.Count(out, " connected "); n != 2 {
		t.Errorf("tunnels sessions lists %d connected sessions, want one on each node:\n%s", n, out)
	}
}

// runReadmeSystem runs a README block that starts the system's processes on this machine's NATS
// server, a database of its own and a model server of the test's, with the block's cluster name
// and listen addresses swapped for the test's (each must be in the block), and returns its
// output. Background jobs end with the block.
func runReadmeSystem(t *testing.T, heading, cluster string, addrs ...string) (stdout, stderr string) {
	t.Helper()
	natsURL, names := natstest.External(t)
	bin := buildBinary(t)
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	model := &http.Server{Handler: demo.Handler(demo.Config{Answer: true, TokenDelay: time.Millisecond})}
	go func() { _ = model.Serve(up) }()
	t.Cleanup(func() { _ = model.Close() })

	script := readmeBlock(t, heading)
	swaps := map[string]string{
		"'postgres://postgres@127.0.0.1:5432/tunnelplane?sslmode=disable'": "'" + pgtest.NewEmptyDatabase(t) + "'",
		"nats://127.0.0.1:4222":          natsURL,
		"TUNNELPLANE_CLUSTER=" + cluster: "TUNNELPLANE_CLUSTER=" + names.Cluster(),
		"http://127.0.0.1:11434":         "http://" + up.Addr().String(),
	}
	for _, a := range addrs {
		swaps[a] = freeAddr(t)
	}
	for from, to := range swaps {
		if !strings.Contains(script, from) {
			t.Fatalf("the README's %q block no longer says %s; update this test with it", heading, from)
		}
		script = strings.ReplaceAll(script, from, to)
	}
	home := t.TempDir()
	env := []string{"HOME=" + home, "PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "TUNNELPLANE_LOG_LEVEL=warn"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TUNNELPLANE_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Background jobs (control, node, connect) end with the script: SIGTERM, as an operator's shell
	// would on logout, and the whole process group if anything lingers.
	sh := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n"+script)
	sh.Env, sh.Dir = env, home
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sh.Cancel = func() error { return syscall.Kill(-sh.Process.Pid, syscall.SIGKILL) }
	var out, errOut bytes.Buffer
	sh.Stdout, sh.Stderr = &out, &errOut
	err = sh.Run()
	_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
	if err != nil {
		t.Fatalf("the README's %q block failed: %v\nstdout:\n%s\nstderr:\n%s", heading, err, out.String(), errOut.String())
	}
	if testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}
