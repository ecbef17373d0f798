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
	natsURL, names := natstest.External(t)
	bin := buildBinary(t)
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	model := &http.Server{Handler: demo.Handler(demo.Config{Answer: true, TokenDelay: time.Millisecond})}
	go func() { _ = model.Serve(up) }()
	t.Cleanup(func() { _ = model.Close() })

	script := readmeBlock(t, "## Operating")
	for from, to := range map[string]string{
		"'postgres://postgres@127.0.0.1:5432/tunnelplane?sslmode=disable'": "'" + pgtest.NewEmptyDatabase(t) + "'",
		"nats://127.0.0.1:4222":    natsURL,
		"TUNNELPLANE_CLUSTER=prod": "TUNNELPLANE_CLUSTER=" + names.Cluster(),
		"127.0.0.1:8080":           freeAddr(t),
		"127.0.0.1:8081":           freeAddr(t),
		"http://127.0.0.1:11434":   "http://" + up.Addr().String(),
	} {
		if !strings.Contains(script, from) {
			t.Fatalf("the README's Operating block no longer says %s; update this test with it", from)
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
	var stdout, stderr bytes.Buffer
	sh.Stdout, sh.Stderr = &stdout, &stderr
	err = sh.Run()
	_ = syscall.Kill(-sh.Process.Pid, syscall.SIGKILL)
	out := stdout.String()
	if err != nil {
		t.Fatalf("the README's Operating block failed: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	if testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
	}
	for _, want := range []string{
		`"models"`,       // the call through the tunnel reached the model server
		" connected ",    // tunnels sessions: the agent's session
		"llm     active", // tokens list, by tunnel name
		`"items"`,        // audit search --json
		"tunnels",        // projections status
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s\nstderr:\n%s", want, out, stderr.String())
		}
	}
}
